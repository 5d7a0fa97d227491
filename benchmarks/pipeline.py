"""Seconds per video end to end (image in, uint8 frames out), split into encode / denoise /
decode, with peak memory and the achieved fraction of the GPU's bf16 peak.

    python benchmarks/pipeline.py --tiny                              # seconds, any machine (CI)
    python benchmarks/pipeline.py                                     # CPU: tiny config (128x128, 8 frames)
    python benchmarks/pipeline.py --config configs/fashionflow.yaml \
        --override data.height=128 data.width=128 model.latent_height=16 model.latent_width=16 \
        --frames 8 --runs ddim:4 dpm:4                                # CPU: the real networks, small frames
    python benchmarks/pipeline.py --config configs/fashionflow.yaml --runs dpm:25 ddpm:1000 \
        --frames 70 140 280                                           # CUDA: paper size, 640 x 512

Weights are random (the timing does not depend on them): the U-Net and adapter come from the
config; the encoders are SD v1-4's VAE and CLIP ViT-B/32 architectures when
model.context_dim is 768 (`--encoders sd`), else the tiny test encoders. The pipeline runs
under `--precision` (auto: bf16 autocast on CUDA, fp32 on CPU); the frame-0 encoding is
always fp32. The VAE decoder levers: `--vae-dtype bf16` (weights in bf16 instead of autocast,
which keeps GroupNorm in fp32), `--channels-last`, `--decode-chunk-size` (several values are
swept), `--compile unet vae` (`--compile-mode max-autotune`).

Columns: stage seconds (median of `--repeats` after a warm-up), seconds per denoising step,
peak memory (CUDA: torch's peak allocation for that row; CPU: the process's peak resident
memory so far), and achieved TFLOP/s of the denoising (U-Net) and of the decoding (VAE
decoder) with their fraction of the bf16 peak (`--peak-tflops`, default from the GPU's name).
FLOPs are counted by torch's FlopCounterMode on meta-device copies (FASHIONFLOW.md, "Cost of
one video": 1.62 TFLOP per U-Net call, 3.1 TFLOP per decoded frame at the paper size).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL  # noqa: E402
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel  # noqa: E402

from benchmarks.common import bf16_peak_tflops, count_flops, device_name, synchronize, throughput_cell  # noqa: E402
from fashionflow.config import load_config  # noqa: E402
from fashionflow.diffusion import sample_video_latents, switch_sampler  # noqa: E402
from fashionflow.models import build_models  # noqa: E402
from fashionflow.pipeline import FashionFlowPipeline  # noqa: E402
from fashionflow.precision import PRECISIONS, autocast_dtype, tf32, tf32_for  # noqa: E402
from fashionflow.testing import build_tiny_image_encoder, build_tiny_vae  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = {"config": "configs/tiny.yaml", "runs": ["dpm:2"], "frames": [2, 4], "repeats": 1, "chunks": [1, 8]}


def sd_vae() -> AutoencoderKL:
    """Stable Diffusion v1-4's VAE architecture (its config.json), random weights."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512,
                         scaling_factor=0.18215).eval()


def clip_b32() -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """CLIP ViT-B/32's vision tower (transformers' default CLIPVisionConfig) and its processor."""
    return CLIPVisionModel(CLIPVisionConfig()).eval(), CLIPImageProcessor()


