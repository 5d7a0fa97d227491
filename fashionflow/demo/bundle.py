"""Bundle a trained demo run: the pipeline folder `checkpoint/demo` and sample images.

    python -m fashionflow.demo.bundle --run-checkpoint runs/demo/checkpoints/step-0001200 \
        --dataset fashion_dataset/synthetic --output checkpoint/demo --images fashion_dataset/demo

The training checkpoint is already a complete pipeline folder (EMA weights when EMA is on)
plus its training state; the bundle keeps the pipeline only (loaded and saved again through
`fashionflow.pipeline`, so it is known to load) and refuses to write more than `--max-mb`.
The sample images are the first frames of the first held-out (test) clips, as PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fashionflow.synthetic import render_clip


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2 ** 20


def bundle_pipeline(run_checkpoint: Path, output: Path, max_mb: float, preset: Path | None = None,
                    vae: Path | None = None) -> float:
    """Load the checkpoint's pipeline and save it (safetensors + config.yaml) to `output`; returns MB.

    `preset`: take the `sample` section (sampler, steps, frames, fps) and
    `model.reference_pose_routing` from this config file instead of the run's: settings chosen
    after training that do not touch the weights (the routing has none).
    `vae`: a VAE folder to bundle instead of the run's, e.g. a decoder trained later on the same
    latents (`train_vae --decoder-only`, `--widen`); refused unless it encodes as the run's does.
    """
    from fashionflow.config import load_config
    from fashionflow.diffusion import switch_sampler
    from fashionflow.pipeline import load_pipeline, save_pipeline

    pipe, cfg = load_pipeline(run_checkpoint)
    if preset is not None:
        chosen = load_config(preset)
        cfg.sample = chosen.sample
        if pipe.unet.references is not None and pipe.unet.pose_guider is not None:
            cfg.model.reference_pose_routing = chosen.model.reference_pose_routing
            pipe.unet.register_to_config(reference_pose_routing=chosen.model.reference_pose_routing)
        pipe.scheduler = switch_sampler(pipe.scheduler, cfg.sample.sampler, cfg.diffusion.timestep_spacing)
    if vae is not None:
        pipe.register_modules(vae=same_latent_space_vae(pipe, vae))
        cfg.encoders.vae, cfg.encoders.vae_subfolder = str(vae), None
    save_pipeline(pipe, output, cfg)
    size = folder_megabytes(output)
    if size > max_mb:
        raise SystemExit(f"{output} is {size:.1f} MB, more than --max-mb {max_mb}: use a smaller model")
    return size


def same_latent_space_vae(pipe, folder: Path, tolerance: float = 1e-3):
    """The AutoencoderKL in `folder`, checked to give the latents `pipe.vae` gives (the U-Net was
    trained on those): same scaling factor, latent means within `tolerance` on a synthetic frame."""
    import torch
    from diffusers import AutoencoderKL

    from fashionflow.demo.train_vae import to_model_range

    vae = AutoencoderKL.from_pretrained(folder, low_cpu_mem_usage=False).eval()
    if vae.config.scaling_factor != pipe.vae.config.scaling_factor:
        raise SystemExit(f"{folder}: scaling factor {vae.config.scaling_factor}, the run's VAE "
                         f"{pipe.vae.config.scaling_factor}: its latents are not the ones the U-Net was trained on")
    frame = to_model_range(render_clip(0, 1).frames)  # [1, 3, h, w] in [-1, 1]
    with torch.no_grad():
        ours, theirs = (v.encode(frame.to(v.dtype)).latent_dist.mean.float() for v in (vae, pipe.vae))
    difference = (ours - theirs).abs().max().item()
    if difference > tolerance:
        raise SystemExit(f"{folder}: its encoder's latents differ from the run's VAE's by up to {difference:.3g}: "
                         "bundle a VAE trained with --decoder-only from the run's VAE")
    return vae


def write_sample_images(dataset: Path, images: Path, count: int) -> list[Path]:
    """First frames of the first `count` test clips of a synthetic dataset, as PNG files."""
    from fashionflow.video_io import write_image

    manifest = json.loads((dataset / "manifest.json").read_text())
    clips = [c for c in manifest["clips"] if c["split"] == "test"][:count]
    written = []
    for clip in clips:
        frame = render_clip(clip["seed"], 1, manifest["height"], manifest["width"]).frames[0]
        written.append(write_image(images / f"{Path(clip['file']).stem}.png", frame))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-checkpoint", required=True, help="RUN/checkpoints/step-NNNNNNN from train.py")
    parser.add_argument("--dataset", default="fashion_dataset/synthetic")
    parser.add_argument("--output", default="checkpoint/demo")
    parser.add_argument("--images", default="fashion_dataset/demo")
    parser.add_argument("--num-images", type=int, default=3)
    parser.add_argument("--max-mb", type=float, default=25.0)
    parser.add_argument("--config", default="configs/demo.yaml", help="the bundle's sampling settings (section sample)")
    parser.add_argument("--vae", default=None,
                        help="bundle this VAE folder instead of the run's (same encoder: a decoder trained later)")
    args = parser.parse_args(argv)
    size = bundle_pipeline(Path(args.run_checkpoint), Path(args.output), args.max_mb, Path(args.config),
                           Path(args.vae) if args.vae else None)
    print(f"wrote the pipeline to {args.output} ({size:.1f} MB)")
    for path in write_sample_images(Path(args.dataset), Path(args.images), args.num_images):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
