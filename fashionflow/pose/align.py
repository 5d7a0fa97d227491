"""Fit a driving pose sequence to the reference person: position, scale and limb lengths.

A driving sequence comes from another person (or a built-in motion); drawn as it is, a tall
driver stretches a short model and a driver standing left pulls the model left, which spoils
the identity (the commonest complaint about Animate Anyone / MusePose; MusePose's
`pose_align.py` fits scale and offset). Here, in pixel units (x scaled by the frame's aspect
ratio, so lengths mean the same horizontally and vertically):

1. per limb, a ratio = the limb's length in the reference pose / its length in the driver's
   first frame that shows it; limbs the reference does not show (legs cut off by the frame)
   take the overall scale, the median of the ratios of the limbs both show;
2. the neck follows the driver's neck path relative to its first visible position, scaled by
   the overall scale and started at the reference's neck;
3. every other joint is placed from its parent outwards along the kinematic tree (the 17
   OpenPose limbs, rooted at the neck): parent's new position + ratio x (driver's bone vector
   in that frame). A bone keeps its direction and foreshortening frame by frame; only its
   length is rescaled by a constant factor. A visible joint whose parent is not visible in
   a frame is placed from its nearest visible ancestor at the overall scale.

The result is in the reference frame's [0, 1] coordinates; confidences stay the driver's.
Properties (tests/test_pose.py): the aligned first frame has the reference's limb lengths;
aligning a sequence to its own first frame changes nothing; moving or scaling the reference
moves or scales the result the same way, and moving or scaling the driver changes nothing.

    python -m fashionflow.pose.align --reference photo.jpg --motion turn --output preview.png [--save aligned.npy]
    python -m fashionflow.pose.align --reference photo.jpg --driving dance.mp4 --output preview.png
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fashionflow.pose.keypoints import CONFIDENCE_THRESHOLD, LIMBS, PARENT, ROOT, check_keypoints, visible

PREVIEW_MIN_HEIGHT = 320


def _pixel_units(keypoints: np.ndarray, aspect: float) -> np.ndarray:
    """x, y in [0, 1] of width and height -> units of the frame height (x times width / height)."""
    return keypoints[..., :2] * np.array([aspect, 1.0], np.float32)


def usable_reference(reference, threshold: float = CONFIDENCE_THRESHOLD) -> bool:
    """Whether a reference pose [18, 3] can anchor an alignment: a visible neck and one visible limb."""
    if reference is None:
        return False
    shown = visible(check_keypoints(reference)[0], threshold)
    return bool(shown[ROOT] and any(shown[a] and shown[b] for a, b in LIMBS))


def _ratios(drv: np.ndarray, drv_shown: np.ndarray, ref: np.ndarray, ref_shown: np.ndarray
            ) -> tuple[np.ndarray, float]:
    """(ratio per limb [17], overall scale) from pixel-unit positions drv [f, 18, 2], ref [18, 2]."""
    ratios = np.full(len(LIMBS), np.nan)
    for index, (a, b) in enumerate(LIMBS):
        if not (ref_shown[a] and ref_shown[b]):
            continue
        frames = np.flatnonzero(drv_shown[:, a] & drv_shown[:, b])
        if len(frames) == 0:
            continue
        driver_length = np.linalg.norm(drv[frames[0], b] - drv[frames[0], a])
        if driver_length > 1e-6:
            ratios[index] = np.linalg.norm(ref[b] - ref[a]) / driver_length
    known = ratios[np.isfinite(ratios)]
    scale = float(np.median(known)) if len(known) else 1.0
    return np.where(np.isfinite(ratios), ratios, scale), scale


def align_poses(driving, reference, *, driving_aspect: float = 1.0, reference_aspect: float = 1.0,
                threshold: float = CONFIDENCE_THRESHOLD, name: str = "reference", log=None) -> np.ndarray:
    """Driving keypoints [f, 18, 3] fitted to a reference pose [18, 3] (module docstring).

    `driving_aspect` and `reference_aspect` are width / height of the frames the keypoints
    were taken from. Where the reference shows no person (None, no visible neck or no
    visible limb), `log` (default: stderr) gets one line naming `name`, and the driving
    keypoints come back unchanged.
    """
    driving = check_keypoints(driving, "driving poses")
    if not usable_reference(reference, threshold):
        (log or (lambda line: print(line, file=sys.stderr)))(
            f"{name}: no person found, so the driving poses are used as they are (not aligned)")
        return driving.copy()
    reference = check_keypoints(reference, name)[0]
    drv, ref = _pixel_units(driving, driving_aspect), _pixel_units(reference, reference_aspect)
    drv_shown, ref_shown = visible(driving, threshold), visible(reference, threshold)
    ratios, scale = _ratios(drv, drv_shown, ref, ref_shown)
    ratio_of = {child: ratios[index] for index, (_, child) in enumerate(LIMBS)}

    neck_frames = np.flatnonzero(drv_shown[:, ROOT])
    if len(neck_frames):
        anchor = drv[neck_frames[0], ROOT]
    else:  # the driver's neck is never seen: anchor on the centre of all its visible joints
        anchor = drv[drv_shown].mean(0) if drv_shown.any() else np.zeros(2, np.float32)

    def globally(points):  # the driver's frame moved and scaled onto the reference's neck
        return ref[ROOT] + scale * (points - anchor)

    out = globally(drv)  # f j 2; overwritten below for visible joints
    for t in range(len(drv)):
        shown = drv_shown[t]
        for _, joint in LIMBS:  # parents come before their children
            if not shown[joint]:
                continue
            parent = PARENT[joint]
            if shown[parent]:
                out[t, joint] = out[t, parent] + ratio_of[joint] * (drv[t, joint] - drv[t, parent])
                continue
            ancestor = PARENT.get(parent)
            while ancestor is not None and not shown[ancestor]:
                ancestor = PARENT.get(ancestor)
            if ancestor is not None:
                out[t, joint] = out[t, ancestor] + scale * (drv[t, joint] - drv[t, ancestor])
    aligned = driving.copy()
    aligned[..., :2] = out / np.array([reference_aspect, 1.0], np.float32)
    return aligned


def alignment_preview(reference, aligned, height: int, width: int, reference_image: np.ndarray | None = None
                      ) -> np.ndarray:
    """uint8 [height, 2 width, 3]: the reference pose beside the first aligned driving pose.

    Both are drawn over the reference image (dimmed) when it is given, so a misfit shows.
    """
    from fashionflow.pose.render import overlay, render_pose

    panels = []
    for pose in (reference, check_keypoints(aligned)[0]):
        if pose is None:
            panels.append(np.zeros((height, width, 3), np.uint8))
        elif reference_image is None:
            panels.append(render_pose(pose, height, width))
        else:
            import cv2

            image = cv2.resize(np.asarray(reference_image, np.uint8), (width, height), interpolation=cv2.INTER_AREA)
            panels.append(overlay(image, pose))
    return np.concatenate(panels, axis=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fit driving poses to the person in a photo; write the preview.")
    parser.add_argument("--reference", required=True, help="photo of the person the video will show")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--driving", help="driving video, or a keypoint file (.npy ours or DWPose, OpenPose .json)")
    source.add_argument("--motion", help="a built-in motion (turn, sway, catwalk)")
    parser.add_argument("--output", required=True, help="preview image: reference pose | first aligned pose")
    parser.add_argument("--save", help="also write the aligned keypoints [f, 18, 3] as .npy")
    parser.add_argument("--driving-aspect", type=float, default=None,
                        help="width / height of the driving frames, for keypoint files (videos: read from the file)")
    args = parser.parse_args(argv)

    from fashionflow.images import open_image
    from fashionflow.pose.extract import NoPersonError, extract_keypoints
    from fashionflow.pose.formats import load_keypoints, save_keypoints
    from fashionflow.pose.motions import MOTION_ASPECT, motion_keypoints
    from fashionflow.video_io import VIDEO_EXTENSIONS, read_video, write_image

    image = np.asarray(open_image(args.reference))
    try:
        reference = extract_keypoints(image)[0]
    except NoPersonError:
        reference = None
    if args.motion:
        driving, aspect = motion_keypoints(args.motion), MOTION_ASPECT
    elif args.driving.lower().endswith(VIDEO_EXTENSIONS):
        frames, _ = read_video(args.driving)
        driving, aspect = extract_keypoints(frames), frames.shape[2] / frames.shape[1]
    else:
        driving, aspect = load_keypoints(args.driving), args.driving_aspect or MOTION_ASPECT
    aligned = align_poses(driving, reference, driving_aspect=aspect, reference_aspect=image.shape[1] / image.shape[0],
                          name=args.reference)
    zoom = max(1.0, PREVIEW_MIN_HEIGHT / image.shape[0])  # small images are shown larger
    height, width = round(image.shape[0] * zoom), round(image.shape[1] * zoom)
    write_image(args.output, alignment_preview(reference, aligned, height, width, image))
    if args.save:
        save_keypoints(args.save, aligned)
    print(f"{args.output}: reference pose | first of {len(aligned)} aligned driving poses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
