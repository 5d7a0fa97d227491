"""Driving poses for one video: resampled to its frame count, fitted to the reference, frame 0 = the reference.

What `FashionFlowPipeline(image, poses=...)` does with a driving sequence [f', 18, 3] before
rendering it for the pose guider:
1. resample to the video's frame count (`resample_keypoints`) when the counts differ;
2. align to the person in the input image (`align_poses`: position, scale, limb lengths);
   no person found in the image: one line says so, and the poses are used as they are;
3. frame 0 is the input image itself, so its pose is the image's own pose (the reference pose,
   when one was found), as in training, where frame 0's keypoints are the conditioning
   frame's. The driver's first frame only sets the fit; frames 1.. follow the driver.
align=False skips 2 and 3: the poses are taken to be in the input image's frame already (its
own video's keypoints, say), frame 0 included, and no reference pose is needed.
"""

from __future__ import annotations

import numpy as np

from fashionflow.pose.align import align_poses, usable_reference
from fashionflow.pose.keypoints import check_keypoints, resample_keypoints


def reference_pose(image: np.ndarray) -> np.ndarray | None:
    """The pose [18, 3] of the person in a uint8 [H, W, 3] image (x, y in [0, 1] of it), or None."""
    from fashionflow.pose.extract import NoPersonError, extract_keypoints

    try:
        return extract_keypoints(image, video=False)[0]
    except NoPersonError:
        return None


def driving_poses(driving, num_frames: int, reference: np.ndarray | None, *, align: bool = True,
                  driving_aspect: float = 1.0, reference_aspect: float = 1.0, name: str = "input image",
                  log=None) -> np.ndarray:
    """Driving keypoints [f', 18, 3] -> float32 [num_frames, 18, 3] for a video of the reference
    person (module docstring). `driving_aspect` / `reference_aspect`: width / height of the frames
    the driving keypoints and the reference image come from."""
    poses = check_keypoints(driving, "driving poses")
    if len(poses) != num_frames:
        poses = resample_keypoints(poses, num_frames)
    if not align:
        return poses
    poses = align_poses(poses, reference, driving_aspect=driving_aspect, reference_aspect=reference_aspect,
                        name=name, log=log)
    if usable_reference(reference):
        poses = poses.copy()
        poses[0] = check_keypoints(reference, name)[0]
    return poses
