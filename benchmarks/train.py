"""Training throughput: samples/s and peak memory per device for one full optimiser step.

    python benchmarks/train.py --tiny               # seconds, any machine (CI): every code path, tiny sizes
    python benchmarks/train.py                      # CUDA: paper size, every variant; CPU: tiny preset
    python benchmarks/train.py --variants fp32 bf16 bf16+ckpt --steps 10
    python benchmarks/train.py --config configs/tiny.yaml --batch-size 2 --device cpu
    python benchmarks/train.py --config configs/fashionflow.yaml --batch-size 1 --variants released fp32 \
        data.num_frames=8 sample.num_frames=8         # paper widths, fewer frames (CPU)

One step = adapter + U-Net forward, the released loss, backward, gradient clipping and AdamW,
on random inputs of the configured size (FASHIONFLOW.md, "Training": batch 2 per GPU, 70 frames,
80x64 latents); the data pipeline is not included (training reads precomputed latents).
Variants (a `+`/`-` suffix adds to / removes from the base):
  released      the released formulation (benchmarks/released_reference.py), fp32 eager, as the
                released train.py ran (which also re-encoded the image through the VAE and CLIP
                each step; not counted here, so its real throughput was lower)
  released+fp16 the same under fp16 autocast with loss scaling (how the released code sampled)
  fp32, bf16, fp16   ours, fp32 or autocast (fp16 with a GradScaler); autocast works on CPU too
  +tf32         TF32 matmuls and convolutions (CUDA; for fp32)
  +ckpt         gradient checkpointing in the U-Net
  +compile      torch.compile of the U-Net (`--compile-backend`, `--compile-mode`)
  +det          deterministic kernels (`train.deterministic`; run with CUBLAS_WORKSPACE_CONFIG=:4096:8
                set, since cuBLAS reads it when the first variant starts)
  -sdpa         attention restricted to the math kernel (no fused / flash SDPA)
On CUDA variants run one after the other (each peak memory is its own); on CPU they are built
together and timed in turn, so the drifting load of a shared machine hits all alike. The
TFLOP/s column counts one forward with torch's FlopCounterMode (meta device) and the backward
as twice that, and gives its fraction of the GPU's bf16 peak.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import bf16_peak_tflops, count_flops, device_name, synchronize, throughput_cell  # noqa: E402
from fashionflow.config import load_config  # noqa: E402
from fashionflow.diffusion import make_scheduler  # noqa: E402
from fashionflow.models import build_models  # noqa: E402
from fashionflow.precision import autocast, deterministic, tf32  # noqa: E402
from fashionflow.training.loop import DenoisingLoss  # noqa: E402
from fashionflow.training.optim import build_optimizer  # noqa: E402

CUDA_VARIANTS = ["released", "released+fp16", "fp32", "fp32+tf32", "bf16", "bf16-sdpa", "bf16+det", "bf16+ckpt",
                 "bf16+compile", "bf16+ckpt+compile"]
CPU_VARIANTS = ["fp32", "fp32+ckpt"]  # (on CPU the model always uses the math attention kernel)
# --tiny: the tiny preset, 2 frames, every variant of ours (compiled with the cheap "eager" backend)
TINY_VARIANTS = ["fp32", "bf16", "fp16", "fp32+tf32", "bf16+ckpt", "bf16-sdpa", "bf16+compile"]
TINY_OVERRIDES = ["data.num_frames=2", "sample.num_frames=2", "train.batch_size=1"]
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ReleasedUNet(torch.nn.Module):
    """The released network behind our call convention unet(latents, timesteps, context)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, latents, timesteps, context):
        return self.net(latents, context, timesteps.float())


def build_step(variant: str, cfg, device: torch.device, compile_options: dict):
    """A closure running one training step for `variant`, and the batch size it uses."""
    parts = variant.replace("-", "+-").split("+")
    base, options = parts[0], set(parts[1:])
    dtype = DTYPES["fp16" if "fp16" in options else base if base in DTYPES else "fp32"]
    torch.manual_seed(0)
    if base == "released":
        from benchmarks.released_reference import EmbeddingAdapter, SpaceTimeUnet

        unet, adapter = ReleasedUNet(SpaceTimeUnet()), EmbeddingAdapter()
    else:
        unet, adapter = build_models(cfg.model)
        if "ckpt" in options:
            unet.enable_gradient_checkpointing()
    unet.to(device).train()
    adapter.to(device).train()
    model = DenoisingLoss(unet, adapter, make_scheduler(cfg.diffusion), cfg.diffusion,
                          compile_options if "compile" in options else None)
    params = list(unet.parameters()) + list(adapter.parameters())
    optimizer = build_optimizer(params, cfg.train)
    b, m, f = cfg.train.batch_size, cfg.model, cfg.data.num_frames
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(b, m.in_channels, f, m.latent_height, m.latent_width, generator=generator).to(device)
    clip = torch.randn(b, m.num_context_tokens, m.context_dim, generator=generator).to(device)
    image_latent = torch.randn(b, m.in_channels, m.latent_height, m.latent_width, generator=generator).to(device)
    timesteps = torch.randint(0, cfg.diffusion.num_train_timesteps, (b,), generator=generator).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def attention_kernels():
        if "-sdpa" not in options:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])

    def step():
        with tf32(True if "tf32" in options else None), deterministic("det" in options):
            with attention_kernels(), autocast(device, dtype):
                loss = model(latents, clip, image_latent, None, timesteps, noise).float()
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step, b



