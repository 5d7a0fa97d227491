"""OpenPose-style skeleton images, for the pose guider and for people to look at.

Drawn as OpenPose / DWPose draw a body (ControlNet's `draw_bodypose`, which DWPose, Animate
Anyone and MusePose reuse): on black, each of the 17 limbs a filled ellipse along the bone in
its colour, the limb layer dimmed to 60 %, then each visible joint a filled disc in its colour.
Their sizes are 4 px (ellipse half-width and disc radius) on a 512 px canvas, scaled with the
shorter side here so a skeleton looks the same at 640 x 512 (exactly DWPose's 4 px) and at the
demo's 128 x 128 (1 px, drawn at 2x and averaged down so thin limbs keep their colour).
Joints below `CONFIDENCE_THRESHOLD` and limbs touching one are left out.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from einops import rearrange

from fashionflow.pose.keypoints import COLOURS, CONFIDENCE_THRESHOLD, LIMBS, check_keypoints, visible

REFERENCE_SIDE = 512  # DWPose's 4 px limbs and joints are for canvases of about this size
LIMB_DIMMING = 0.6
SUPERSAMPLE_BELOW = 256  # smaller canvases are drawn at 2x and averaged down


def skeleton_width(height: int, width: int) -> int:
    """Limb half-width and joint radius in pixels for a height x width canvas (4 at 512 px)."""
    return max(1, round(4 * min(height, width) / REFERENCE_SIDE))


def _draw(pose: np.ndarray, height: int, width: int, size: int, threshold: float) -> np.ndarray:
    canvas = np.zeros((height, width, 3), np.uint8)
    shown = visible(pose, threshold)
    points = pose[:, :2] * np.array([width, height], np.float32)  # joint x y in pixels
    for index, (a, b) in enumerate(LIMBS):
        if not (shown[a] and shown[b]):
            continue
        (xa, ya), (xb, yb) = points[a], points[b]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        polygon = cv2.ellipse2Poly((int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), size),
                                   int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, COLOURS[index].tolist())
    canvas = (canvas * LIMB_DIMMING).astype(np.uint8)
    for joint in np.flatnonzero(shown):
        x, y = points[joint]
        cv2.circle(canvas, (int(x), int(y)), size, COLOURS[joint].tolist(), thickness=-1)
    return canvas


def render_pose(pose, height: int, width: int, *, threshold: float = CONFIDENCE_THRESHOLD) -> np.ndarray:
    """One pose [18, 3] -> uint8 [height, width, 3] RGB skeleton on black."""
    pose = check_keypoints(pose)[0]
    size = skeleton_width(height, width)
    if min(height, width) >= SUPERSAMPLE_BELOW:  # drawn directly, as DWPose does
        return _draw(pose, height, width, size, threshold)
    large = _draw(pose, 2 * height, 2 * width, 2 * size, threshold)
    return cv2.resize(large, (width, height), interpolation=cv2.INTER_AREA)


def render_poses(keypoints, height: int, width: int, *, threshold: float = CONFIDENCE_THRESHOLD) -> np.ndarray:
    """A sequence [f, 18, 3] -> uint8 [f, height, width, 3] skeleton frames (for videos and strips)."""
    keypoints = check_keypoints(keypoints)
    return np.stack([render_pose(pose, height, width, threshold=threshold) for pose in keypoints])


def pose_tensor(keypoints, height: int, width: int, *, threshold: float = CONFIDENCE_THRESHOLD) -> torch.Tensor:
    """A sequence [f, 18, 3] -> float [f, 3, height, width] in [0, 1]: the pose guider's input per frame."""
    frames = torch.from_numpy(render_poses(keypoints, height, width, threshold=threshold))
    return rearrange(frames, "f h w c -> f c h w").float() / 255.0


def overlay(image: np.ndarray, pose, *, threshold: float = CONFIDENCE_THRESHOLD, dim: float = 0.5) -> np.ndarray:
    """A skeleton drawn over a uint8 [h, w, 3] image (dimmed by `dim` so the colours stand out)."""
    image = np.asarray(image, np.uint8)
    skeleton = render_pose(pose, image.shape[0], image.shape[1], threshold=threshold)
    drawn = skeleton.max(axis=-1, keepdims=True) > 0
    return np.where(drawn, skeleton, (image * dim).astype(np.uint8))
