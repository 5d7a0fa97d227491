"""Poses for the pose-driven mode: extraction, keypoint files, skeleton images, alignment, motions.

Keypoints everywhere are float32 [f, 18, 3] in OpenPose-18 order (`JOINT_NAMES`), x, y in
[0, 1] of the frame's width and height, then a confidence. docs/pose.md has the details.

    from fashionflow.pose import extract_keypoints, load_keypoints, motion_keypoints, align_poses, pose_tensor
    driving = extract_keypoints("driving.mp4")              # offline: MediaPipe BlazePose, mapped to OpenPose-18
    driving = load_keypoints("dance.dwpose.npy")            # or DWPose (MusePose) / OpenPose JSON / ours
    driving = motion_keypoints("turn", num_frames=24)       # or a built-in motion
    reference = extract_keypoints("photo.jpg")[0]
    aligned = align_poses(driving, reference, driving_aspect=w_d / h_d, reference_aspect=w_r / h_r)
    skeletons = pose_tensor(aligned, 640, 512)              # float [f, 3, 640, 512] in [0, 1] for the pose guider

mediapipe is imported only by `extract_keypoints`, so everything else works without it.
"""

from fashionflow.pose.align import align_poses, alignment_preview, usable_reference
from fashionflow.pose.extract import BLAZEPOSE_TO_OPENPOSE, NoPersonError, blazepose_to_openpose, extract_keypoints
from fashionflow.pose.formats import load_keypoints, read_dwpose, read_openpose_json, save_keypoints
from fashionflow.pose.keypoints import (
    COLOURS, CONFIDENCE_THRESHOLD, JOINT_NAMES, LIMBS, NUM_JOINTS, PoseFormatError, check_keypoints,
    resample_keypoints,
)
from fashionflow.pose.motions import MOTION_ASPECT, MOTIONS, motion_keypoints
from fashionflow.pose.render import overlay, pose_tensor, render_pose, render_poses

__all__ = [
    "BLAZEPOSE_TO_OPENPOSE", "COLOURS", "CONFIDENCE_THRESHOLD", "JOINT_NAMES", "LIMBS", "MOTIONS", "MOTION_ASPECT",
    "NUM_JOINTS", "NoPersonError", "PoseFormatError", "align_poses", "alignment_preview", "blazepose_to_openpose",
    "check_keypoints", "extract_keypoints", "load_keypoints", "motion_keypoints", "overlay", "pose_tensor",
    "read_dwpose", "read_openpose_json", "render_pose", "render_poses", "resample_keypoints", "save_keypoints",
    "usable_reference",
]
