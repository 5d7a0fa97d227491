"""Built-in driving motions: a full turn, a sway, catwalk steps. `--motion NAME` needs no video.

Each motion is computed, not recorded: a 3D stick figure with UBC-model proportions (units of
body height: shoulders at 0.81, hips at 0.52, thigh and shin 0.24, upper arm 0.18, forearm
0.16) is posed by joint angles that are smooth functions of the clip's phase s in [0, 1],
rotated by its yaw about the vertical axis and projected orthographically into a frame of
width / height `MOTION_ASPECT` (the model's 512 x 640), the figure 0.8 of the frame high.
No randomness and no data files: `motion_keypoints(name, num_frames)` returns the same
float32 [f, 18, 3] on every machine, for any number of frames (the phase is sampled, so a
longer clip is the same motion, slower).

- turn: a full turn to the model's left (yaw 0 -> 360 degrees, eased in and out, as the UBC
  models turn), arms slightly away from the body, weight shifting once.
- sway: the weight shifts right, left and back (hips 3 % of the height sideways, the torso
  leaning the other way, the unloaded knee bending), the body turning 20 degrees each way,
  the arms following.
- catwalk: four steps toward the camera with crossing feet, counter-swinging arms, the hips
  turning with the stride; the figure grows from 0.72 to 0.86 of the frame as it comes closer.

Eyes and nose are visible (confidence 1) while the face is towards the camera, ears while
the side of the head is, body joints always; hidden joints get confidence 0, as OpenPose
reports them. `python -m fashionflow.pose.motions --output-dir DIR` writes each motion as a
plain .npy and a skeleton .mp4 to look at.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from fashionflow.pose.keypoints import JOINT, NUM_JOINTS

MOTION_ASPECT = 512 / 640  # width / height of the frame the motions are drawn for
DEFAULT_FRAMES = {"turn": 48, "sway": 48, "catwalk": 48}
MOTIONS = tuple(DEFAULT_FRAMES)

# Body proportions (units of body height; u = the person's left, v = up, w = forward).
SHOULDER_V, SHOULDER_U, NECK_V = 0.81, 0.13, 0.82
HIP_U, THIGH, SHIN, UPPER_ARM, FOREARM = 0.09, 0.24, 0.24, 0.18, 0.16
ANKLE_V = 0.04  # ankle height above the floor when standing
HEAD = {"nose": (0.0, 0.91, 0.06), "right_eye": (-0.03, 0.935, 0.05), "left_eye": (0.03, 0.935, 0.05),
        "right_ear": (-0.07, 0.925, -0.01), "left_ear": (0.07, 0.925, -0.01)}
# Direction each face point faces (u, w) and how far from the camera it may turn and still show.
FACE_NORMALS = {"nose": ((0.0, 1.0), -0.15), "right_eye": ((-0.5, 0.87), 0.0), "left_eye": ((0.5, 0.87), 0.0),
                "right_ear": ((-1.0, 0.0), -0.35), "left_ear": ((1.0, 0.0), -0.35)}


def _ease(s: float) -> float:
    return s * s * (3.0 - 2.0 * s)


def _leg(hip: np.ndarray, flexion: float, knee_bend: float, cross: float) -> tuple[np.ndarray, np.ndarray]:
    """Knee and ankle from the hip (u v w): flexion swings the thigh forward, knee_bend folds the shin back."""
    knee = hip + THIGH * np.array([cross, -math.cos(flexion), math.sin(flexion)])
    shin = flexion - knee_bend
    return knee, knee + SHIN * np.array([cross, -math.cos(shin), math.sin(shin)])


def _arm(shoulder: np.ndarray, side: float, swing: float, abduction: float, elbow_bend: float):
    """Elbow and wrist (u v w): swing forward, abduction out to the side, the elbow bending forward."""
    def direction(forward):
        return np.array([side * math.sin(abduction), -math.cos(abduction) * math.cos(forward),
                         math.cos(abduction) * math.sin(forward)])
    elbow = shoulder + UPPER_ARM * direction(swing)
    return elbow, elbow + FOREARM * direction(swing + elbow_bend)


def _pose(yaw: float, *, hip_shift: float = 0.0, tilt: float = 0.0, legs=((0, 0, 0), (0, 0, 0)),
          arms=((0, 0.12, 0.1), (0, 0.12, 0.1)), hip_turn: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """3D joints [18, 3] (u v w, floor at v = 0) and visibility [18] of a figure in one posture.

    legs: (flexion, knee bend, cross) for right then left; arms: (swing, abduction, elbow bend);
    tilt leans the upper body sideways (radians, towards the person's left), hip_turn turns the
    pelvis about the vertical axis against the shoulders.
    """
    joints = np.zeros((NUM_JOINTS, 3))
    pelvis = np.array([hip_shift, 0.0, 0.0])
    for side, name, (flexion, bend, cross) in ((-1, "right", legs[0]), (1, "left", legs[1])):
        hip = pelvis + np.array([side * HIP_U * math.cos(hip_turn), 0.0, -side * HIP_U * math.sin(hip_turn)])
        knee, ankle = _leg(hip, flexion, bend, -side * cross)
        joints[JOINT[f"{name}_hip"]], joints[JOINT[f"{name}_knee"]], joints[JOINT[f"{name}_ankle"]] = hip, knee, ankle
    # Upper body: built upright above the pelvis, then leaned by `tilt` about the pelvis (u-v plane).
    upper = {"neck": np.array([0.0, NECK_V - 0.52, 0.0])}
    for side, name, (swing, abduction, bend) in ((-1, "right", arms[0]), (1, "left", arms[1])):
        shoulder = np.array([side * SHOULDER_U, SHOULDER_V - 0.52, 0.0])
        elbow, wrist = _arm(shoulder, side, swing, abduction, bend)
        upper.update({f"{name}_shoulder": shoulder, f"{name}_elbow": elbow, f"{name}_wrist": wrist})
    upper.update({name: np.array(point) - np.array([0.0, 0.52, 0.0]) for name, point in HEAD.items()})
    c, s = math.cos(tilt), math.sin(tilt)
    for name, point in upper.items():
        u, v, w = point
        joints[JOINT[name]] = pelvis + np.array([c * u - s * v, s * u + c * v, w])
    # Stand on the lower foot (the pelvis rises and falls with the legs).
    joints[:, 1] += ANKLE_V - min(joints[JOINT["right_ankle"], 1], joints[JOINT["left_ankle"], 1])
    shown = np.ones(NUM_JOINTS)
    for name, ((nu, nw), limit) in FACE_NORMALS.items():
        toward_camera = math.cos(yaw) * nw - math.sin(yaw) * nu  # depth component of the rotated normal
        shown[JOINT[name]] = float(toward_camera > limit)
    return joints, shown


def _project(joints: np.ndarray, yaw: float, height: float, feet_y: float) -> np.ndarray:
    """Rotate by yaw about the vertical axis and project: -> x, y in [0, 1] of a MOTION_ASPECT frame."""
    u, v, w = joints.T
    x = math.cos(yaw) * u + math.sin(yaw) * w  # u v w -> camera x (right), yaw 90 faces image right
    return np.stack([0.5 + height * x / MOTION_ASPECT, feet_y - height * v], axis=-1)


def _turn(s: float):
    yaw = 2 * math.pi * _ease(s)
    shift = 0.015 * math.sin(2 * math.pi * s)
    joints, shown = _pose(yaw, hip_shift=shift, tilt=-0.02 * math.sin(2 * math.pi * s),
                          legs=((0, 0.1 * max(0.0, -math.sin(2 * math.pi * s)), 0.0),
                                (0, 0.1 * max(0.0, math.sin(2 * math.pi * s)), 0.0)),
                          arms=((0.05, 0.18, 0.15), (0.05, 0.18, 0.15)))
    return joints, shown, yaw, 0.8, 0.9


def _sway(s: float):
    phase = math.sin(2 * math.pi * s)
    yaw = math.radians(20) * phase
    joints, shown = _pose(yaw, hip_shift=-0.03 * phase, tilt=0.04 * phase,
                          legs=((0, 0.25 * max(0.0, phase), 0.0), (0, 0.25 * max(0.0, -phase), 0.0)),
                          arms=((0.15 * phase, 0.12, 0.2), (-0.15 * phase, 0.12, 0.2)))
    return joints, shown, yaw, 0.8, 0.9


def _catwalk(s: float):
    stride = 2 * math.pi * 2 * s  # two strides = four steps
    swing = math.sin(stride)
    joints, shown = _pose(math.radians(6) * swing, hip_shift=0.012 * swing, hip_turn=math.radians(10) * swing,
                          legs=((0.35 * swing, 0.6 * max(0.0, math.sin(stride + 0.8)), 0.03),
                                (-0.35 * swing, 0.6 * max(0.0, -math.sin(stride + 0.8)), 0.03)),
                          arms=((-0.35 * swing, 0.08, 0.15), (0.35 * swing, 0.08, 0.15)))
    return joints, shown, math.radians(6) * swing, 0.72 + 0.14 * s, 0.84 + 0.1 * s


_MOTIONS = {"turn": _turn, "sway": _sway, "catwalk": _catwalk}


def motion_keypoints(name: str, num_frames: int | None = None) -> np.ndarray:
    """A built-in motion as float32 [num_frames, 18, 3] OpenPose-18 keypoints (module docstring).

    The frame is `MOTION_ASPECT` wide per unit of height (pass it as `driving_aspect` when
    aligning). Unknown names raise ValueError listing the motions.
    """
    if name not in _MOTIONS:
        raise ValueError(f"unknown motion '{name}'; built-in motions: {', '.join(MOTIONS)}")
    num_frames = DEFAULT_FRAMES[name] if num_frames is None else num_frames
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    keypoints = np.zeros((num_frames, NUM_JOINTS, 3), np.float32)
    for index in range(num_frames):
        s = index / num_frames  # [0, 1): a turn or a cycle ends where the next would start
        joints, shown, yaw, height, feet_y = _MOTIONS[name](s)
        keypoints[index, :, :2] = _project(joints, yaw, height, feet_y)
        keypoints[index, :, 2] = shown
    return keypoints


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the built-in motions as .npy keypoints and skeleton videos.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--frames", type=int, default=None, help="frames per motion (default: each motion's own)")
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--strip-frames", type=int, default=8, help="frames per motion in motions.png")
    args = parser.parse_args(argv)

    from fashionflow.pose.formats import save_keypoints
    from fashionflow.pose.render import render_poses
    from fashionflow.video_io import contact_sheet, write_image, write_mp4

    width = round(args.height * MOTION_ASPECT)
    out, rows = Path(args.output_dir), []
    for name in MOTIONS:
        keypoints = motion_keypoints(name, args.frames)
        save_keypoints(out / f"{name}.npy", keypoints)
        skeletons = render_poses(keypoints, args.height, width)
        write_mp4(out / f"{name}.mp4", skeletons, fps=12)
        rows.append(contact_sheet(skeletons, args.strip_frames))
        print(f"{name}: {len(keypoints)} frames -> {out / name}.npy, .mp4")
    write_image(out / "motions.png", np.concatenate(rows, axis=0))
    print(f"{out / 'motions.png'}: {args.strip_frames} frames of each motion, one row each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
