"""Train the demo's small AutoencoderKL on synthetic fashion frames (CPU, a few minutes).

The real model uses Stable Diffusion v1-4's VAE, which cannot be downloaded here. The demo
uses a small `diffusers.AutoencoderKL` with the same layout (4 levels -> 8x downsampling,
4 latent channels, a mid-block attention), trained from scratch on frames of synthetic clips
(`fashionflow.synthetic`), so every code path that touches the VAE is the real one.

    # stage 1 (the defaults): the whole VAE on 32 x 32 crops, 40 min on 2 cores
    python -m fashionflow.demo.train_vae --videos fashion_dataset/synthetic_vae --output-dir runs/demo_vae
    # stage 2: the decoder alone on whole 128 x 128 frames (the latents stay), 15 min on 1 core
    python -m fashionflow.demo.train_vae --videos fashion_dataset/synthetic_vae --output-dir checkpoint/demo_encoders/vae \
        --init-from runs/demo_vae --decoder-only --crop 0 --batch-size 8 --steps 2000 --lr 3e-4 \
        --card-share 0.5 --saturated-share 0.5 --threads 1

Loss: L1 + MSE on random crops of the frames and, for a share of each batch, flat colour cards
(every hue, saturation and value; a share of them strongly saturated), plus a small KL term,
as in latent diffusion's first stage without the perceptual and GAN losses. Stage 1: 40000
steps of 16 crops, LR 1e-3 constant and then a cosine decay over the last 40 %; saturated
colours are learned last, after a long plateau (docs/benchmarks.md, "Demo VAE"). Crops are
cheap but GroupNorm normalises a 32 x 32 crop differently from a whole frame: after stage 1
the 24-colour grid comes back 1.8 levels off at 32 px but 11.6 at 128 px. Stage 2 trains the
decoder on whole frames, so the latents (and a U-Net trained on them) stay valid, as
Stability's sd-vae-ft-mse fine-tuned SD's decoder. After training, the scaling factor is set to 1 / std of the latents of the training
frames (how SD's 0.18215 was chosen) and saved in the VAE's config; put the same number in
the preset's `encoders.vae_scaling_factor`. Held-out PSNR is measured on full test frames.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from fashionflow.demo.quality import colour_grid_errors
from fashionflow.demo.widen_vae import widen_vae
from fashionflow.video_io import VideoReadError, list_videos, read_video


def build_demo_vae(block_out_channels=(16, 32, 64, 64), norm_num_groups: int = 16, sample_size: int = 128,
                   seed: int = 0) -> AutoencoderKL:
    """SD's VAE layout at small widths: 4 levels (3 downsamplings: 8x), 4 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
        block_out_channels=tuple(block_out_channels), layers_per_block=1, latent_channels=4,
        norm_num_groups=norm_num_groups, sample_size=sample_size,
    )


def load_frames(folder: Path, every: int = 1) -> np.ndarray:
    """All frames (every `every`-th) of the videos in `folder`: uint8 [n, h, w, 3]. Bad files are skipped."""
    frames = []
    for path in list_videos(folder):
        try:
            video, _ = read_video(path)
        except VideoReadError as error:
            print(f"skipping {error}", file=sys.stderr)
            continue
        frames.append(video[::every])
    if not frames:
        raise SystemExit(f"no readable videos in {folder}")
    return np.concatenate(frames)


