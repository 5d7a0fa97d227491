"""Reference attention (models/references.py) against token concatenation, the baseline.

    python benchmarks/references.py                       # step-0 change and U-Net cost vs R (demo config)
    python benchmarks/references.py --train-steps 300     # plus a toy learning comparison (tiny config)

Concatenation appends the R references' adapter tokens to the main context of the existing
image cross-attention (ProFashion's "concatenating references" row); it needs no new weights,
so it runs on the same U-Net. Three measurements:
1. step 0: how far each variant moves a single-image model's output when references are added
   (relative L2 change of the noise prediction; the zero-initialised attention: exactly 0);
2. cost: U-Net forward time for R = 0..3 (both grow linearly in R);
3. toy learning (`--train-steps`): latent clips whose first half shows a "front" colour and
   the second half a "back" colour that frame 0 does not reveal; one reference shows the back. Each variant
   (none, concatenation, attention) trains from the same initial weights with the real
   diffusion loss; reported: the held-out loss on the back frames, where only the reference helps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from einops import rearrange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name  # noqa: E402
from fashionflow.config import load_config  # noqa: E402
from fashionflow.diffusion import make_scheduler, with_first_frame  # noqa: E402
from fashionflow.models import build_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def concat_context(context: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """The baseline: [b, n, d] and [b, r, n, d] -> [b, n + r n, d]."""
    return torch.cat([context, rearrange(references, "b r n d -> b (r n) d")], dim=1)


def predict(unet, variant: str, x, t, context, references):
    if variant == "concat":
        return unet(x, t, concat_context(context, references))
    if variant == "attention":
        return unet(x, t, context, references=references)
    return unet(x, t, context)


@torch.no_grad()
def step0_and_cost(config: str, repeats: int) -> list[str]:
    cfg = load_config(ROOT / config, ["model.max_references=3"])
    m, d = cfg.model, cfg.data
    torch.manual_seed(0)
    unet, _ = build_models(m)
    unet.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, m.in_channels, d.num_frames, m.latent_height, m.latent_width, generator=g)
    t, context = torch.tensor([500]), torch.randn(1, m.num_context_tokens, m.context_dim, generator=g)
    references = torch.randn(1, 3, m.num_context_tokens, m.context_dim, generator=g)
    base = unet(x, t, context)
    lines = ["| R | concatenation: change at step 0 | attention: change at step 0 | concatenation fwd (s) "
             "| attention fwd (s) |", "| --- | --- | --- | --- | --- |"]
    for r in range(4):
        refs = references[:, :r]
        change = {v: float((predict(unet, v, x, t, context, refs) - base).norm() / base.norm())
                  for v in ("concat", "attention")}
        times = {v: [] for v in change}
        for _ in range(repeats):
            for v in times:
                start = time.perf_counter()
                predict(unet, v, x, t, context, refs)
                times[v].append(time.perf_counter() - start)
        lines.append(f"| {r} | {change['concat']:.3f} | {change['attention']:.3f} | "
                     f"{statistics.median(times['concat']):.3f} | {statistics.median(times['attention']):.3f} |")
    extra = sum(p.numel() for p in unet.references.parameters())
    others = sum(p.numel() for p in unet.parameters()) - extra
    lines.append(f"\n{config}: reference attention adds {extra:,} parameters to {others:,}")
    return lines


def toy_batch(generator: torch.Generator, b: int, f: int, c: int, h: int, w: int):
    """Latent clips [b, c, f, h, w]: a shared spatial pattern times a front colour (first half of
    the frames) or a back colour (second half); frame 0 is the front, the back view its back."""
    pattern = 1 + 0.5 * torch.randn(b, 1, 1, h, w, generator=generator)
    front, back = (torch.randn(b, c, 1, 1, 1, generator=generator) for _ in range(2))
    half = torch.arange(f).view(1, 1, f, 1, 1) < f // 2
    video = torch.where(half, front, back) * pattern
    return video, video[:, :, -1]  # the back view: a back-facing frame


def toy_loss(unet, adapter, variant, video, back_view, scheduler, generator, clip_tokens, back_only=False,
             min_timestep=0):
    b, _, f = video.shape[:3]
    context = adapter(clip_tokens.expand(b, -1, -1), video[:, :, 0])
    references = adapter(clip_tokens.expand(b, -1, -1), back_view)[:, None]  # b 1 n d
    t = torch.randint(min_timestep, 1000, (b,), generator=generator)
    noise = torch.randn(video.shape, generator=generator)
    noisy = with_first_frame(scheduler.add_noise(video, noise, t), video[:, :, 0])
    error = (predict(unet, variant, noisy, t, context, references) - noise).square().mean(dim=(1, 3, 4))  # b f
    return error[:, f // 2:].mean() if back_only else error[:, 1:].mean()


def toy_learning(steps: int, batch: int, lr: float, frames: int) -> list[str]:
    cfg = load_config(ROOT / "configs/tiny.yaml", ["model.max_references=1", f"data.num_frames={frames}",
                                                   f"sample.num_frames={frames}"])
    m = cfg.model
    scheduler = make_scheduler(cfg.diffusion)
    shape = (m.in_channels, frames, m.latent_height, m.latent_width)
    clip_tokens = torch.zeros(1, m.num_context_tokens, m.context_dim)  # CLIP sees nothing: the latents carry it
    held_out = [toy_batch(torch.Generator().manual_seed(10_000 + i), batch, shape[1], shape[0], *shape[2:])
                for i in range(8)]
    lines = ["| variant | held-out loss, back frames | same, t >= 500 | held-out loss, frames 1.. | train s/step |",
             "| --- | --- | --- | --- | --- |"]
    for variant in ("none", "concat", "attention"):
        torch.manual_seed(0)
        unet, adapter = build_models(m)
        params = list(unet.parameters()) + list(adapter.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(1)
        start = time.perf_counter()
        for _ in range(steps):
            video, back_view = toy_batch(generator, batch, shape[1], shape[0], *shape[2:])
            loss = toy_loss(unet, adapter, variant, video, back_view, scheduler, generator, clip_tokens)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = (time.perf_counter() - start) / max(steps, 1)
        with torch.no_grad():
            evaluation = torch.Generator().manual_seed(2)
            back = [toy_loss(unet, adapter, variant, v, r, scheduler, evaluation, clip_tokens, True)
                    for v, r in held_out]
            evaluation = torch.Generator().manual_seed(2)
            noisy = [toy_loss(unet, adapter, variant, v, r, scheduler, evaluation, clip_tokens, True, 500)
                     for v, r in held_out]
            evaluation = torch.Generator().manual_seed(2)
            every = [toy_loss(unet, adapter, variant, v, r, scheduler, evaluation, clip_tokens) for v, r in held_out]
        lines.append(f"| {variant} | {torch.stack(back).mean():.4f} | {torch.stack(noisy).mean():.4f} | "
                     f"{torch.stack(every).mean():.4f} | {seconds:.2f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml", help="model for the step-0 and cost table")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=0, help="toy learning comparison (0: skip)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--frames", type=int, default=2, help="toy clip length (first half front, second half back)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {device_name(torch.device('cpu'))}; torch {torch.__version__}\n")
    print("\n".join(step0_and_cost(args.config, args.repeats)), flush=True)
    if args.train_steps:
        print(f"\ntoy learning: {args.train_steps} steps, batch {args.batch}, AdamW lr {args.lr}, tiny config, "
              f"{args.frames} frames")
        toy_learning(args.train_steps, args.batch, args.lr, args.frames)


if __name__ == "__main__":
    main()
