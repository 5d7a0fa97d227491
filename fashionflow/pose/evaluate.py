"""How close the offline extractor comes to DWPose: PCK per joint.

PCK@a (percentage of correct keypoints) of a joint is the share of frames in which the
reference (DWPose) sees the joint and the extractor puts it within a * (the person's height)
of the reference, in pixels; a joint the extractor misses (confidence below the threshold)
counts as wrong. The person's height in a frame is the height of the reference skeleton's
bounding box (eyes and ears to ankles), the usual normalisation when no box is annotated.

    python -m fashionflow.pose.evaluate --video ../shared/fixtures/ubc_test_91BjuE6irxS.mp4 \\
        --reference ../shared/fixtures/ubc_test_91BjuE6irxS.dwpose.npy
    python -m fashionflow.pose.evaluate --synthetic 12     # synthetic clips (seeds 0-11) vs their true keypoints
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fashionflow.pose.keypoints import CONFIDENCE_THRESHOLD, JOINT_NAMES, check_keypoints, visible


def pck(predicted, reference, height: int, width: int, alphas=(0.05, 0.1),
        threshold: float = CONFIDENCE_THRESHOLD) -> dict[float, np.ndarray]:
    """Per-joint PCK: {alpha: float [18] in [0, 1] (NaN for a joint the reference never sees)}.

    `predicted` and `reference` are [f, 18, 3] sequences of the same video (frame size
    `height` x `width`, for distances in pixels).
    """
    predicted, reference = check_keypoints(predicted, "predicted"), check_keypoints(reference, "reference")
    if predicted.shape != reference.shape:
        raise ValueError(f"predicted {predicted.shape} and reference {reference.shape} differ in frames")
    scale = np.array([width, height], np.float32)
    seen = visible(reference, threshold)  # f j
    found = visible(predicted, threshold)
    distance = np.linalg.norm((predicted[..., :2] - reference[..., :2]) * scale, axis=-1)  # f j, pixels
    y = np.where(seen, reference[..., 1], np.nan) * height
    person_height = (np.nanmax(y, axis=1) - np.nanmin(y, axis=1))[:, None]  # f 1
    counted = seen & np.isfinite(person_height) & (person_height > 0)
    result = {}
    for alpha in alphas:
        correct = counted & found & (distance <= alpha * np.nan_to_num(person_height))
        with np.errstate(invalid="ignore", divide="ignore"):
            result[alpha] = correct.sum(0) / counted.sum(0)
    return result


def pck_table(scores: dict[float, np.ndarray]) -> str:
    """A markdown table: one row per joint, one column per alpha, plus the mean."""
    alphas = sorted(scores)
    lines = ["| joint | " + " | ".join(f"PCK@{a:g}" for a in alphas) + " |",
             "| --- | " + " | ".join("---" for _ in alphas) + " |"]
    for index, name in enumerate(JOINT_NAMES):
        lines.append(f"| {name} | " + " | ".join(f"{100 * scores[a][index]:.1f}" for a in alphas) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{100 * np.nanmean(scores[a]):.1f}**" for a in alphas) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", help="the video the reference keypoints belong to")
    parser.add_argument("--reference", help="reference keypoints (DWPose .npy, OpenPose JSON, ours)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="instead: N synthetic clips (seeds 0..N-1, 24 frames, 256 x 256) against their true keypoints")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1])
    args = parser.parse_args(argv)
    if not args.synthetic and not (args.video and args.reference):
        parser.error("give --video and --reference, or --synthetic N")

    from fashionflow.pose.extract import NoPersonError, extract_keypoints
    from fashionflow.pose.formats import load_keypoints
    from fashionflow.video_io import read_video

    if args.synthetic:
        from fashionflow.synthetic import render_clip

        predicted, truth = [], []
        for seed in range(args.synthetic):
            clip = render_clip(seed=seed, num_frames=24, height=256, width=256)
            try:
                predicted.append(extract_keypoints(clip.frames))
            except NoPersonError:
                predicted.append(np.zeros_like(clip.keypoints))
            truth.append(clip.keypoints)
        predicted, truth = np.concatenate(predicted), np.concatenate(truth)
        print(pck_table(pck(predicted, truth, 256, 256, tuple(args.alphas))))
        print(f"person found in {100 * (predicted[..., 2] > 0).any(-1).mean():.1f} % of {len(predicted)} frames")
        return 0
    frames, _ = read_video(args.video)
    reference = load_keypoints(args.reference, height=frames.shape[1], width=frames.shape[2])
    if len(reference) != len(frames):
        print(f"{args.reference}: {len(reference)} frames of keypoints for {len(frames)} video frames; "
              "comparing the first", min(len(reference), len(frames)), file=sys.stderr)
    count = min(len(reference), len(frames))
    predicted = extract_keypoints(frames[:count])
    print(pck_table(pck(predicted, reference[:count], frames.shape[1], frames.shape[2], tuple(args.alphas))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
