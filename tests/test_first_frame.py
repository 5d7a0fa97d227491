"""First-frame attention (models/first_frame.py): the base model at step 0, what a frame reads
(only itself and frame 0), initialising from a checkpoint without it, the released preset
untouched, training only the new module, and a pipeline saved and loaded with it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fashionflow.config import load_config
from fashionflow.models import build_models, load_base_weights
from fashionflow.models.first_frame import FirstFrameAttention
from fashionflow.training import loop

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(*overrides):
    return load_config(ROOT / "configs/tiny.yaml", list(overrides))


def randomise_outputs(unet, std=0.2):
    """Give the zero-initialised output projections weights, as training would."""
    with torch.no_grad():
        for block in (*unet.first_frame.down, *unet.first_frame.up):
            torch.nn.init.normal_(block.to_out.weight, std=std)
    return unet


@pytest.fixture(scope="module")
def models():
    """(base U-Net, the same U-Net with first-frame attention, fresh)."""
    torch.manual_seed(0)
    base, _ = build_models(tiny_cfg().model)
    torch.manual_seed(0)
    fresh, _ = build_models(tiny_cfg("model.first_frame_attention=true").model)
    return base.eval(), fresh.eval()


def inputs(b=2, frames=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, frames, 16, 16, generator=g), torch.tensor([10, 700][:b]), torch.randn(b, 50, 32, generator=g)


@torch.no_grad()
def test_a_fresh_module_is_exactly_the_base_model_and_a_trained_one_is_not(models):
    base, fresh = models
    x, t, context = inputs()
    assert base.first_frame is None and fresh.first_frame is not None
    assert len(fresh.first_frame.down) == len(fresh.down_levels) and len(fresh.first_frame.up) == len(fresh.up_levels)
    expected = base(x, t, context)
    assert torch.equal(fresh(x, t, context), expected)  # zero-initialised output: the step-0 model
    trained = randomise_outputs(build_models(tiny_cfg("model.first_frame_attention=true").model)[0])
    trained.load_state_dict({**trained.state_dict(), **base.state_dict()})  # base weights, random new outputs
    out = trained.eval()(x, t, context)
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.allclose(out, expected)


@torch.no_grad()
def test_each_frame_reads_only_itself_and_frame_0():
    torch.manual_seed(0)
    block = FirstFrameAttention(dim=16, heads=2)
    torch.nn.init.normal_(block.to_out.weight, std=0.5)
    x = torch.randn(1, 16, 5, 4, 6)  # b c f h w
    out = block(x)
    changed = x.clone()
    changed[:, :, 2] += torch.randn_like(changed[:, :, 2])  # frame 2 only
    moved = block(changed)
    for frame in (1, 3, 4):
        torch.testing.assert_close(moved[:, :, frame], out[:, :, frame])  # other frames read frame 0, not 2
    assert not torch.allclose(moved[:, :, 2], out[:, :, 2])
    changed = x.clone()
    changed[:, :, 0] += 1.0 + torch.randn_like(changed[:, :, 0])  # frame 0: every frame reads it
    moved = block(changed)
    assert all(not torch.allclose(moved[:, :, frame], out[:, :, frame]) for frame in range(5))
    # frames are independent queries: a video's frame t equals the 2-frame video (frame 0, frame t)
    pair = block(x[:, :, [0, 3]])
    torch.testing.assert_close(pair[:, :, 1], out[:, :, 3], rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_locality_bias_reads_frame_0_at_the_same_place():
    block = FirstFrameAttention(dim=8, heads=2)
    rates = torch.nn.functional.softplus(block.locality)
    torch.testing.assert_close(rates, torch.tensor([1.0, 0.25]))  # ALiBi-like slopes at init
    bias = block.locality_bias(3, 4)  # heads (h w) (h w)
    assert bias.shape == (2, 12, 12) and torch.equal(bias.diagonal(dim1=1, dim2=2), torch.zeros(2, 12))
    assert bias[0, 0, 5] == pytest.approx(-2.0) and bias[1, 0, 11] == pytest.approx(-0.25 * (2 ** 2 + 3 ** 2))
    # no content term (q = 0), a steep locality, identity values and output: each frame gets frame 0's
    # normalised features at its own place
    block.to_q.weight.zero_()
    block.to_kv.weight[8:] = torch.eye(8)
    block.to_out.weight.copy_(torch.eye(8))
    block.to_out.bias.zero_()
    block.locality.fill_(12.0)
    x = torch.randn(1, 8, 3, 3, 4)  # b c f h w
    delta = block(x) - x
    frame0 = block.norm(x[:, :, 0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # b c h w
    for frame in range(3):
        torch.testing.assert_close(delta[:, :, frame], frame0, atol=1e-3, rtol=0)


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        FirstFrameAttention(dim=16, heads=3)


def test_init_from_a_checkpoint_without_it_is_that_checkpoint_at_step_0(models, tmp_path):
    base, _ = models
    _, adapter = build_models(tiny_cfg().model)
    base.save_pretrained(tmp_path / "unet")
    adapter.save_pretrained(tmp_path / "adapter")
    cfg = tiny_cfg("model.first_frame_attention=true")
    torch.manual_seed(1)  # other random weights than the checkpoint
    unet, new_adapter = build_models(cfg.model)
    missing = loop.load_initial_weights(tmp_path, unet, new_adapter, cfg)
    assert missing and all(k.startswith("first_frame.") for k in missing)
    x, t, context = inputs()
    with torch.no_grad():
        assert torch.equal(unet.eval()(x, t, context), base(x, t, context))
    state = base.state_dict()
    state.pop("conv_in.spatial.weight")
    with pytest.raises(RuntimeError, match="conv_in.spatial.weight"):  # only the new modules may be missing
        load_base_weights(unet, state)


def test_released_preset_does_not_build_it():
    cfg = load_config(ROOT / "configs/fashionflow.yaml")
    assert cfg.model.first_frame_attention is False
    assert "first_frame_attention" in cfg.model.__dataclass_fields__


def test_new_conditions_trains_only_the_module_and_gradients_reach_it():
    cfg = tiny_cfg("model.first_frame_attention=true", "train.trainable=new_conditions")
    unet, adapter = build_models(cfg.model)
    loop.freeze_base(unet, adapter)
    trainable = {name for name, p in unet.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("first_frame.") for name in trainable)
    assert not any(p.requires_grad for p in adapter.parameters())
    x, t, context = inputs(b=1)
    unet(x, t[:1], context).square().mean().backward()
    grads = {name: p.grad for name, p in unet.named_parameters() if p.requires_grad}
    assert all(grads[name] is not None for name in grads)
    assert grads["first_frame.down.0.to_out.weight"].abs().sum() > 0  # the zero output still learns


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    unet = randomise_outputs(build_models(tiny_cfg("model.first_frame_attention=true").model)[0])
    x, t, context = inputs(b=1, frames=2)
    grads = []
    for checkpointing in (False, True):
        unet.enable_gradient_checkpointing() if checkpointing else unet.disable_gradient_checkpointing()
        unet.zero_grad()
        unet(x, t[:1], context).square().mean().backward()
        grads.append([p.grad.clone() for p in unet.first_frame.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_pipeline_round_trip_keeps_the_module(tmp_path):
    from fashionflow.pipeline import load_pipeline, save_pipeline
    from fashionflow.testing import build_tiny_pipeline

    pipe, cfg = build_tiny_pipeline(tmp_path / "encoders", tiny_cfg("model.first_frame_attention=true"))
    randomise_outputs(pipe.unet)
    save_pipeline(pipe, tmp_path / "pipe", cfg)
    loaded, loaded_cfg = load_pipeline(tmp_path / "pipe")
    assert loaded_cfg.model.first_frame_attention and loaded.unet.first_frame is not None
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    frames = [p(image, num_frames=4, num_inference_steps=2, generator=[torch.Generator().manual_seed(0)],
                output_type="np").frames[0] for p in (pipe, loaded)]
    assert frames[0].shape[0] == 4
    for name, value in pipe.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], value), name
    assert np.abs(frames[0].astype(int) - frames[1]).max() <= 1  # rounding: the same holds without the module
