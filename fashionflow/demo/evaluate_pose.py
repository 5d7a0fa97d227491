"""Measure the pose-driven mode on held-out synthetic clips: pose-driven vs pose-free vs repeat-input.

    python -m fashionflow.demo.evaluate_pose --checkpoint checkpoint/demo \
        --dataset fashion_dataset/synthetic --output benchmarks/results/pose_quality.json --strip docs/pose_frames.png

For each test clip of a synthetic dataset (the manifest gives the clip seeds, so the ground
truth and its true keypoints are re-rendered exactly): frame 0 is the conditioning image and
the model makes a video of the clip's length twice from the same seed, once driven by the
clip's own keypoints (already in the frame's coordinates: `align=False`) and once without
poses (the same model, spontaneous motion; a model trained with `train.pose_dropout` does
both). The baseline repeats the input frame. Against the ground truth, frames 1.. (frame 0 is
the input in all three): SSIM, PSNR (`fashionflow.metrics.paired`) and, given the AlexNet and
lpips weights (`--lpips-backbone`, docs/evaluation.md), LPIPS. Target (issue 13): pose-driven
beats both, by at least 2 dB PSNR over repeat-input. Diagnostics beside them: the truth through
the pipeline's VAE (the best any video from this VAE can score), the input frame repeated and
passed through the VAE (repeat-input as a decoded video would show it), and the mean PSNR of
each frame index (`psnr_by_frame`: where along the clip a method gains or loses).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fashionflow.demo import quality
from fashionflow.demo.evaluate_demo import (evaluation_parser, load_for_evaluation, lpips_from_args,
                                             save_results, summarise, test_clips, vae_roundtrip)
from fashionflow.metrics.paired import psnr_per_frame, ssim_per_frame
from fashionflow.synthetic import render_clip

METHODS = ("pose_driven", "pose_free", "repeat_input")
# Diagnostics, scored like the methods: the truth and the repeated input frame through the VAE.
# Every generated video is decoded by the VAE while repeat-input is not, so on frames where the
# figure stands still repeat-input can score above what any decoded video can.
THROUGH_VAE = ("truth_through_vae", "repeat_input_through_vae")
LABELS = {"pose_driven": "pose-driven", "pose_free": "pose-free", "repeat_input": "repeat input",
          "truth_through_vae": "truth through the VAE", "repeat_input_through_vae": "repeat input through the VAE"}


def lpips_per_frame(model, video: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """LPIPS of each frame pair (uint8 [f, h, w, 3] twice) -> [f]."""
    to_input = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        return model(to_input(video), to_input(truth)).numpy()


def clip_scores(video: np.ndarray, truth: np.ndarray, lpips=None) -> dict:
    """Frames 1.. of a uint8 video [f, h, w, 3] against the ground truth (frame 0 is the input):
    mean SSIM, PSNR (and LPIPS), the PSNR of each frame `psnr_by_frame` [f - 1], and
    `psnr_pooled`, the PSNR of the clip's mean squared error (frames 1.. as one signal: a frame
    matched almost exactly cannot make up for a badly missed one, as it can in the mean of dBs),
    and the same split into the truth's figure (`psnr_figure`: pixels `quality.figure_mask` finds in
    each truth frame) and the rest (`psnr_background`): where a method loses."""
    psnr = psnr_per_frame(video[1:], truth[1:])
    figure = np.stack([quality.figure_mask(frame) for frame in truth[1:]])  # f-1 h w: the truth's figure
    scores = {"ssim": float(ssim_per_frame(video[1:], truth[1:]).mean()), "psnr": float(psnr.mean()),
              "psnr_pooled": quality.psnr(video[1:], truth[1:]),
              "psnr_figure": quality.masked_psnr(video[1:], truth[1:], figure),
              "psnr_background": quality.masked_psnr(video[1:], truth[1:], ~figure), "psnr_by_frame": psnr}
    if lpips is not None:
        scores["lpips"] = float(lpips_per_frame(lpips, video[1:], truth[1:]).mean())
    return scores


def evaluate(pipe, clips: list[dict], num_frames: int, steps: int | None, seed: int, init_strength: float = 1.0,
             lpips=None, log=print, pose_guidance: float = 1.0, through_vae=None) -> dict:
    """Every clip's first frame through the pipeline with and without its poses; means per method.
    `pose_guidance`: the pose-driven videos' pose guidance scale (`fashionflow.diffusion.Guidance`).
    `through_vae(frames)`: the pipeline's VAE round trip; the truth and the repeated input through it are
    scored as `THROUGH_VAE` (None: skipped)."""
    height, width = pipe.image_size
    rows = {name: [] for name in (*METHODS, *THROUGH_VAE)}
    examples = []
    started = time.perf_counter()
    for index, clip in enumerate(clips):
        truth_clip = render_clip(clip["seed"], num_frames, height, width)
        truth = truth_clip.frames
        made = {"repeat_input": np.repeat(truth[:1], num_frames, axis=0)}
        for name, poses in (("pose_driven", truth_clip.keypoints), ("pose_free", None)):
            generator = torch.Generator(device="cpu").manual_seed(seed + index)  # the same noise for both
            made[name] = pipe(truth[0], num_frames=num_frames, num_inference_steps=steps, generator=[generator],
                              output_type="np", init_strength=init_strength, poses=poses, align=False,
                              pose_guidance_scale=pose_guidance if poses is not None else 1.0).frames[0]
        if through_vae is not None:
            decoded = through_vae(truth)  # frame 0 stays the input in all of them
            made["truth_through_vae"] = np.concatenate([truth[:1], decoded[1:]])
            made["repeat_input_through_vae"] = np.concatenate([truth[:1], np.repeat(decoded[:1], num_frames - 1, 0)])
        for name in made:
            rows[name].append(clip_scores(made[name], truth, lpips))
        examples.append((truth_clip.keypoints, truth, made["pose_driven"], made["pose_free"]))
        log(f"{clip['file']}: PSNR pose-driven {rows['pose_driven'][-1]['psnr']:.1f}, pose-free "
            f"{rows['pose_free'][-1]['psnr']:.1f}, repeat-input {rows['repeat_input'][-1]['psnr']:.1f} dB")
    means = {name: summarise(rows[name]) for name in rows if rows[name]}
    driven = means["pose_driven"]
    verdict = {"beats_pose_free_psnr": driven["psnr"] > means["pose_free"]["psnr"],
               "beats_repeat_input_psnr_by_2db": driven["psnr"] >= means["repeat_input"]["psnr"] + 2.0}
    return {"clips": len(clips), "seconds": round(time.perf_counter() - started, 1), **means, "verdict": verdict,
            "examples": examples}


def scored(result: dict) -> list[str]:
    """The methods and diagnostics a result holds, in table order."""
    return [m for m in (*METHODS, *THROUGH_VAE) if m in result]


def markdown_table(result: dict) -> str:
    names = {"ssim": "SSIM vs ground truth, frames 1.. (higher better)",
             "psnr": "PSNR vs ground truth, frames 1.. (dB, higher better)",
             "psnr_pooled": "PSNR of the clip's mean squared error, frames 1.. (dB)",
             "psnr_figure": "the same on the truth's figure only (dB)",
             "psnr_background": "the same on the background only (dB)",
             "lpips": "LPIPS vs ground truth, frames 1.. (lower better)"}
    columns = scored(result)
    lines = ["| measure | " + " | ".join(LABELS[m] for m in columns) + " |",
             "| --- " * (len(columns) + 1) + "|"]
    for key in names:
        if key in result["pose_driven"]:
            lines.append(f"| {names[key]} | " + " | ".join(f"{result[m][key]:.1f}" if key.startswith("psnr") else
                                                          f"{result[m][key]:.3f}" for m in columns) + " |")
    return "\n".join(lines)


def frame_table(result: dict, every: int = 4) -> str:
    """PSNR by frame index (every `every`-th frame), one row per method: where along the clip each gains."""
    frames = range(0, len(result["pose_driven"]["psnr_by_frame"]), every)
    lines = ["| PSNR (dB) at frame | " + " | ".join(str(i + 1) for i in frames) + " |", "| --- " * (len(frames) + 1) + "|"]
    for m in scored(result):
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{result[m]['psnr_by_frame'][i]:.1f}" for i in frames) + " |")
    return "\n".join(lines)


def example_strip(examples, frames: int = 8) -> np.ndarray:
    """Per clip, rows of: driving skeletons, pose-driven frames, pose-free frames, ground truth."""
    from fashionflow.pose.render import render_poses
    from fashionflow.video_io import contact_sheet

    rows = []
    for keypoints, truth, driven, free in examples:
        skeletons = render_poses(keypoints, truth.shape[1], truth.shape[2])
        rows += [contact_sheet(v, frames) for v in (skeletons, driven, free, truth)]
    return np.concatenate(rows)


def main(argv: list[str] | None = None) -> int:
    parser = evaluation_parser(__doc__.split("\n\n")[0], "write skeleton / pose-driven / pose-free / truth strips here",
                               lpips=True)
    parser.add_argument("--pose-guidance", type=float, default=1.0,
                        help="pose guidance scale of the pose-driven videos (1 = off)")
    args = parser.parse_args(argv)
    pipe, cfg, num_frames, steps, init_strength, _ = load_for_evaluation(args)
    if pipe.unet.pose_guider is None:
        print(f"error: {args.checkpoint} has no pose guider (trained with model.pose_guider=false)", file=sys.stderr)
        return 1
    lpips = lpips_from_args(args)
    clips, _ = test_clips(Path(args.dataset), args.limit)
    if not clips:
        print(f"error: {args.dataset}/manifest.json lists no test clips", file=sys.stderr)
        return 1
    result = evaluate(pipe, clips, num_frames, steps, args.seed, init_strength, lpips, pose_guidance=args.pose_guidance,
                      through_vae=lambda frames: vae_roundtrip(pipe, frames))
    examples = result.pop("examples")
    result.update(checkpoint=args.checkpoint, dataset=args.dataset, steps=steps, num_frames=num_frames,
                  sampler=type(pipe.scheduler).__name__, init_strength=init_strength, threads=args.threads,
                  pose_guidance=args.pose_guidance)
    print(markdown_table(result))
    print(frame_table(result))
    print(json.dumps(result["verdict"]))
    save_results(args, result, lambda: example_strip(examples[:2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