def to_model_range(frames: np.ndarray) -> torch.Tensor:
    """uint8 [n, h, w, 3] -> float [n, 3, h, w] in [-1, 1] (the "correct" VAE input range)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def figure_centres(frames: np.ndarray, threshold: int = 40) -> list[np.ndarray]:
    """Per frame, the (y, x) pixels that differ from the top-left corner (the studio wall): int [k, 2]."""
    return [np.argwhere(np.abs(f.astype(np.int16) - f[0, 0].astype(np.int16)).sum(-1) > threshold) for f in frames]


def random_crops(frames: np.ndarray, batch: int, crop: int, rng: np.random.Generator,
                 centres: list[np.ndarray] | None = None, figure_share: float = 0.8) -> torch.Tensor:
    """Random crops (and horizontal flips) of random frames: [b, 3, crop, crop] in [-1, 1].

    With `centres` (from `figure_centres`), a `figure_share` of the crops is centred on a pixel
    of the figure: the wall is easy, the garment's pattern and the face are where detail is.
    """
    n, h, w, _ = frames.shape
    crops = []
    for _ in range(batch):
        i = int(rng.integers(0, n))
        if centres is not None and len(centres[i]) and rng.random() < figure_share:
            cy, cx = centres[i][rng.integers(0, len(centres[i]))]
            y, x = int(np.clip(cy - crop // 2, 0, h - crop)), int(np.clip(cx - crop // 2, 0, w - crop))
        else:
            y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        patch = frames[i, y:y + crop, x:x + crop]
        crops.append(patch[:, ::-1] if rng.random() < 0.5 else patch)
    return to_model_range(np.ascontiguousarray(np.stack(crops)))


def colour_cards(batch: int, size: int, rng: np.random.Generator, saturated_share: float = 0.0) -> torch.Tensor:
    """Flat colour cards: a light studio wall with 1-3 rectangles or ellipses of random colours
    (hue, saturation and value uniform; a `saturated_share` of the shapes take their saturation
    from the top 15 % instead), [b, 3, size, size] in [-1, 1].

    The synthetic garments draw their colours from a part of HSV space; these cards cover all of
    it, so the VAE learns every colour it may be shown (the 24-colour grid, real photos). The
    most saturated colours are the last it learns (docs/benchmarks.md), hence the extra share.
    """
    import cv2

    cards = np.empty((batch, size, size, 3), np.uint8)
    for card in cards:
        card[:] = np.clip(rng.uniform(0.78, 0.98) * 255 + rng.normal(0, 5, 3), 0, 255)
        for _ in range(int(rng.integers(1, 4))):
            saturation = rng.uniform(217, 255) if rng.random() < saturated_share else rng.uniform(0, 255)
            hsv = np.array([[[rng.uniform(0, 180), saturation, rng.uniform(20, 255)]]], np.float32)
            colour = tuple(int(c) for c in cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0])
            y0, x0 = rng.integers(0, size - 8, 2)
            y1, x1 = y0 + rng.integers(8, size - y0 + 1), x0 + rng.integers(8, size - x0 + 1)
            if rng.random() < 0.5:
                cv2.rectangle(card, (int(x0), int(y0)), (int(x1), int(y1)), colour, -1)
            else:
                cv2.ellipse(card, (int(x0 + x1) // 2, int(y0 + y1) // 2), (int(x1 - x0) // 2, int(y1 - y0) // 2),
                            0, 0, 360, colour, -1)
    return to_model_range(cards)


# RGB -> (Cb, Cr) of ITU-R BT.601: the two colour-difference axes, without luminance
CHROMA = torch.tensor([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def vae_loss(vae: AutoencoderKL, images: torch.Tensor, kl_weight: float, generator: torch.Generator,
             chroma_weight: float = 0.0):
    """L1 + MSE reconstruction of a sampled latent, plus kl_weight * KL to N(0, 1) (per element),
    plus chroma_weight * L1 of the error's colour-difference (Cb, Cr) components."""
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    error = reconstruction - images
    l1 = error.abs().mean()
    mse = error.pow(2).mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    chroma = torch.einsum("kc,bchw->bkhw", CHROMA.to(error), error).abs().mean()
    loss = l1 + mse + kl_weight * kl + chroma_weight * chroma
    return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item(), "chroma": chroma.item()}


