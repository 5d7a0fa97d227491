"""Procedural fashion clips in the UBC Fashion layout, for the demo model and for tests.

A figure (head, hair, arms, legs, a dress or a top with a skirt) stands on a plain studio
background and does what the UBC models do: turns around, sways, steps, poses. The garment's
front and back differ (pattern or colours), so a turn shows the back pattern sliding in.
Everything is drawn with numpy and OpenCV at twice the output size and averaged down, so a
clip of 32 frames at 128x128 takes a few milliseconds per frame. One seed gives the same
pixels on every machine (no randomness outside the seeded generator).

    python -m fashionflow.synthetic --output-dir fashion_dataset/synthetic --num-videos 48

writes DIR/train/*.mp4 and DIR/test/*.mp4 (the layout `project_latent_space.py` reads), beside
each NAME.mp4 a sidecar NAME.pose.npz (`keypoints` float32 [f, 18, 3], `yaw` float32 [f]; read
it with `read_pose_sidecar`), and DIR/manifest.json (per clip: split, seed, action, garment,
start yaw). Python API:

    clip = render_clip(seed=3, num_frames=32, height=128, width=128)
    clip.frames        # uint8 [f, h, w, 3]
    clip.garment_mask  # bool [f, h, w], the visible garment pixels
    clip.keypoints     # float32 [f, 18, 3]: OpenPose-18 body keypoints (x, y in [0, 1], visibility 0/1)
    clip.yaw           # float32 [f]: body yaw in degrees, 0 = facing the camera, +-180 = back to it

Keypoints follow the OpenPose-18 order that DWPose and OpenPose write (`KEYPOINT_NAMES`); the
figure's right side is the one on the left of the frame when it faces the camera. Positive yaw
turns the figure's front towards the right of the frame. A joint is marked invisible when the
torso hides it (the far arm side-on), when the face turns away (nose, eyes; the far ear) or when
it leaves the frame. Clips v2 (with keypoints and yaw) turn more: half the clips turn, a quarter
of the others turn part of the way, and a quarter of all clips start side-on or from the back.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

KEYPOINT_NAMES = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
                  "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
POSE_SIDECAR_SUFFIX = ".pose.npz"
SUPERSAMPLE = 2  # draw at 2x and average down: smooth edges without anti-aliased primitives
ACTIONS = ("turn", "sway", "step", "pose")
PATTERNS = ("solid", "stripes", "vertical_stripes", "dots", "checks", "blocks")

# Proportions of the figure as fractions of its height (top of head = 0, soles = 1).
HEAD_Y, HEAD_R = 0.08, 0.07
SHOULDER_Y, WAIST_Y, HIP_Y = 0.19, 0.36, 0.47
SHOULDER_W, WAIST_W, HIP_W = 0.15, 0.105, 0.13  # half-widths of the body
DEPTH_RATIO = 0.55  # depth / width of the torso cross-section: a turned body looks narrower


@dataclass
class Garment:
    """One side (front or back) of the garment: a pattern drawn in two colours."""

    pattern: str
    base: np.ndarray  # float [3] in [0, 1]
    accent: np.ndarray
    period: float  # pattern period as a fraction of the figure height
    horizontal_split: bool  # for "blocks": split top/bottom (True) or left/right

    def describe(self) -> dict:
        return {"pattern": self.pattern, "base": _hex(self.base), "accent": _hex(self.accent)}


@dataclass
class Figure:
    """Everything about one clip that does not change over time."""

    background: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    hair_long: bool
    legwear: np.ndarray  # skirt/trousers under a top, or skin-coloured legs under a dress
    shoes: np.ndarray
    dress: bool
    hem: float  # hem height, fraction of the figure height
    flare: float  # hem half-width / hip half-width
    sleeves: bool
    front: Garment
    back: Garment
    scale: float  # figure height / frame height
    centre: float  # horizontal position, fraction of the frame width
    # motion
    action: str
    start_angle: float
    turn_amount: float
    turn_start: float  # fraction of the clip
    turn_duration: float
    sway_amplitude: float  # fraction of the figure height
    sway_period: float  # frames
    sway_phase: float
    step_distance: float  # fraction of the figure height
    step_period: float  # frames
    pose_keys: list = field(default_factory=list)  # [(time fraction, left arm pose, right arm pose)]

    def describe(self) -> dict:
        return {"action": self.action, "dress": self.dress, "front": self.front.describe(),
                "back": self.back.describe(), "start_yaw": round(wrap_degrees(math.degrees(self.start_angle))),
                "turn_degrees": round(math.degrees(self.turn_amount))}


@dataclass
class Clip:
    frames: np.ndarray  # uint8 [f, h, w, 3]
    garment_mask: np.ndarray  # bool [f, h, w]
    figure: Figure
    keypoints: np.ndarray  # float32 [f, 18, 3]: x, y in [0, 1] of width and height, visibility 0/1
    yaw: np.ndarray  # float32 [f]: degrees, 0 = facing the camera, +-180 = back to it


def _hex(colour: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(c * 255)):02x}" for c in colour)


def _hsv(rng: np.random.Generator, saturation=(0.45, 0.95), value=(0.35, 0.95)) -> np.ndarray:
    hue = rng.uniform(0, 180)
    pixel = np.array([[[hue, rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]], np.float32)
    return cv2.cvtColor(pixel.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255


def _garment(rng: np.random.Generator, avoid: str | None = None) -> Garment:
    pattern = str(rng.choice([p for p in PATTERNS if p != avoid]))
    base = _hsv(rng)
    accent = _hsv(rng, saturation=(0.0, 0.9), value=(0.15, 1.0))
    while np.abs(accent - base).sum() < 0.5:  # keep the two colours of a pattern apart
        accent = _hsv(rng, saturation=(0.0, 0.9), value=(0.15, 1.0))
    return Garment(pattern, base, accent, float(rng.uniform(0.05, 0.1)), bool(rng.random() < 0.5))


def random_figure(rng: np.random.Generator, num_frames: int) -> Figure:
    """Draw the look and the motion of one clip."""
    grey = rng.uniform(0.82, 0.97)
    background = np.clip(grey + rng.normal(0, 0.02, 3), 0, 1)
    skin = np.array([0.96, 0.80, 0.69]) * rng.uniform(0.45, 1.0) + rng.normal(0, 0.02, 3)
    hair = np.array([0.25, 0.17, 0.10]) * rng.uniform(0.3, 2.8) + rng.normal(0, 0.02, 3)
    dress = bool(rng.random() < 0.65)
    front = _garment(rng)
    back = _garment(rng, avoid=front.pattern) if rng.random() < 0.6 else Garment(
        front.pattern if front.pattern != "solid" else "stripes", front.accent, front.base,
        front.period * 1.5, not front.horizontal_split)  # same garment, colours swapped
    action = str(rng.choice(ACTIONS, p=[0.5, 0.2, 0.15, 0.15]))
    turn = action == "turn"
    start_view = float(rng.choice([0.0, math.pi / 2, -math.pi / 2, math.pi], p=[0.75, 0.08, 0.08, 0.09]))
    partial_turn = float(rng.choice([-1, 1]) * rng.uniform(math.pi / 3, math.pi)) if rng.random() < 0.25 else 0.0
    poses = ("down", "hip", "raised", "forward")
    keys, t = [], 0.0
    while t <= 1.0:
        keys.append((t, str(rng.choice(poses, p=[0.6, 0.25, 0.05, 0.1])), str(rng.choice(poses, p=[0.6, 0.25, 0.05, 0.1]))))
        t += rng.uniform(0.25, 0.6) if action == "pose" else 2.0
    return Figure(
        background=background, skin=np.clip(skin, 0, 1), hair=np.clip(hair, 0, 1),
        hair_long=bool(rng.random() < 0.6),
        legwear=_hsv(rng, value=(0.1, 0.6)) if not dress else np.clip(skin, 0, 1),
        shoes=_hsv(rng, saturation=(0, 0.6), value=(0.05, 0.5)), dress=dress,
        hem=float(rng.uniform(0.6, 0.8) if dress else rng.uniform(0.47, 0.55)),
        flare=float(rng.uniform(1.05, 1.8) if dress else 1.0), sleeves=bool(rng.random() < 0.5),
        front=front, back=back, scale=float(rng.uniform(0.8, 0.93)), centre=float(rng.uniform(0.42, 0.58)),
        action=action, start_angle=start_view + float(rng.normal(0, 0.15)),
        turn_amount=float(rng.choice([math.pi, -math.pi, 2 * math.pi, -2 * math.pi], p=[0.35, 0.35, 0.15, 0.15]) if turn
                          else partial_turn + rng.normal(0, 0.25)),
        turn_start=float(rng.uniform(0.0, 0.3)), turn_duration=float(rng.uniform(0.5, 0.7)),
        sway_amplitude=float(rng.uniform(0.02, 0.05) if action == "sway" else rng.uniform(0.0, 0.012)),
        sway_period=float(rng.uniform(0.6, 1.4) * num_frames), sway_phase=float(rng.uniform(0, 2 * math.pi)),
        step_distance=float(rng.uniform(0.1, 0.25) * rng.choice([-1, 1]) if action == "step" else 0.0),
        step_period=float(rng.uniform(0.35, 0.6) * num_frames), pose_keys=keys)


def wrap_degrees(angle: float) -> float:
    """An angle in degrees wrapped to [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def _ease(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


# Arm poses: (upper arm, forearm) angles away from hanging straight down (outwards > 0), and
# their forward swings towards the viewer, in radians.
ARM_POSES = {
    "down": (0.12, 0.05, 0.0, 0.0), "hip": (0.65, -1.1, 0.0, 0.0),
    "raised": (2.5, 2.3, 0.0, 0.0), "forward": (0.15, 0.1, 0.3, 1.3),
}


def _limb_direction(side: int, angle: float, swing: float) -> np.ndarray:
    """Unit direction (x right, y down, z forward) of a limb segment on the `side` (-1 / 1)."""
    return np.array([side * math.sin(angle), math.cos(angle) * math.cos(swing), math.cos(angle) * math.sin(swing)])


def _arm_pose(figure: Figure, progress: float, side: int) -> np.ndarray:
    keys = figure.pose_keys
    for (t0, *p0), (t1, *p1) in zip(keys, keys[1:] + [(2.0, *keys[-1][1:])]):
        if t0 <= progress < t1:
            blend = _ease((progress - t0) / min(t1 - t0, 0.25))
            a, b = np.array(ARM_POSES[p0[side]]), np.array(ARM_POSES[p1[side]])
            return a + (b - a) * blend
    return np.array(ARM_POSES[keys[-1][1 + side]])


def _pattern_value(garment: Garment, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """1 where the accent colour shows, 0 for the base colour; u, v in figure heights."""
    p = garment.period
    if garment.pattern == "solid":
        return np.zeros_like(u)
    if garment.pattern == "stripes":
        return (np.floor(v / p) % 2).astype(np.float64)
    if garment.pattern == "vertical_stripes":
        return (np.floor(u / p) % 2).astype(np.float64)
    if garment.pattern == "dots":
        du, dv = (u % p) - p / 2, (v % p) - p / 2
        return (du * du + dv * dv < (0.3 * p) ** 2).astype(np.float64)
    if garment.pattern == "checks":
        return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float64)
    if garment.horizontal_split:  # blocks
        return (v > 0.16).astype(np.float64)
    return (u > 0).astype(np.float64)


def _garment_halfwidth(figure: Figure, y: np.ndarray) -> np.ndarray:
    """Half-width of the front view of the garment at heights y (fractions of the figure)."""
    knots_y = [SHOULDER_Y - 0.005, WAIST_Y, HIP_Y, max(figure.hem, HIP_Y + 0.01)]
    hem_w = HIP_W * figure.flare if figure.dress else HIP_W * 1.02
    return np.interp(y, knots_y, [SHOULDER_W * 0.95, WAIST_W, HIP_W, hem_w])


def body_angle(figure: Figure, frame_index: int, num_frames: int) -> float:
    """The body's yaw in radians at a frame (0 = facing the camera), unwrapped."""
    progress = frame_index / max(num_frames - 1, 1)
    return figure.start_angle + figure.turn_amount * _ease((progress - figure.turn_start) / figure.turn_duration)


def render_frame(figure: Figure, frame_index: int, num_frames: int, height: int, width: int):
    """Draw one frame. Returns (rgb float [h, w, 3] in [0, 1], garment mask bool [h, w],
    keypoints float [18, 3] (x, y in [0, 1], visibility 0/1; `KEYPOINT_NAMES` order))."""
    s = SUPERSAMPLE
    H, W = height * s, width * s
    progress = frame_index / max(num_frames - 1, 1)
    angle = body_angle(figure, frame_index, num_frames)
    sway = figure.sway_amplitude * math.sin(2 * math.pi * frame_index / figure.sway_period + figure.sway_phase)
    step_phase = 2 * math.pi * frame_index / figure.step_period
    walk = figure.step_distance * _ease(progress)
    bob = 0.006 * abs(math.sin(step_phase)) if figure.step_distance else 0.0

    size = figure.scale * H  # figure height in pixels
    top = H * 0.97 - size - bob * size
    cx = W * figure.centre + (sway * 0.5 + walk) * size
    cos_a, sin_a = math.cos(angle), math.sin(angle)

    def project(x, y, z, lean_with_height=True):
        """Body coordinates (figure heights; x right, y down from the head, z forward) -> pixels."""
        lean = sway * (1 - y) if lean_with_height else 0.0  # hips sway more than the head
        px = cx + (x * cos_a + z * sin_a + lean) * size
        return px, top + y * size, -x * sin_a + z * cos_a  # (x, y, depth towards the viewer)

    image = np.empty((H, W, 3), np.float64)
    rows = np.linspace(1.0, 0.88, H)[:, None]  # studio light: brighter at the top
    image[:] = figure.background[None, None, :] * rows[..., None]
    floor_y = int(H * 0.97)
    cv2.ellipse(image, (int(cx), floor_y), (int(0.12 * size), int(0.015 * size)), 0, 0, 360,
                tuple(figure.background * 0.7), -1)  # shadow

    limbs = []  # (depth, draw function): painter's order around the torso
    joints = {}  # keypoint name -> projected (x, y, depth) in supersampled pixels

    # legs: hip -> knee -> ankle; stepping lifts the knees alternately
    for side in (-1, 1):
        lift = max(0.0, math.sin(step_phase + (0 if side < 0 else math.pi))) if figure.step_distance else 0.0
        hip = project(side * 0.06, HIP_Y + 0.03, 0.0)
        knee = project(side * 0.065, 0.73 - 0.03 * lift, 0.05 * lift)
        ankle = project(side * 0.065, 0.97 - 0.04 * lift, 0.01 * lift)
        name = "r" if side < 0 else "l"  # facing the camera, the figure's right is the frame's left
        joints.update({f"{name}_hip": hip, f"{name}_knee": knee, f"{name}_ankle": ankle})
        depth = (hip[2] + knee[2]) / 2 - 0.5  # legs are behind the skirt
        limbs.append((depth, _polyline_drawer([hip, knee, ankle], 0.055 * size, figure.legwear, figure.skin,
                                              HIP_Y + 0.03, figure.hem, size, top, figure.shoes)))

    # arms: shoulder -> elbow -> hand
    for side in (-1, 1):
        upper_angle, fore_angle, upper_swing, fore_swing = _arm_pose(figure, progress, 0 if side < 0 else 1)
        shoulder = np.array([side * (SHOULDER_W - 0.015), SHOULDER_Y + 0.01, 0.0])
        elbow = shoulder + 0.16 * _limb_direction(side, upper_angle, upper_swing)
        hand = elbow + 0.15 * _limb_direction(side, fore_angle, fore_swing)
        points = [project(*p) for p in (shoulder, elbow, hand)]
        name = "r" if side < 0 else "l"
        joints.update({f"{name}_shoulder": points[0], f"{name}_elbow": points[1], f"{name}_wrist": points[2]})
        depth = np.mean([p[2] for p in points]) + (0.02 if abs(cos_a) > 0.3 else 0.0)
        sleeve = figure.front.base if figure.sleeves else None
        limbs.append((depth, _arm_drawer(points, 0.045 * size, figure.skin, sleeve, size)))

    behind = [draw for depth, draw in sorted(limbs, key=lambda item: item[0]) if depth < 0]
    in_front = [draw for depth, draw in sorted(limbs, key=lambda item: item[0]) if depth >= 0]
    for draw in behind:
        draw(image)

    # neck and head
    head_c = project(0.0, HEAD_Y, 0.0, lean_with_height=False)
    neck_top, neck_bottom = project(0, HEAD_Y + 0.05, 0), project(0, SHOULDER_Y, 0)
    cv2.line(image, (int(neck_top[0]), int(neck_top[1])), (int(neck_bottom[0]), int(neck_bottom[1])),
             tuple(figure.skin * 0.92), max(1, int(0.05 * size)))
    _draw_head(image, figure, head_c, angle, size)

    # garment: an elliptic cylinder, textured by the body angle of each visible point
    mask = np.zeros((H, W), bool)
    y0, y1 = int(top + (SHOULDER_Y - 0.005) * size), int(top + figure.hem * size)
    ys = np.arange(max(y0, 0), min(y1, H))
    if len(ys):
        fy = (ys + 0.5 - top) / size  # fraction of figure height
        half = _garment_halfwidth(figure, fy) * math.hypot(cos_a, DEPTH_RATIO * sin_a) * size
        centre = cx + sway * (1 - fy) * size
        xs = np.arange(W) + 0.5
        x_norm = (xs[None, :] - centre[:, None]) / half[:, None]  # [rows, W]
        inside = np.abs(x_norm) < 1
        # body angle of the visible surface point: screen position -> angle on the section
        phase = math.atan2(DEPTH_RATIO * sin_a, cos_a)
        beta = np.arcsin(np.clip(x_norm, -1, 1)) - phase
        beta = (beta + math.pi) % (2 * math.pi) - math.pi  # 0 = front centre, +-pi = back centre
        front_side = np.abs(beta) < math.pi / 2
        width_ref = _garment_halfwidth(figure, fy)[:, None]
        v = (fy - SHOULDER_Y)[:, None] * np.ones_like(x_norm)
        u_front = beta * width_ref
        u_back = (np.where(beta > 0, beta - math.pi, beta + math.pi)) * width_ref
        accent_f = _pattern_value(figure.front, u_front, v)
        accent_b = _pattern_value(figure.back, u_back, v)
        colour_f = figure.front.base + accent_f[..., None] * (figure.front.accent - figure.front.base)
        colour_b = figure.back.base + accent_b[..., None] * (figure.back.accent - figure.back.base)
        colour = np.where(front_side[..., None], colour_f, colour_b)
        shade = 0.72 + 0.28 * np.sqrt(np.clip(1 - x_norm ** 2, 0, 1))  # rounder look
        region = image[ys]
        region[inside] = (colour * shade[..., None])[inside]
        image[ys] = region
        mask[ys] = inside

    # a top shows its skirt or trousers below; a dress shows legs (already drawn)
    for draw in in_front:
        before = image.copy()
        draw(image)
        mask &= ~np.any(image != before, axis=-1)

    rgb = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0.5
    keypoints = _keypoints(joints, head_c, angle, size, cx, sway, top, W, H)
    return np.clip(rgb, 0, 1), small_mask, keypoints


def _keypoints(joints: dict, head_centre, angle: float, size: float, cx: float, sway: float, top: float,
               W: int, H: int) -> np.ndarray:
    """OpenPose-18 keypoints of a drawn frame: float [18, 3] (x / W, y / H, visibility).

    Body joints come from the drawing's own projection; the neck is the shoulder midpoint (as in
    OpenPose's COCO-18 output). Face points sit on the head as `_draw_head` draws it: eyes at
    body x = +-0.35, nose at the front (z = 1), ears at the sides (x = +-1), in head radii.
    """
    r = HEAD_R * size
    cos_a, sin_a = math.cos(angle), math.sin(angle)

    def on_head(x, z, dy):  # body-frame offset on the head -> (px, py, depth)
        return (head_centre[0] + (x * cos_a + z * sin_a) * 0.85 * r, head_centre[1] + dy * r, -x * sin_a + z * cos_a)

    shoulders = (np.array(joints["r_shoulder"]) + np.array(joints["l_shoulder"])) / 2
    joints = dict(joints, neck=tuple(shoulders), nose=on_head(0.0, 1.0, 0.3),
                  r_eye=on_head(-0.35, 0.9, 0.1), l_eye=on_head(0.35, 0.9, 0.1),
                  r_ear=on_head(-1.0, 0.0, 0.1), l_ear=on_head(1.0, 0.0, 0.1))
    torso_half = SHOULDER_W * math.hypot(cos_a, DEPTH_RATIO * sin_a) * size  # on screen
    out = np.zeros((len(KEYPOINT_NAMES), 3), np.float32)
    for i, name in enumerate(KEYPOINT_NAMES):
        x, y, depth = joints[name]
        if name in ("nose", "r_eye", "l_eye"):
            visible = depth > 0.3  # drawn only when facing the camera enough
        elif name.endswith("_ear"):
            visible = depth > -0.5  # the far ear hides behind the head side-on
        else:  # behind the torso's silhouette (the far arm or leg side-on)
            centre = cx + sway * (1 - (y - top) / size) * size
            visible = depth > -0.03 or abs(x - centre) > torso_half
        inside = 0 <= x < W and 0 <= y < H
        out[i] = (x / W, y / H, float(visible and inside))
    return out

def _polyline_drawer(points, thickness, legwear, skin, hip_y, hem_y, size, top, shoes):
    """A leg: the upper part in legwear colour (skirt/trousers/skin), shoe at the ankle."""

    def draw(image):
        pts = [(int(p[0]), int(p[1])) for p in points]
        t = max(1, int(thickness))
        for a, b in zip(pts, pts[1:]):
            cv2.line(image, a, b, tuple(skin * 0.95), t)
        # trousers/skirt lining over the thigh when the legwear is not skin
        if not np.allclose(legwear, skin):
            cv2.line(image, pts[0], pts[1], tuple(legwear), t + 2)
            cv2.line(image, pts[1], pts[2], tuple(legwear), t + 1)
        cv2.ellipse(image, (pts[2][0], pts[2][1]), (max(1, int(thickness * 0.8)), max(1, int(thickness * 0.45))),
                    0, 0, 360, tuple(shoes), -1)

    return draw


def _arm_drawer(points, thickness, skin, sleeve, size):
    def draw(image):
        pts = [(int(p[0]), int(p[1])) for p in points]
        t = max(1, int(thickness))
        cv2.line(image, pts[0], pts[1], tuple(sleeve if sleeve is not None else skin), t)
        cv2.line(image, pts[1], pts[2], tuple(skin), max(1, int(t * 0.85)))
        cv2.circle(image, pts[2], max(1, int(t * 0.55)), tuple(skin), -1)

    return draw


def _draw_head(image, figure: Figure, centre, angle: float, size: float):
    cx, cy = int(centre[0]), int(centre[1])
    r = HEAD_R * size
    facing = math.cos(angle)  # 1 = face to the camera, -1 = back of the head
    if figure.hair_long:  # hair falling to the shoulders, behind the face
        cv2.ellipse(image, (cx, int(cy + 0.6 * r)), (int(r * 1.15), int(r * 1.6)), 0, 0, 360, tuple(figure.hair), -1)
    cv2.ellipse(image, (cx, cy), (int(r * 0.85), int(r)), 0, 0, 360, tuple(figure.skin), -1)
    # hair cap: covers the top when facing, the whole head from behind
    cover = 0.5 + 0.5 * (1 - facing)  # 0.5 .. 1.5
    cv2.ellipse(image, (cx, int(cy - r * (0.45 - 0.45 * (cover - 0.5)))), (int(r * 0.92), int(r * (0.6 + 0.45 * (cover - 0.5)))),
                0, 0, 360, tuple(figure.hair), -1)
    if facing > 0.05:  # eyes and mouth on the face, sliding sideways as the head turns
        for ex in (-0.35, 0.35):
            x = ex * math.cos(angle) + 0.9 * math.sin(angle)
            if -ex * math.sin(angle) + 0.9 * math.cos(angle) > 0.3:
                cv2.circle(image, (int(cx + x * r * 0.85), int(cy + 0.1 * r)), max(1, int(0.11 * r)), (0.1, 0.08, 0.07), -1)
        mx = 0.9 * math.sin(angle)
        cv2.ellipse(image, (int(cx + mx * r * 0.85), int(cy + 0.5 * r)), (max(1, int(0.22 * r * facing)), max(1, int(0.06 * r))),
                    0, 0, 360, (0.65, 0.3, 0.3), -1)


def clip_seed(seed: int, index: int) -> int:
    """Seed of clip `index` in a dataset generated with `seed` (stable across versions of numpy)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def render_clip(seed: int, num_frames: int = 32, height: int = 128, width: int = 128) -> Clip:
    """Render one clip. Returns Clip(frames uint8 [f, h, w, 3], garment_mask bool [f, h, w], figure)."""
    if num_frames < 1 or height < 16 or width < 16:
        raise ValueError(f"render_clip needs num_frames >= 1 and a size of at least 16x16, got "
                         f"{num_frames} frames of {height}x{width}")
    rng = np.random.default_rng(seed)
    figure = random_figure(rng, num_frames)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    masks = np.empty((num_frames, height, width), bool)
    keypoints = np.empty((num_frames, len(KEYPOINT_NAMES), 3), np.float32)
    for index in range(num_frames):
        rgb, masks[index], keypoints[index] = render_frame(figure, index, num_frames, height, width)
        frames[index] = np.round(rgb * 255).astype(np.uint8)
    yaw = np.array([wrap_degrees(math.degrees(body_angle(figure, i, num_frames))) for i in range(num_frames)],
                   np.float32)
    return Clip(frames, masks, figure, keypoints, yaw)


def pose_sidecar_path(video_path: str | Path) -> Path:
    """NAME.mp4 -> NAME.pose.npz beside it."""
    video_path = Path(video_path)
    return video_path.with_name(video_path.stem + POSE_SIDECAR_SUFFIX)


def write_pose_sidecar(video_path: str | Path, keypoints: np.ndarray, yaw: np.ndarray) -> Path:
    """Save a clip's keypoints [f, 18, 3] and yaw [f] beside its video, atomically."""
    from fashionflow.utils import atomic_path

    path = pose_sidecar_path(video_path)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, keypoints=keypoints.astype(np.float32), yaw=yaw.astype(np.float32))
    return path


def read_pose_sidecar(video_path: str | Path) -> dict[str, np.ndarray] | None:
    """The sidecar of a video as {"keypoints": float32 [f, 18, 3], "yaw": float32 [f]}, None if there is none."""
    path = pose_sidecar_path(video_path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        keypoints, yaw = data["keypoints"], data["yaw"]
    if keypoints.ndim != 3 or keypoints.shape[1:] != (len(KEYPOINT_NAMES), 3) or yaw.shape != keypoints.shape[:1]:
        raise ValueError(f"{path}: expected keypoints [f, 18, 3] and yaw [f], got {keypoints.shape} and {yaw.shape}")
    return {"keypoints": keypoints, "yaw": yaw}


def split_of(index: int, num_videos: int, test_fraction: float) -> str:
    """The last round(num_videos * test_fraction) clips (at least one when asked for) are test."""
    num_test = 0 if test_fraction <= 0 else max(1, round(num_videos * test_fraction))
    return "test" if index >= num_videos - num_test else "train"


def write_clip(index: int, output_dir: Path, num_videos: int, seed: int, num_frames: int, height: int, width: int,
               test_fraction: float, fps: float, prefix: str) -> dict:
    """Render clip `index` of a dataset, write its mp4 and pose sidecar; returns its manifest entry."""
    from fashionflow.video_io import write_mp4

    split = split_of(index, num_videos, test_fraction)
    seed_i = clip_seed(seed, index)
    clip = render_clip(seed_i, num_frames, height, width)
    path = output_dir / split / f"{prefix}_{index:05d}.mp4"
    write_mp4(path, clip.frames, fps=fps)
    write_pose_sidecar(path, clip.keypoints, clip.yaw)
    return {"file": f"{split}/{path.name}", "split": split, "seed": seed_i, **clip.figure.describe()}


def generate_dataset(output_dir: str | Path, num_videos: int, seed: int = 0, num_frames: int = 32,
                     height: int = 128, width: int = 128, test_fraction: float = 1 / 6, fps: float = 25.0,
                     log=print, prefix: str = "synthetic", workers: int = 1) -> list[dict]:
    """Write `num_videos` clips to output_dir/{train,test}/PREFIX_NNNNN.mp4 and a manifest.

    Datasets of other seeds written with other prefixes project into one latents folder without
    their names colliding (projection skips a clip whose name is already there). Every clip has
    its own seed (`clip_seed`), so `workers` processes write the same dataset as one does."""
    from fashionflow.utils import atomic_write_text

    output_dir = Path(output_dir)
    clip_writer = functools.partial(write_clip, output_dir=output_dir, num_videos=num_videos, seed=seed,
                                    num_frames=num_frames, height=height, width=width, test_fraction=test_fraction,
                                    fps=fps, prefix=prefix)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            entries = list(pool.map(clip_writer, range(num_videos), chunksize=max(1, num_videos // (8 * workers))))
    else:
        entries = [clip_writer(index) for index in range(num_videos)]
    manifest = {"seed": seed, "num_frames": num_frames, "height": height, "width": width, "fps": fps,
                "clips": entries}
    atomic_write_text(output_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render procedural fashion clips in the UBC layout (train/, test/).")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-videos", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--test-fraction", type=float, default=1 / 6, help="share of clips in test/ (UBC: 100 of 600)")
    parser.add_argument("--prefix", default="synthetic",
                        help="clip names PREFIX_NNNNN.mp4: give datasets of other seeds their own, so their latents "
                             "can share a folder")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes rendering and encoding clips at once (the dataset is the same for any number)")
    args = parser.parse_args(argv)
    if args.num_videos < 1:
        parser.error("--num-videos must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not 0 <= args.test_fraction < 1:
        parser.error("--test-fraction must be in [0, 1)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", args.prefix):
        parser.error(f"--prefix {args.prefix!r}: letters, digits, '_' and '-' only (it names files)")
    started = time.perf_counter()
    entries = generate_dataset(args.output_dir, args.num_videos, args.seed, args.frames, args.height, args.width,
                               args.test_fraction, args.fps, prefix=args.prefix, workers=args.workers)
    num_test = sum(e["split"] == "test" for e in entries)
    print(f"wrote {len(entries) - num_test} train and {num_test} test clips of {args.frames} frames "
          f"({args.height}x{args.width}) to {args.output_dir} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
