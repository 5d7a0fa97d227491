"""Seconds per video, split into encode / denoise / decode, and peak memory, per sampler and step count.

    python benchmarks/pipeline.py                                     # CPU: tiny config (128x128, 8 frames)
    python benchmarks/pipeline.py --config configs/fashionflow.yaml \
        --override data.height=128 data.width=128 model.latent_height=16 model.latent_width=16 \
        --frames 8 --runs ddim:4 dpm:4                                # CPU: the real networks, small frames
    python benchmarks/pipeline.py --config configs/fashionflow.yaml --runs dpm:25 ddim:25 ddim:50 ddpm:1000
                                                                      # CUDA: paper size, 70 x 640 x 512

Weights are random (the timing does not depend on them): the U-Net and adapter come from the
config; the encoders are SD v1-4's VAE and CLIP ViT-B/32 architectures when
model.context_dim is 768 (`--encoders sd`), else the tiny test encoders. On CUDA the pipeline
runs under bf16 autocast (`--precision`), decodes `--decode-chunk-size` frames at a time and
reports torch's peak allocated memory; on CPU the process's peak resident memory.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL  # noqa: E402
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel  # noqa: E402

from benchmarks.common import device_name, synchronize  # noqa: E402
from fashionflow.config import load_config  # noqa: E402
from fashionflow.diffusion import sample_video_latents, switch_sampler  # noqa: E402
from fashionflow.models import build_models  # noqa: E402
from fashionflow.pipeline import FashionFlowPipeline, autocast_dtype  # noqa: E402
from fashionflow.testing import build_tiny_image_encoder, build_tiny_vae  # noqa: E402


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


def one_video(pipe, image, sampler_steps: int, frames: int, chunk: int, precision: str, device, seed: int):
    """(encode, denoise, decode) seconds for one video."""
    generator = [torch.Generator(device=device).manual_seed(seed)]
    (first, context), encode = timed(lambda: pipe.encode_image(pipe.prepare_images(image), generator, precision),
                                     device)
    latents, denoise = timed(lambda: sample_video_latents(
        pipe.unet, pipe.scheduler, context, first, frames, sampler_steps, generator=generator,
        autocast_dtype=autocast_dtype(device, precision)), device)
    _, decode = timed(lambda: pipe.decode(latents, chunk, precision), device)
    return encode, denoise, decode



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="preset (default: configs/tiny.yaml on CPU, configs/fashionflow.yaml on CUDA)")
    parser.add_argument("--override", nargs="*", default=[], help="dotted config overrides")
    parser.add_argument("--runs", nargs="+", help="sampler:steps pairs (default CPU: ddim:4 dpm:4 ddpm:4; "
                                                   "CUDA: dpm:25 ddim:25 ddim:50 ddpm:1000)")
    parser.add_argument("--frames", type=int, help="frames per video (default: sample.num_frames)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode-chunk-size", type=int, default=8)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--encoders", choices=("sd", "tiny"), help="default: sd when model.context_dim == 768")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest conv kernels
    config = args.config or ("configs/fashionflow.yaml" if device.type == "cuda" else "configs/tiny.yaml")
    cfg = load_config(Path(__file__).resolve().parents[1] / config if not Path(config).exists() else config,
                      args.override)
    frames = args.frames or cfg.sample.num_frames
    runs = args.runs or (["dpm:25", "ddim:25", "ddim:50", "ddpm:1000"] if device.type == "cuda"
                         else ["ddim:4", "dpm:4", "ddpm:4"])
    encoders = args.encoders or ("sd" if cfg.model.context_dim == 768 else "tiny")
    pipe = build_pipeline(cfg, encoders).to(device)
    height, width = pipe.image_size
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    base_scheduler = pipe.scheduler

    print(f"device: {device_name(device)}; config {config} {' '.join(args.override)}; encoders {encoders}; "
          f"{frames} frames at {height}x{width}; precision {args.precision}; decode chunk {args.decode_chunk_size}; "
          f"median of {args.repeats} after a warm-up")
    print("| sampler | steps | encode s | denoise s | decode s | total s/video | s/step | peak mem GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        sampler, steps = run.split(":")
        steps = int(steps)
        pipe.scheduler = switch_sampler(base_scheduler, sampler)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        one_video(pipe, image, min(steps, 2), frames, args.decode_chunk_size, args.precision, device, 0)  # warm-up
        times = [one_video(pipe, image, steps, frames, args.decode_chunk_size, args.precision, device, seed)
                 for seed in range(args.repeats)]
        encode, denoise, decode = (statistics.median(column) for column in zip(*times))
        total = encode + denoise + decode
        print(f"| {sampler} | {steps} | {encode:.3f} | {denoise:.3f} | {decode:.3f} | {total:.3f} | "
              f"{denoise / steps:.4f} | {peak_memory_gib(device):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
