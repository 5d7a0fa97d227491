"""Offline pose extraction: MediaPipe's BlazePose (legacy `mp.solutions.pose`) -> OpenPose-18.

MediaPipe 0.10.14 ships the BlazePose detector and the "full" landmark model inside its wheel
(`mediapipe/modules/pose_detection/pose_detection.tflite`,
`mediapipe/modules/pose_landmark/pose_landmark_full.tflite`), so extraction needs no weight
download and no network; only `model_complexity=1` is bundled. BlazePose predicts 33
landmarks (Bazarevsky et al. 2020, "BlazePose: On-device Real-time Body Pose tracking"); the
OpenPose-18 joints are taken from them by `BLAZEPOSE_TO_OPENPOSE` (the neck, which BlazePose
lacks, is the midpoint of the shoulders, as in OpenPose's COCO training labels). BlazePose's
"left" and "right" are the person's own, as OpenPose's are.

mediapipe is imported only when a pose is extracted, so the rest of fashionflow works
without it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from fashionflow.pose.keypoints import NUM_JOINTS, PoseFormatError

# OpenPose-18 joint -> BlazePose landmark(s); two landmarks are averaged. BlazePose indices:
# 0 nose, 2 left eye, 5 right eye, 7 left ear, 8 right ear, 11/12 left/right shoulder,
# 13/14 elbows, 15/16 wrists, 23/24 hips, 25/26 knees, 27/28 ankles (the others are the inner
# and outer eye corners, mouth, hands, heels and toes, which OpenPose-18 does not have).
BLAZEPOSE_TO_OPENPOSE = (
    (0,),       # nose
    (11, 12),   # neck = midpoint of the shoulders
    (12,),      # right shoulder
    (14,),      # right elbow
    (16,),      # right wrist
    (11,),      # left shoulder
    (13,),      # left elbow
    (15,),      # left wrist
    (24,),      # right hip
    (26,),      # right knee
    (28,),      # right ankle
    (23,),      # left hip
    (25,),      # left knee
    (27,),      # left ankle
    (5,),       # right eye
    (2,),       # left eye
    (8,),       # right ear
    (7,),       # left ear
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class NoPersonError(ValueError):
    """No frame of the source shows a person; the message names the source."""


def blazepose_to_openpose(landmarks: np.ndarray) -> np.ndarray:
    """BlazePose landmarks [..., 33, 3] (x, y in [0, 1], visibility) -> OpenPose-18 [..., 18, 3].

    A joint's confidence is BlazePose's visibility (the neck: the smaller of the two
    shoulders'), and 0 where the predicted point lies outside the frame: BlazePose also guesses
    joints it cannot see, OpenPose and DWPose report those as missing.
    """
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.shape[-2:] != (33, 3):
        raise ValueError(f"BlazePose landmarks must be [..., 33, 3], got {landmarks.shape}")
    joints = []
    for sources in BLAZEPOSE_TO_OPENPOSE:
        points = landmarks[..., list(sources), :]
        joints.append(np.concatenate([points[..., :2].mean(-2), points[..., 2:].min(-2)], -1))
    keypoints = np.stack(joints, axis=-2)
    inside = ((keypoints[..., :2] >= 0) & (keypoints[..., :2] <= 1)).all(-1)
    keypoints[..., 2] = np.where(inside, keypoints[..., 2], 0.0)
    return keypoints


def _load_frames(source) -> tuple[np.ndarray, str, bool]:
    """(frames uint8 [f, h, w, 3] RGB, a name for messages, whether the frames are one video)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            from fashionflow.images import open_image

            return np.asarray(open_image(path))[None], str(path), False
        from fashionflow.video_io import read_video

        frames, _ = read_video(path)
        return frames, str(path), True
    frames = np.asarray(source)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise PoseFormatError(f"frames must be uint8 [f, h, w, 3] RGB, got {frames.dtype} {tuple(np.shape(source))}")
    return frames, f"frames array [{', '.join(map(str, frames.shape))}]", len(frames) > 1


def _pose_solution(static: bool, min_confidence: float):
    try:
        import mediapipe as mp
    except ImportError as error:
        raise ImportError("pose extraction needs mediapipe: pip install --no-deps -r requirements-nodeps.txt "
                          f"(and pip install -r requirements.txt for what it imports); {error}") from None
    return mp.solutions.pose.Pose(static_image_mode=static, model_complexity=1, smooth_landmarks=True,
                                  enable_segmentation=False, min_detection_confidence=min_confidence,
                                  min_tracking_confidence=min_confidence)


def extract_keypoints(source, *, video: bool | None = None, min_confidence: float = 0.5) -> np.ndarray:
    """OpenPose-18 keypoints float32 [f, 18, 3] of an image path, a video path or uint8 frames [f, h, w, 3].

    x, y are in [0, 1] of the frame's width and height, then the joint's confidence. Frames of a
    video (a video file, or an array of more than one frame, unless `video=False`) are tracked
    from frame to frame, as MediaPipe does for video; images are detected independently. A
    frame without a person gets all confidences 0 (and coordinates 0). Raises NoPersonError
    when no frame has a person, VideoReadError / ImageLoadError for unreadable files.
    """
    frames, name, is_video = _load_frames(source)
    is_video = is_video if video is None else video
    keypoints = np.zeros((len(frames), NUM_JOINTS, 3), np.float32)
    with _pose_solution(static=not is_video, min_confidence=min_confidence) as pose:
        for index, frame in enumerate(frames):
            with warnings.catch_warnings():  # mediapipe 0.10.14 calls protobuf's deprecated GetPrototype
                warnings.filterwarnings("ignore", message=".*GetPrototype", category=UserWarning)
                result = pose.process(np.ascontiguousarray(frame))
            if result.pose_landmarks is None:
                continue
            landmarks = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
            keypoints[index] = blazepose_to_openpose(landmarks)
    if not (keypoints[..., 2] > 0).any():
        raise NoPersonError(f"{name}: no person found in any of its {len(frames)} frame(s)")
    return keypoints