def build_pipeline(cfg, encoders: str) -> FashionFlowPipeline:
    torch.manual_seed(0)
    unet, adapter = build_models(cfg.model)
    if encoders == "sd":
        vae, (image_encoder, processor) = sd_vae(), clip_b32()
    else:
        vae, (image_encoder, processor) = build_tiny_vae(), build_tiny_image_encoder(cfg.model.context_dim)
    pipe = FashionFlowPipeline.from_parts(cfg, unet, adapter, vae, image_encoder, processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def one_video(pipe, image, steps: int, frames: int, chunk: int, precision: str, device, seed: int):
    """(encode, denoise, decode) seconds for one video: the image in, uint8 frames on the host out."""
    generator = [torch.Generator(device=device).manual_seed(seed)]
    (first, context), encode = timed(lambda: pipe.encode_image(pipe.prepare_images(image), generator), device)

    def denoise():
        with tf32(tf32_for(precision)):
            return sample_video_latents(pipe.unet, pipe.scheduler, context, first, frames, steps, generator=generator,
                                        autocast_dtype=autocast_dtype(device, precision))

    latents, denoise_s = timed(denoise, device)

    def decode():  # as FashionFlowPipeline.__call__ with output_type="np"
        video = pipe.decode(latents, chunk, precision)
        return (video * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()

    _, decode_s = timed(decode, device)
    return encode, denoise_s, decode_s


def stage_flops(pipe, frames: int) -> tuple[int, int]:
    """(FLOPs of one U-Net call on a [1, c, frames, h, w] video, FLOPs of decoding one frame)."""
    unet, vae = pipe.unet, pipe.vae
    c, h, w = unet.config.in_channels, pipe.adapter.config.latent_height, pipe.adapter.config.latent_width
    meta = dict(device="meta")
    unet_flops = count_flops(lambda: type(unet).from_config(unet.config), lambda m: m(
        torch.randn(1, c, frames, h, w, **meta), torch.ones(1, **meta), torch.randn(1, 50, unet.config.context_dim,
                                                                                     **meta)))
    decode_flops = count_flops(lambda: AutoencoderKL.from_config(vae.config),
                               lambda m: m.decode(torch.randn(1, vae.config.latent_channels, h, w, **meta)))
    return unet_flops, decode_flops


def prepare(pipe, args, device) -> None:
    """The decoder levers and torch.compile, applied once to the pipeline."""
    if args.vae_dtype == "bf16":
        pipe.vae.to(dtype=torch.bfloat16)
    if args.channels_last:
        pipe.vae.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.compile_models(args.compile, mode=args.compile_mode, backend=args.compile_backend)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run of every code path (CI)")
    parser.add_argument("--config", help="preset (default: configs/tiny.yaml on CPU, configs/fashionflow.yaml on CUDA)")
    parser.add_argument("--override", nargs="*", default=[], help="dotted config overrides")
    parser.add_argument("--runs", nargs="+", help="sampler:steps pairs (default CPU: ddim:4 dpm:4 ddpm:4; "
                                                   "CUDA: dpm:25 ddim:25 ddim:50 ddpm:1000)")
    parser.add_argument("--frames", type=int, nargs="+", help="frames per video, several to sweep "
                                                               "(default: sample.num_frames)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode-chunk-size", type=int, nargs="+", default=[8], help="several to sweep")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--vae-dtype", choices=("fp32", "bf16"), default="fp32",
                        help="VAE weights (bf16: encode and decode in bf16 without autocast)")
    parser.add_argument("--channels-last", action="store_true", help="VAE in channels-last memory format")
    parser.add_argument("--compile", nargs="*", choices=("unet", "vae"), help="torch.compile these (vae: decoder)")
    parser.add_argument("--compile-mode", default=None, help="e.g. max-autotune (inductor)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak (default: by GPU name)")
    parser.add_argument("--encoders", choices=("sd", "tiny"), help="default: sd when model.context_dim == 768")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.runs, args.frames = TINY["config"], TINY["runs"], TINY["frames"]
        args.repeats, args.decode_chunk_size = TINY["repeats"], TINY["chunks"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest conv kernels
    config = args.config or ("configs/fashionflow.yaml" if device.type == "cuda" else "configs/tiny.yaml")
    cfg = load_config(ROOT / config if not Path(config).exists() else config, args.override)
    runs = args.runs or (["dpm:25", "ddim:25", "ddim:50", "ddpm:1000"] if device.type == "cuda"
                         else ["ddim:4", "dpm:4", "ddpm:4"])
    encoders = args.encoders or ("sd" if cfg.model.context_dim == 768 else "tiny")
    pipe = build_pipeline(cfg, encoders).to(device)
    prepare(pipe, args, device)
    height, width = pipe.image_size
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    base_scheduler = pipe.scheduler
    peak = bf16_peak_tflops(device, args.peak_tflops)

    print(f"device: {device_name(device)}; torch {torch.__version__}; config {config} {' '.join(args.override)}; "
          f"encoders {encoders}; {height}x{width}; precision {args.precision}; VAE {args.vae_dtype}"
          f"{', channels-last' if args.channels_last else ''}; compile {args.compile or 'no'}"
          f"{f' ({args.compile_mode})' if args.compile_mode else ''}; median of {args.repeats} after a warm-up; "
          f"bf16 peak {f'{peak:.0f} TFLOP/s' if peak else 'unknown'}")
    print("| sampler | steps | frames | decode chunk | encode s | denoise s | decode s | total s/video | s/step | "
          "peak mem GiB | U-Net TFLOP/s (of peak) | VAE decode TFLOP/s (of peak) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for frames in args.frames or [cfg.sample.num_frames]:
        unet_flops, decode_flops = stage_flops(pipe, frames)
        for run, chunk in itertools.product(runs, args.decode_chunk_size):
            sampler, steps = run.split(":")
            steps = int(steps)
            pipe.scheduler = switch_sampler(base_scheduler, sampler)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            one_video(pipe, image, min(steps, 2), frames, chunk, args.precision, device, 0)  # warm-up
            times = [one_video(pipe, image, steps, frames, chunk, args.precision, device, seed)
                     for seed in range(args.repeats)]
            encode, denoise, decode = (statistics.median(column) for column in zip(*times))
            print(f"| {sampler} | {steps} | {frames} | {chunk} | {encode:.3f} | {denoise:.3f} | {decode:.3f} | "
                  f"{encode + denoise + decode:.3f} | {denoise / steps:.4f} | {peak_memory_gib(device):.2f} | "
                  f"{throughput_cell(unet_flops * steps, denoise, peak)} | "
                  f"{throughput_cell(decode_flops * frames, decode, peak)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
