"""Mixed precision on the CPU: precision names, bf16 U-Net and pipeline, TF32 / determinism switches.

bf16 autocast works on CPU, so these run the same autocast paths a GPU runs and catch dtype
errors (a bias in another dtype than the queries, an fp32 tensor meeting bf16 weights) here.
"""

import os

import pytest
import torch

from fashionflow import precision
from fashionflow.config import load_config
from fashionflow.models import build_models
from fashionflow.precision import autocast, autocast_dtype, deterministic, native_bf16, tf32

# relative L2 error of the tiny U-Net's bf16 output against fp32 (measured 0.02-0.037 over 4 seeds)
TINY_BF16_TOLERANCE = 0.08


@pytest.fixture(scope="module")
def tiny_unet():
    from conftest import ROOT

    cfg = load_config(ROOT / "configs/tiny.yaml")
    torch.manual_seed(0)
    unet, _ = build_models(cfg.model)
    generator = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, 4, 4, 16, 16, generator=generator), torch.tensor([10, 900]),
              torch.randn(2, 50, cfg.model.context_dim, generator=generator))
    return cfg, unet.eval(), inputs


@pytest.fixture(autouse=True)
def _one_thread(_few_threads):
    torch.set_num_threads(1)  # two OpenMP threads crawl when another process holds a core


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_auto_precision_asks_the_pipelines_own_gpu_and_ignores_emulated_bf16(monkeypatch):
    capabilities = {0: (8, 0), 1: (7, 0)}  # an A100 as the current device, a V100 beside it
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capabilities[index])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.version, "hip", None)

    def emulated_bf16_counts(*args, **kwargs):
        raise AssertionError("is_bf16_supported() counts emulated bf16; use the compute capability")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulated_bf16_counts)
    assert autocast_dtype(torch.device("cuda", 0)) == torch.bfloat16
    assert autocast_dtype(torch.device("cuda", 1)) == torch.float16  # not the current device's answer
    assert autocast_dtype(torch.device("cuda")) == torch.bfloat16  # no index: the current device
    assert not native_bf16(torch.device("cuda", 1)) and native_bf16(torch.device("cpu"))
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "tf32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16 and autocast_dtype(cpu, "fp16") == torch.float16
    with pytest.raises(ValueError, match="unknown precision 'bf32'"):
        autocast_dtype(cpu, "bf32")


def test_tf32_and_deterministic_switches_are_undone_after_the_block(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    with tf32(True):
        assert flags() == (True, True)
        with tf32(False):
            assert flags() == (False, False)
        assert flags() == (True, True)
    with tf32(None):
        assert flags() == before
    assert flags() == before
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic(True):
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == precision.CUBLAS_DETERMINISTIC_WORKSPACE
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_bf16_unet_on_cpu_autocast_and_bf16_weights(tiny_unet):
    cfg, unet, (x, t, context) = tiny_unet
    with torch.no_grad():
        reference = unet(x, t, context)
        with autocast(x.device, torch.bfloat16):
            mixed = unet(x, t, context)
    assert mixed.dtype == torch.bfloat16 and torch.isfinite(mixed).all()
    assert relative_error(mixed, reference) < TINY_BF16_TOLERANCE

    torch.manual_seed(0)
    cast, _ = build_models(cfg.model)
    cast.load_state_dict(unet.state_dict())
    cast.to(torch.bfloat16)  # weights in bf16, no autocast: every op must take bf16 inputs
    with torch.no_grad():
        pure = cast(x.bfloat16(), t, context.bfloat16())
    assert pure.dtype == torch.bfloat16 and relative_error(pure, reference) < TINY_BF16_TOLERANCE

    unet.train()
    with autocast(x.device, torch.bfloat16):
        loss = unet(x, t, context).float().square().mean()
    loss.backward()
    grads = [p.grad for p in unet.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    unet.zero_grad(set_to_none=True)
    unet.eval()


def test_attention_gets_its_bias_in_the_query_dtype_and_cross_attention_no_mask(tiny_unet, monkeypatch):
    """Self-attention adds the released position bias (an additive mask, so SDPA's flash kernel
    is not eligible there; the memory-efficient one is). Under bf16 the bias must be bf16 too,
    or CUDA's fused kernels refuse it; the cross-attention passes no mask (flash-eligible)."""
    import torch.nn.functional as F

    _, unet, (x, t, context) = tiny_unet
    calls, real = [], F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        calls.append((q.dtype, k.dtype, v.dtype, None if attn_mask is None else attn_mask.dtype))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    with torch.no_grad(), autocast(x.device, torch.bfloat16):
        unet(x, t, context)
    masked = [c for c in calls if c[3] is not None]
    self_attention_blocks = sum(m.attention is not None for m in unet.down_levels) + 1 + sum(
        m.attention is not None for m in unet.up_levels)
    assert len(masked) == 2 * self_attention_blocks  # spatial + temporal per block
    assert len(calls) - len(masked) == 2 * len(unet.down_levels)  # one cross-attention per level
    assert all(c == (torch.bfloat16,) * 4 for c in masked)
    assert all(c[:3] == (torch.bfloat16,) * 3 for c in calls)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from fashionflow.testing import build_tiny_pipeline

    pipe, _ = build_tiny_pipeline(tmp_path_factory.mktemp("bf16"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_in_bf16_on_cpu_keeps_frame_zero_in_fp32(pipe):
    image = torch.rand(3, 96, 80, generator=torch.Generator().manual_seed(0))

    def run(precision_name, output_type="pt"):
        return pipe(image, num_frames=4, num_inference_steps=2, output_type=output_type,
                    generator=[torch.Generator().manual_seed(5)], precision=precision_name).frames

    full, mixed = run("fp32", "latent"), run("bf16", "latent")
    # the frame-0 latent is encoded in fp32 whatever the precision (as released), so it is exact
    assert torch.equal(mixed[:, :, 0], full[:, :, 0])
    first_frame, _ = pipe.encode_image(pipe.prepare_images(image), [torch.Generator().manual_seed(5)])
    assert torch.equal(full[:, :, 0], first_frame) and first_frame.dtype == torch.float32
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    assert 0 < relative_error(mixed[:, :, 1:], full[:, :, 1:]) < TINY_BF16_TOLERANCE  # bf16 was used
    frames = run("bf16")
    assert frames.dtype == torch.float32 and frames.shape == (1, 4, 3, 128, 128)
    assert (frames - run("fp32")).abs().max() < 0.05
