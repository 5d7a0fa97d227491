"""OpenPose-18 keypoints: joint order, limbs, colours, and small operations on sequences.

A pose sequence is float32 [f, 18, 3]: per frame and joint x, y in [0, 1] of the frame's width
and height (x right, y down), then a confidence in [0, 1]. Joint order is OpenPose's COCO-18
(the order DWPose, ControlNet, Animate Anyone and MusePose use), and so are the skeleton's 17
limbs and the 18 colours they are drawn in (lllyasviel/ControlNet annotator/openpose/util.py,
IDEA-Research/DWPose). A joint is "visible" when its confidence is at least
`CONFIDENCE_THRESHOLD`, DWPose's cut-off (it drops body joints scored below 0.3).
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT = {name: index for index, name in enumerate(JOINT_NAMES)}

# The 17 limbs as OpenPose draws them, (parent, child) in drawing order; limb i has colour i.
# Every limb points away from the neck, so they are also the kinematic tree rooted at the neck
# (each joint but the neck is the child of exactly one limb).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
ROOT = JOINT["neck"]
PARENT = {child: parent for parent, child in LIMBS}

# OpenPose's 18 RGB colours: limb i and joint i use COLOURS[i].
COLOURS = np.array([
    [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
    [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
    [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85],
], dtype=np.uint8)

CONFIDENCE_THRESHOLD = 0.3


class PoseFormatError(ValueError):
    """Keypoints that are not [f, 18, 3] (or cannot be read); the message names the source."""


def check_keypoints(keypoints, source: str = "keypoints") -> np.ndarray:
    """Return `keypoints` as float32 [f, 18, 3] (a single [18, 3] pose becomes one frame).

    Raises PoseFormatError naming `source` for any other shape, for non-finite values, or for
    an empty sequence.
    """
    array = np.asarray(keypoints, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (NUM_JOINTS, 3):
        raise PoseFormatError(f"{source}: keypoints must be [f, 18, 3] (OpenPose-18: x, y, confidence), "
                              f"got shape {tuple(np.shape(keypoints))}")
    if len(array) == 0:
        raise PoseFormatError(f"{source}: no frames")
    if not np.isfinite(array).all():
        raise PoseFormatError(f"{source}: keypoints contain NaN or infinity")
    return array


def visible(keypoints: np.ndarray, threshold: float = CONFIDENCE_THRESHOLD) -> np.ndarray:
    """bool [..., 18]: the joints whose confidence reaches `threshold`."""
    return keypoints[..., 2] >= threshold


def resample_keypoints(keypoints, num_frames: int) -> np.ndarray:
    """Resample a sequence [f, 18, 3] to `num_frames` frames spread over the same time span.

    Positions are interpolated linearly between the two nearest frames where the joint is
    visible in both; otherwise the nearer frame's joint is taken as it is (a joint never
    slides from or to a position it was not seen at). One frame in -> repeated.
    """
    keypoints = check_keypoints(keypoints)
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    frames = len(keypoints)
    if frames == 1:
        return np.repeat(keypoints, num_frames, axis=0)
    position = np.linspace(0.0, frames - 1, num_frames)
    lower = np.floor(position).astype(int).clip(0, frames - 2)
    weight = (position - lower)[:, None, None].astype(np.float32)  # f' 1 1
    a, b = keypoints[lower], keypoints[lower + 1]
    both = (visible(a) & visible(b))[..., None]
    nearer = np.where(weight < 0.5, a, b)
    return np.where(both, a + weight * (b - a), nearer).astype(np.float32)


def select_person(people: np.ndarray) -> np.ndarray:
    """The largest of several poses [p, 18, 3] (bounding-box area of its visible joints) -> [18, 3].

    Clips in UBC Fashion show one person; a second detection is usually a reflection or a
    fragment, so the largest is the subject. No people -> a pose with all confidences 0.
    """
    if len(people) == 0:
        return np.zeros((NUM_JOINTS, 3), np.float32)
    areas = []
    for person in people:
        points = person[visible(person)][:, :2]
        areas.append(np.ptp(points[:, 0]) * np.ptp(points[:, 1]) + 1e-6 * len(points) if len(points) else -1.0)
    return np.asarray(people[int(np.argmax(areas))], np.float32)
