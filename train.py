"""Train FashionFlow on projected latents; one process, or one per GPU under torchrun.

    python train.py --config configs/tiny.yaml --latents LATENTS --output-dir runs/tiny
    torchrun --nproc_per_node=8 train.py --config configs/fashionflow.yaml --latents LATENTS \\
        --output-dir runs/ff train.batch_size=2 train.ema_decay=0.9999
    python train.py --config configs/demo.yaml --latents LATENTS_WITH_REFERENCE_CANDIDATES --output-dir runs/refs \
        --init checkpoint/demo model.max_references=2 train.reference_dropout=0.1   # several reference images

Rerunning the same command resumes from the latest checkpoint in --output-dir. `--dry-run`
prints the resolved config and the data and model sizes, then exits.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML preset, e.g. configs/fashionflow.yaml")
    parser.add_argument("--latents", required=True, help="folder written by project_latent_space.py")
    parser.add_argument("--output-dir", required=True, help="run folder: checkpoints/, samples/, tensorboard/")
    parser.add_argument("--val-latents", default=None,
                        help="projected held-out clips: every train.val_every steps the held-out loss goes to "
                             "validation.jsonl and TensorBoard (val/loss)")
    parser.add_argument("--init", default=None,
                        help="initial weights for a new run: a checkpoint folder with unet/ and adapter/ "
                             "(e.g. the converted released model) or the authors' .pth file")
    parser.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and sizes, then exit")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.max_steps=4")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from fashionflow.config import ConfigError, load_config
    from fashionflow.data import LatentDatasetError
    from fashionflow.distributed import init_distributed, log, shutdown
    from fashionflow.encoders import MissingWeightsError
    from fashionflow.training import NonFiniteLossError, train
    from fashionflow.training.checkpoint import CheckpointError

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ctx = init_distributed(args.device)
    try:
        result = train(cfg, args.latents, args.output_dir, init=args.init, ctx=ctx, dry_run=args.dry_run,
                       val_latents=args.val_latents)
    except (LatentDatasetError, CheckpointError, NonFiniteLossError, MissingWeightsError, ConfigError) as error:
        if ctx.is_main:
            print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutdown()
    if not args.dry_run:
        log(f"done: step {result.final_step}; last checkpoint {result.last_checkpoint}", ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