@torch.no_grad()
def round_trip(vae: AutoencoderKL, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """uint8 [n, h, w, 3] -> decode(mean latent) as uint8 [n, h, w, 3] (the demo pipeline's encode/decode)."""
    outputs = []
    for i in range(0, len(images), batch):
        output = vae.decode(vae.encode(to_model_range(images[i:i + batch])).latent_dist.mean).sample
        outputs.append(((output.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(outputs)


@torch.no_grad()
def latent_std(vae: AutoencoderKL, frames: np.ndarray, batch: int = 32) -> float:
    """Standard deviation of the latent means over frames (unscaled)."""
    means = [vae.encode(to_model_range(frames[i:i + batch])).latent_dist.mean for i in range(0, len(frames), batch)]
    return torch.cat(means).std().item()


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, frames: np.ndarray, batch: int = 32) -> float:
    """Mean PSNR (dB, 8-bit scale) of decode(mean latent) against the frames."""
    values = []
    for i in range(0, len(frames), batch):
        images = to_model_range(frames[i:i + batch])
        output = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((output - images) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        values.append(-10 * torch.log10(mse))
    return torch.cat(values).mean().item()


def lr_factor(step: int, steps: int, decay_fraction: float, warmup: int = 50) -> float:
    """Linear warmup over `warmup` steps, constant, then a cosine to 0 over the last
    `decay_fraction` of the steps (1.0: a cosine over the whole run)."""
    decay_steps = round(decay_fraction * steps)
    decay_start = steps - decay_steps
    factor = min(1.0, (step + 1) / warmup)
    if step >= decay_start and decay_steps:
        factor *= 0.5 * (1 + math.cos(math.pi * (step - decay_start) / decay_steps))
    return factor


def train(args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    videos = Path(args.videos)
    train_frames = load_frames(videos / "train")
    test_frames = load_frames(videos / "test", every=4)
    height, width = train_frames.shape[1:3]
    if args.init_from:  # continue training a saved VAE (its architecture; --channels/--groups are ignored)
        vae = AutoencoderKL.from_pretrained(args.init_from, low_cpu_mem_usage=False)
        if args.widen:  # twice the channels, the same function (Net2Net): training goes on from where it stood
            vae = widen_vae(vae, seed=args.seed)
        vae.train()
    else:
        vae = build_demo_vae(args.channels, args.groups, sample_size=max(height, width), seed=args.seed).train()
    if args.decoder_only:  # the latent space stays as it is (sd-vae-ft-mse's recipe): models trained on it still fit
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
    params = sum(p.numel() for p in vae.parameters())
    print(f"{len(train_frames)} training frames, {len(test_frames)} held-out frames, {height}x{width}; "
          f"VAE with {params / 1e6:.2f}M parameters", flush=True)
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    decay_fraction = 1.0 if args.schedule == "cosine" else args.decay_fraction
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, args.steps, decay_fraction))
    centres = figure_centres(train_frames)
    crop = args.crop or min(height, width)
    num_cards = int(round(args.batch_size * args.card_share))
    started = time.perf_counter()
    for step in range(args.steps):
        images = random_crops(train_frames, args.batch_size - num_cards, crop, rng, centres)
        if num_cards:
            images = torch.cat((images, colour_cards(num_cards, crop, rng, args.saturated_share)))
        loss, parts = vae_loss(vae, images, args.kl_weight, generator, args.chroma_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), args.grad_clip)
        optimizer.step()
        schedule.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  l1 {parts['l1']:.4f}  kl {parts['kl']:.1f}  "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step:
            vae.eval()
            grid = colour_grid_errors(lambda images: round_trip(vae, images), height, width)
            print(f"step {step:5d}  colour grid error {grid.mean():.1f} (worst {grid.max():.1f})  "
                  f"held-out PSNR {reconstruction_psnr(vae, test_frames[::4]):.2f} dB", flush=True)
            vae.train()
    train_seconds = time.perf_counter() - started
    vae.eval()
    if not args.decoder_only:  # a frozen encoder keeps its latents, and so their scale
        std = latent_std(vae, train_frames[:: max(1, len(train_frames) // 256)])
        vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    psnr = reconstruction_psnr(vae, test_frames)
    grid = colour_grid_errors(lambda images: round_trip(vae, images), height, width)
    vae.save_pretrained(args.output_dir)
    report = {"parameters": params, "steps": args.steps, "train_seconds": round(train_seconds, 1),
              "heldout_frames": len(test_frames), "heldout_psnr_db": round(psnr, 2),
              "colour_grid_error_mean": round(float(grid.mean()), 2),
              "colour_grid_error_max": round(float(grid.max()), 2), "recipe": vars(args),
              "scaling_factor": vae.config.scaling_factor, "threads": torch.get_num_threads()}
    (Path(args.output_dir) / "training_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved to {args.output_dir}: held-out PSNR {psnr:.2f} dB, colour grid error {grid.mean():.1f} "
          f"(worst channel {grid.max():.1f}) of 255, scaling factor {vae.config.scaling_factor} "
          f"(set encoders.vae_scaling_factor to it); trained in {train_seconds:.0f} s", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the demo AutoencoderKL on synthetic fashion frames.")
    parser.add_argument("--videos", required=True, help="folder with train/ and test/ videos (python -m fashionflow.synthetic)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--steps", type=int, default=40000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=32, help="training crop size (multiple of 8; 0 = whole frames)")
    parser.add_argument("--card-share", type=float, default=0.25,
                        help="share of each batch that is flat colour cards instead of frame crops")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="LR after 50 warmup steps: constant then a cosine decay over the last --decay-fraction "
                             "of the steps, or a cosine over the whole run")
    parser.add_argument("--decay-fraction", type=float, default=0.4,
                        help="with --schedule constant: the share of the steps, at the end, over which the LR decays to 0")
    parser.add_argument("--saturated-share", type=float, default=0.3,
                        help="share of colour-card shapes drawn with saturation in the top 15 %%")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (0 = off)")
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--chroma-weight", type=float, default=0.0,
                        help="weight of an extra L1 loss on the colour-difference (Cb, Cr) part of the error")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 64], help="widths of the 4 levels")
    parser.add_argument("--groups", type=int, default=4, help="GroupNorm groups (divides every width)")
    parser.add_argument("--init-from", default=None, help="a saved VAE folder to continue training from")
    parser.add_argument("--decoder-only", action="store_true",
                        help="with --init-from: train the decoder only; the encoder, its latents and the scaling factor "
                             "stay, so a U-Net trained on them still fits")
    parser.add_argument("--widen", action="store_true",
                        help="with --init-from and --decoder-only: first widen the VAE to twice its channels, computing "
                             "the same function (fashionflow/demo/widen_vae.py), so its decoder trains on from where it stood")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=0, help="steps between colour-grid / PSNR checks (0 = end only)")
    args = parser.parse_args(argv)
    if args.crop % 8:
        parser.error("--crop must be a multiple of 8")
    if args.decoder_only and not args.init_from:
        parser.error("--decoder-only needs --init-from (the VAE whose encoder to keep)")
    if args.widen and not (args.init_from and args.decoder_only):
        parser.error("--widen needs --init-from and --decoder-only (the encoder, and so the latents, must stay)")
    if not 0 <= args.decay_fraction <= 1:
        parser.error("--decay-fraction must be between 0 and 1")
    if not 0 <= args.card_share <= 1 or not 0 <= args.saturated_share <= 1:
        parser.error("--card-share and --saturated-share must be between 0 and 1")
    torch.set_num_threads(args.threads)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
