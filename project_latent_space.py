"""Project a folder of videos to VAE latent clips for training (FASHIONFLOW.md, "Data").

    python project_latent_space.py --config configs/fashionflow.yaml \
        --dataset fashion_dataset/train --output-dir fashion_dataset_latents/train
    torchrun --nproc_per_node=8 project_latent_space.py ...      # videos split across ranks

Rerunning the same command skips clips already written with the same config (a killed run
resumes). Exits 1 when any video was skipped (each is named with the reason), 2 when the run
cannot start.
"""

import argparse
import os
import sys
from pathlib import Path

from fashionflow.config import ConfigError, config_hash, config_to_yaml, load_config, save_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/fashionflow.yaml", help="YAML preset (data + encoders sections)")
    parser.add_argument("--dataset", default="fashion_dataset/train", help="folder of videos (mp4, mov, webm, ...)")
    parser.add_argument("--output-dir", default="fashion_dataset_latents/train", help="gets one .safetensors per clip")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per VAE forward")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="encoder compute precision (released: float32)")
    parser.add_argument("--decode-workers", type=int, default=2, help="threads decoding the next videos")
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos (by name)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, then exit")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.num_frames=8")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    from fashionflow import distributed
    from fashionflow.data.projection import ProjectionError, find_videos, run_projection
    from fashionflow.encoders import MissingWeightsError

    try:
        if args.dry_run:
            videos = find_videos(Path(args.dataset), args.limit)
            print(config_to_yaml(cfg), end="")
            print(f"# {len(videos)} videos in {args.dataset} -> {args.output_dir} (config hash {config_hash(cfg)})")
            return 0
        summary = run_projection(cfg, args.dataset, args.output_dir, batch_size=args.batch_size, device=args.device,
                                 dtype=args.dtype, limit=args.limit, decode_workers=args.decode_workers,
                                 show_progress=not args.no_progress)
    except (ProjectionError, MissingWeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", 0)) == 0:
        save_config(cfg, Path(args.output_dir) / "projection_config.yaml")
        print(summary.text(), file=sys.stderr)
    distributed.shutdown()
    return 1 if summary.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
