"""Held-out denoising loss: the training objective on clips the model does not train on.

Every evaluation draws the same inputs (VAE sample of the conditioning image, references, noise)
per clip from a fixed seed and scores them at the same few timesteps, so two checkpoints, or two
runs, are compared on identical draws. Conditions are kept (no condition or pose dropout);
reference dropout stays as in training. A training loss far below this one means the model is
memorising its clips (docs/benchmarks.md, "Held-out loss").

    python -m fashionflow.training.validation --config configs/demo.yaml --checkpoint checkpoint/demo \\
        --latents HELD_OUT_LATENTS [--clips 40] [--timesteps 5] [overrides]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Sequence

import torch

VALIDATION_FILE = "validation.jsonl"  # in the run folder, one record per evaluation
VALIDATION_SEED = 20261122  # fixed: draws do not depend on train.seed, so runs compare


@dataclass
class ValidationLoss:
    loss: float  # mean over clips and timesteps
    per_timestep: dict[int, float]  # timestep -> mean over clips
    clips: int

    def record(self, step: int) -> dict:
        """A `validation.jsonl` line."""
        return {"step": step, "loss": self.loss, "clips": self.clips,
                **{f"loss_t{t}": value for t, value in self.per_timestep.items()}}


def validation_timesteps(num_train_timesteps: int, count: int) -> list[int]:
    """`count` timesteps at the centres of equal bins of [0, T): 5 of 1000 -> 100, 300, 500, 700, 900."""
    if count < 1:
        raise ValueError(f"train.val_timesteps must be at least 1, got {count}")
    return [int((i + 0.5) * num_train_timesteps / count) for i in range(count)]


@torch.no_grad()
def validation_loss(model, dataset, cfg, device: torch.device, clips: int | None = None,
                    timesteps: Sequence[int] | None = None) -> ValidationLoss:
    """Mean `DenoisingLoss` of `model` over the first `clips` clips of `dataset` (all when None) at
    `timesteps` (default: `train.val_timesteps` spread over the schedule), one clip at a time.

    The model's train/eval mode and the process RNG are left as they were."""
    from fashionflow.training.loop import draw_pose_inputs, draw_step_inputs

    timesteps = list(timesteps or validation_timesteps(cfg.diffusion.num_train_timesteps, cfg.train.val_timesteps))
    count = len(dataset) if clips is None else min(clips, len(dataset))
    if count == 0:
        raise ValueError("validation needs at least one clip")
    totals = {t: 0.0 for t in timesteps}
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for index in range(count):
                batch = torch.utils.data.default_collate([dataset[index]])
                generator = torch.Generator(device).manual_seed(VALIDATION_SEED + index)
                inputs = list(draw_step_inputs(batch, cfg, generator, device))
                conditions = draw_pose_inputs(batch, cfg, generator, device)
                inputs[3] = None  # keep the image condition (no classifier-free dropout)
                if "pose_mask" in conditions:
                    conditions["pose_mask"] = torch.ones_like(conditions["pose_mask"])
                for t in timesteps:
                    inputs[4] = torch.full_like(inputs[4], t)
                    totals[t] += model(*inputs, **conditions).float().item()
    finally:
        model.train(was_training)
    per_timestep = {t: total / count for t, total in totals.items()}
    return ValidationLoss(sum(per_timestep.values()) / len(per_timestep), per_timestep, count)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the preset the checkpoint was trained with")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint or pipeline folder with unet/ and adapter/")
    parser.add_argument("--latents", required=True, help="projected held-out clips (project_latent_space.py)")
    parser.add_argument("--clips", type=int, default=None, help="the first N clips (default: all)")
    parser.add_argument("--timesteps", type=int, default=None, help="how many timesteps (default: train.val_timesteps)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args(argv)

    from fashionflow.config import ConfigError, load_config
    from fashionflow.data import LatentClipDataset, LatentDatasetError
    from fashionflow.diffusion import make_scheduler
    from fashionflow.models import build_models
    from fashionflow.training.checkpoint import CheckpointError
    from fashionflow.training.loop import DenoisingLoss, load_initial_weights
    from fashionflow.utils import atomic_write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.timesteps is not None:
            cfg.train.val_timesteps = args.timesteps
        dataset = LatentClipDataset(args.latents, cfg)
        unet, adapter = build_models(cfg.model)
        load_initial_weights(args.checkpoint, unet, adapter, cfg)
    except (ConfigError, LatentDatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = DenoisingLoss(unet, adapter, make_scheduler(cfg.diffusion), cfg.diffusion)
    result = validation_loss(model, dataset, cfg, torch.device("cpu"), clips=args.clips)
    print(f"held-out loss {result.loss:.4f} over {result.clips} clips; per timestep: "
          + "  ".join(f"t={t}: {v:.4f}" for t, v in result.per_timestep.items()))
    if args.output:
        summary = {"checkpoint": args.checkpoint, "latents": args.latents, **result.record(step=0)}
        summary.pop("step")
        atomic_write_text(args.output, json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
