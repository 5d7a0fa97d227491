"""Generate FashionFlow videos from photos (or from random frames of test videos, as released).

    python inference.py                                   # demo model on fashion_dataset/demo/
    python inference.py --checkpoint checkpoint/fashionflow --image photo.jpg --sampler dpm --steps 25
    python inference.py --checkpoint checkpoint/fashionflow --dataset fashion_dataset/test --sampler ddpm
    python inference.py --checkpoint runs/pose/checkpoints/step-0010000 --image photo.jpg --motion turn
    python inference.py --checkpoint runs/pose/checkpoints/step-0010000 --image photo.jpg --pose-video driving.mp4
    python inference.py --checkpoint runs/refs/checkpoints/step-0010000 --image front.jpg --reference back.jpg side.jpg

--checkpoint is a pipeline folder (training output, or `python -m fashionflow.assemble`).
Sampler defaults come from the folder's config.yaml (section `sample`) when it has one.
Exit code: 0 when every input produced its videos, 1 when any failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DEMO_CHECKPOINT = "checkpoint/demo"
DEMO_IMAGES = "fashion_dataset/demo"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEMO_CHECKPOINT, help="pipeline folder (default: the demo model)")
    parser.add_argument("--image", nargs="+", default=[], help="image files or folders of images")
    parser.add_argument("--dataset", help="folder of videos; a random frame of each is the conditioning image")
    parser.add_argument("--reference", nargs="+", default=[],
                        help="reference images (other views of the garment: back, side) for every input; "
                             "needs a model trained with model.max_references")
    parser.add_argument("--num-references", type=int, default=0,
                        help="with --dataset: this many references from other frames spread over each video")
    parser.add_argument("--reference-pose", nargs="+", default=[],
                        help="keypoints of each --reference image, in the same order (any --pose format; its first "
                             "frame), for a model with model.reference_pose_routing; default: found with MediaPipe")
    driving = parser.add_argument_group("pose-driven mode (a model trained with model.pose_guider)")
    poses = driving.add_mutually_exclusive_group()
    poses.add_argument("--pose-video", help="driving video: its poses (extracted offline) drive every video")
    poses.add_argument("--pose", help="driving keypoints: .npy float [f, 18, 3] (ours), DWPose .npy (MusePose), "
                                      "OpenPose .json or folder, or a .pose.npz sidecar")
    poses.add_argument("--motion", choices=("turn", "sway", "catwalk"), help="a built-in motion")
    driving.add_argument("--no-align", action="store_true",
                         help="use the driving poses as they are, not fitted to the person in each input")
    parser.add_argument("--num-videos", type=int, default=1, help="videos per conditioning image")
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "dpm"), help="default: config's sample.sampler")
    parser.add_argument("--steps", type=int, help="denoising steps (default: config, or 1000 ddpm / 25 otherwise)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--pose-guidance", type=float,
                        help="guidance towards the driving poses, against the same inputs without them (1 = off; "
                             "each guidance term costs one more U-Net pass per step)")
    parser.add_argument("--reference-guidance", type=float,
                        help="guidance towards the reference views, against the same inputs without them (1 = off)")
    parser.add_argument("--init-strength", type=float,
                        help="1 = start from pure noise (released); below 1, start that far down from frame 0 "
                             "repeated and noised (default: config's sample.init_strength)")
    parser.add_argument("--routed-init-strength", type=float,
                        help="the same when pose routing starts each frame from the view it is posed like "
                             "(pose-driven, with references; default: --init-strength when given, else the "
                             "config's sample.routed_init_strength, else its init_strength)")
    parser.add_argument("--seed", type=int, help="video j of the run uses seed + j")
    parser.add_argument("--frames", type=int,
                        help="frames per video (default: the config's, 70; with driving poses, as many as they have)")
    parser.add_argument("--fps", type=float, help="frame rate of the mp4 (default 25)")
    parser.add_argument("--decode-chunk-size", type=int, help="frames decoded by the VAE at once (memory)")
    parser.add_argument("--resize", choices=("stretch", "crop", "pad"), default="stretch",
                        help="other aspect ratios: stretch (released), centre-crop, or pad with white")
    parser.add_argument("--precision", choices=("auto", "fp32", "tf32", "bf16", "fp16"), default="auto",
                        help="auto: bf16 autocast on GPUs with native bf16, else fp16; fp32 on CPU. tf32: fp32 "
                             "with TF32 matmuls (CUDA). The image is always encoded in fp32")
    parser.add_argument("--output-dir", default="result")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same name")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.num_references < 0:
        parser.error("--num-references must be >= 0")
    if args.num_references and not args.dataset:
        parser.error("--num-references takes references from the videos of --dataset; give --reference files "
                     "for --image inputs")
    for name in ("num_videos", "steps", "frames", "decode_chunk_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("init_strength", "routed_init_strength"):
        if getattr(args, name) is not None and not 0 < getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 1]")
    if args.routed_init_strength is not None and not ((args.pose_video or args.pose or args.motion)
                                                      and (args.reference or args.num_references)):
        parser.error("--routed-init-strength needs driving poses (--pose-video, --pose or --motion) and "
                     "references (--reference, or --num-references with --dataset)")
    if args.pose_guidance not in (None, 1.0) and not (args.pose_video or args.pose or args.motion):
        parser.error("--pose-guidance needs driving poses (--pose-video, --pose or --motion)")
    if args.reference_pose and len(args.reference_pose) != len(args.reference):
        parser.error(f"--reference-pose takes one keypoint file per --reference image: {len(args.reference_pose)} "
                     f"for {len(args.reference)}")
    if args.reference_guidance not in (None, 1.0) and not (args.reference or args.num_references):
        parser.error("--reference-guidance needs references (--reference, or --num-references with --dataset)")
    return args


def load_driving_poses(args):
    """(keypoints [f, 18, 3], width / height of their frames or None, a description) of --pose-video,
    --pose or --motion, or (None, None, None); ValueError / OSError with one line when unusable."""
    from fashionflow.pose import MOTION_ASPECT, extract_keypoints, load_keypoints, motion_keypoints

    if args.motion:
        keypoints = motion_keypoints(args.motion, num_frames=args.frames)
        return keypoints, MOTION_ASPECT, f"motion {args.motion}"
    if args.pose:
        return load_keypoints(args.pose), None, args.pose
    if args.pose_video:
        from fashionflow.video_io import read_video

        frames, _ = read_video(args.pose_video)
        return extract_keypoints(frames), frames.shape[2] / frames.shape[1], args.pose_video
    return None, None, None


def load_reference_poses(paths) -> tuple:
    """The first pose [18, 3] of each --reference-pose file (any format `load_keypoints` reads)."""
    if not paths:
        return ()
    from fashionflow.pose import load_keypoints

    return tuple(load_keypoints(path)[0] for path in paths)


def settings_from(args, cfg, pipe):
    """CLI values, else the checkpoint's config.yaml `sample` section, else the released defaults."""
    from fashionflow.config import routed_init_strength
    from fashionflow.diffusion import default_steps
    from fashionflow.generate import Settings

    sample = cfg.sample if cfg is not None else None
    pick = lambda value, key, fallback: value if value is not None else (getattr(sample, key) if sample else fallback)
    same_sampler = sample is not None and (args.sampler is None or args.sampler == sample.sampler)
    steps = args.steps or (sample.num_inference_steps if same_sampler else default_steps(pipe.scheduler))
    num_frames = args.frames if args.poses is not None else pick(args.frames, "num_frames", 70)  # None: follow poses
    return Settings(num_videos=args.num_videos, num_frames=num_frames, steps=steps,
                    guidance=pick(args.guidance, "guidance_scale", 1.0),
                    pose_guidance=pick(args.pose_guidance, "pose_guidance_scale", 1.0),  # generate_all: only with poses
                    reference_guidance=pick(args.reference_guidance, "reference_guidance_scale", 1.0),  # and references
                    init_strength=pick(args.init_strength, "init_strength", 1.0),
                    routed_init_strength=routed_init_strength(args.routed_init_strength, args.init_strength, sample),
                    seed=pick(args.seed, "seed", 0),
                    fps=pick(args.fps, "fps", 25.0), decode_chunk_size=pick(args.decode_chunk_size, "decode_chunk_size", 8),
                    resize=args.resize, precision=args.precision, overwrite=args.overwrite,
                    references=tuple(args.reference), num_references=args.num_references,
                    reference_keypoints=getattr(args, "reference_keypoints", ()),
                    poses=args.poses, pose_aspect=args.pose_aspect, align=not args.no_align)


