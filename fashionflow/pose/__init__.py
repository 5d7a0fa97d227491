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
    poses = driving_poses(driving, 24, reference)           # what the pipeline does: resample, align, frame 0

mediapipe is imported only by `extract_keypoints`, so everything else works without it.
"""

import importlib

# name -> submodule; imported on first use (PEP 562), so `python -m fashionflow.pose.motions` and
# `.align` run without the package having imported them first, and nothing heavy loads early.
_EXPORTS = {
    "align": ("align_poses", "alignment_preview", "usable_reference"),
    "drive": ("driving_poses", "reference_pose"),
    "extract": ("BLAZEPOSE_TO_OPENPOSE", "NoPersonError", "blazepose_to_openpose", "extract_keypoints"),
    "formats": ("load_keypoints", "read_dwpose", "read_openpose_json", "save_keypoints"),
    "keypoints": ("COLOURS", "CONFIDENCE_THRESHOLD", "JOINT_NAMES", "LIMBS", "NUM_JOINTS", "PoseFormatError",
                  "check_keypoints", "resample_keypoints"),
    "motions": ("MOTION_ASPECT", "MOTIONS", "motion_keypoints"),
    "render": ("overlay", "pose_tensor", "render_pose", "render_poses"),
    "similarity": ("pose_distance", "pose_routing_bias"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'fashionflow.pose' has no attribute '{name}'")
    return getattr(importlib.import_module(f"fashionflow.pose.{_MODULE_OF[name]}"), name)


def __dir__():
    return __all__