def run_variant(variant, cfg, device, steps, warmup, compile_options):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step, batch = build_step(variant, cfg, device, compile_options)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return batch / seconds, seconds, peak


def run_interleaved(variants, cfg, device, steps, warmup, compile_options):
    """All variants built at once and timed in turn, so drifting load on a shared CPU hits all alike."""
    built = {variant: build_step(variant, cfg, device, compile_options) for variant in variants}
    for step, _ in built.values():
        for _ in range(warmup):
            step()
    times = {variant: [] for variant in variants}
    for _ in range(steps):
        for variant, (step, _) in built.items():
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    return {variant: (built[variant][1] / statistics.median(t), statistics.median(t), None)
            for variant, t in times.items()}


def step_flops(cfg) -> int:
    """FLOPs of one training step's U-Net: one forward on the batch (FlopCounterMode on the meta
    device) and a backward counted as twice that; the adapter and optimiser are negligible."""
    m, b = cfg.model, cfg.train.batch_size
    meta = dict(device="meta")
    forward = count_flops(lambda: build_models(m)[0], lambda unet: unet(
        torch.randn(b, m.in_channels, cfg.data.num_frames, m.latent_height, m.latent_width, **meta),
        torch.ones(b, **meta), torch.randn(b, m.num_context_tokens, m.context_dim, **meta)))
    return 3 * forward


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny preset, 2 frames, batch 1, 1 step, every variant "
                                                            "of ours (CI)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default=None, help="default: configs/fashionflow.yaml on CUDA, tiny on CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="per device (default: the config's, 2)")
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", default=None, help="e.g. max-autotune (inductor)")
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak (default: by GPU name)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.num_frames=8")
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.variants = str(ROOT / "configs" / "tiny.yaml"), args.variants or TINY_VARIANTS
        args.overrides, args.steps, args.warmup = TINY_OVERRIDES + list(args.overrides), 1, 1
        if args.compile_backend == "inductor":
            args.compile_backend = "eager"  # trace only: inductor's C++ build takes minutes on a CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    config = args.config or str(ROOT / "configs" / ("fashionflow.yaml" if cuda else "tiny.yaml"))
    overrides = list(args.overrides) + ([f"train.batch_size={args.batch_size}"] if args.batch_size else [])
    cfg = load_config(config, overrides)
    variants = args.variants or (CUDA_VARIANTS if cuda else CPU_VARIANTS)
    compile_options = {"backend": args.compile_backend, **({"mode": args.compile_mode} if args.compile_mode else {})}
    flops, peak_tflops = step_flops(cfg), bf16_peak_tflops(device, args.peak_tflops)
    m = cfg.model
    print(f"device: {device_name(device)}; torch {torch.__version__}; config {Path(config).name}: batch "
          f"{cfg.train.batch_size} x [{m.in_channels}, {cfg.data.num_frames}, {m.latent_height}, {m.latent_width}]; "
          f"median of {args.steps} steps after {args.warmup} warm-up; compile {compile_options}; "
          f"{flops / 1e12:.3g} TFLOP per step; bf16 peak {f'{peak_tflops:.0f} TFLOP/s' if peak_tflops else 'unknown'}\n")
    print("| variant | samples/s | s/step | peak memory (GiB) | vs first | TFLOP/s (of peak) |")
    print("| --- | --- | --- | --- | --- | --- |")
    interleaved = run_interleaved(variants, cfg, device, args.steps, args.warmup, compile_options) if not cuda else {}
    first = None
    for variant in variants:
        try:  # CUDA: one variant at a time, so each peak memory is its own
            rate, seconds, peak = (interleaved.get(variant)
                                   or run_variant(variant, cfg, device, args.steps, args.warmup, compile_options))
        except torch.cuda.OutOfMemoryError:
            print(f"| {variant} | out of memory | | | | |", flush=True)
            continue
        first = first or rate
        memory = f"{peak:.1f}" if peak is not None else "-"
        print(f"| {variant} | {rate:.3f} | {seconds:.3f} | {memory} | {rate / first:.2f}x | "
              f"{throughput_cell(flops, seconds, peak_tflops)} |", flush=True)


if __name__ == "__main__":
    main()