def main(argv=None) -> int:
    args = parse_args(argv)
    from fashionflow.config import ConfigError
    from fashionflow.encoders import MissingWeightsError
    from fashionflow.generate import collect_sources, generate_all, quiet_libraries
    from fashionflow.pipeline import load_pipeline

    quiet_libraries()
    checkpoint = Path(args.checkpoint)
    is_demo = checkpoint.resolve() == Path(DEMO_CHECKPOINT).resolve()
    if not checkpoint.is_dir():
        hint = ("build the demo model first (README, section demo)" if is_demo else
                "give a pipeline folder from training or `python -m fashionflow.assemble`")
        print(f"error: no FashionFlow pipeline at {checkpoint}: {hint}", file=sys.stderr)
        return 1
    from fashionflow.video_io import VideoReadError

    try:
        args.poses, args.pose_aspect, driving = load_driving_poses(args)
    except (ValueError, OSError, ImportError, VideoReadError) as error:  # unreadable, no person, no mediapipe
        print(f"error: driving poses: {error}", file=sys.stderr)
        return 2
    try:
        args.reference_keypoints = load_reference_poses(args.reference_pose)
    except (ValueError, OSError) as error:
        print(f"error: reference poses: {error}", file=sys.stderr)
        return 2
    images = args.image or ([] if args.dataset else [DEMO_IMAGES])
    sources, failures = collect_sources(images, args.dataset)
    if not sources:
        print("error: no inputs to process", file=sys.stderr)
        return 1

    try:
        pipe, cfg = load_pipeline(checkpoint, sampler=args.sampler or cfg_sampler(checkpoint), device=args.device)
    except (FileNotFoundError, MissingWeightsError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    wanted = max(len(args.reference), args.num_references)
    most = pipe.unet.config.get("max_references", 0)
    if wanted > most:
        print(f"error: {wanted} reference image(s) asked for, {checkpoint} takes at most {most} "
              "(model.max_references)", file=sys.stderr)
        return 2
    if args.poses is not None and not pipe.unet.config.get("pose_guider_channels"):
        print(f"error: {checkpoint} has no pose guider (trained with model.pose_guider=false), so it cannot follow "
              f"{driving}; train one with model.pose_guider=true (README, section poses)", file=sys.stderr)
        return 2
    if is_demo:
        print("note: checkpoint/demo is a tiny demo model trained briefly on CPU; its videos will not look real")
    torch.backends.cudnn.benchmark = True  # every video has the same shapes
    settings = settings_from(args, cfg, pipe)
    print(f"{len(sources)} input(s), {settings.num_videos} video(s) each, {type(pipe.scheduler).__name__} "
          f"{settings.steps} steps, {settings.num_frames or len(args.poses)} frames, device {args.device}"
          + (f", driven by {driving} ({len(args.poses)} poses{', aligned' if settings.align else ''})"
             if driving else "") + f"; writing to {args.output_dir}/")
    written, failed = generate_all(pipe, sources, args.output_dir, settings, torch.device(args.device))
    return 1 if failures + failed else 0


def cfg_sampler(checkpoint: Path):
    """The sampler named by the folder's config.yaml (None keeps the saved scheduler)."""
    from fashionflow.config import load_config

    path = checkpoint / "config.yaml"
    return load_config(path).sample.sampler if path.is_file() else None


if __name__ == "__main__":
    sys.exit(main())
