"""How alike two body poses are: the distance that routes each frame to the reference views
that show what it shows (`model.reference_pose_routing`, models/references.py).

ProFashion's Pose-aware Prototype Aggregator (Kong et al.; ../shared/reference/PROFASHION.md)
weights each reference by the similarity of its pose to the frame's driving pose, learned from
pose features. Here the similarity is geometric and needs no training: OpenPose-18 labels a
joint by the body's side, so a body seen from the back has its right joints on the right of
the image and from the front on the left, and the keypoints of a front and a back view differ
by about the shoulder width at every labelled pair while two front views nearly coincide; a side
view lies between. Per pose:

    centre = mean of the visible torso joints (neck, shoulders, hips; all visible joints if none)
    scale  = vertical extent of the visible torso joints (of all visible joints if under 2 torso
             joints are visible): unchanged by yaw, unlike any width
    p_hat  = (p - centre) / scale
    distance(a, b) = mean over the joints visible in both of |p_hat_a - p_hat_b|^2

so translation and framing (a close-up reference, a full-body frame) do not count. Pairs with no
joint visible in both have no distance (returned as NaN: unknown).
"""

from __future__ import annotations

import torch

from fashionflow.pose.keypoints import CONFIDENCE_THRESHOLD, JOINT

TORSO_JOINTS = (JOINT["neck"], JOINT["right_shoulder"], JOINT["left_shoulder"], JOINT["right_hip"], JOINT["left_hip"])
MIN_SCALE = 1e-3  # of the frame height: a degenerate pose (one joint) is not blown up to infinity


def normalised_pose(keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keypoints [..., 18, 3] (x, y in [0, 1], confidence) -> (positions [..., 18, 2] centred
    on the torso and divided by its height, visible bool [..., 18])."""
    position, visible = keypoints[..., :2].float(), keypoints[..., 2] >= CONFIDENCE_THRESHOLD
    torso = torch.zeros_like(visible)
    torso[..., list(TORSO_JOINTS)] = True
    torso = torso & visible
    enough_torso = torso.sum(-1, keepdim=True) >= 2  # ... 1
    chosen = torch.where(enough_torso, torso, visible)  # ... 18: the joints that set centre and scale
    weight = chosen.float()[..., None]  # ... 18 1
    centre = (position * weight).sum(-2, keepdim=True) / weight.sum(-2, keepdim=True).clamp(min=1)  # ... 1 2
    y = position[..., 1]
    top = torch.where(chosen, y, torch.full_like(y, float("inf"))).amin(-1)
    bottom = torch.where(chosen, y, torch.full_like(y, float("-inf"))).amax(-1)
    scale = torch.where(chosen.any(-1), bottom - top, torch.ones_like(top)).clamp(min=MIN_SCALE)  # ...
    return (position - centre) / scale[..., None, None], visible


def pose_distance(frames: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """frames [b, f, 18, 3], references [b, r, 18, 3] -> distance [b, f, r] (module docstring);
    NaN where a frame and a reference share no visible joint."""
    frame_position, frame_visible = normalised_pose(frames)  # b f 18 2, b f 18
    reference_position, reference_visible = normalised_pose(references)  # b r 18 2, b r 18
    both = (frame_visible[:, :, None] & reference_visible[:, None]).float()  # b f r 18
    squared = (frame_position[:, :, None] - reference_position[:, None]).square().sum(-1)  # b f r 18
    count = both.sum(-1)
    distance = (squared * both).sum(-1) / count.clamp(min=1)
    return torch.where(count > 0, distance, torch.full_like(distance, float("nan")))


def pose_routing_bias(frames: torch.Tensor, references: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Attention logits to add per frame and reference: frames [b, f, 18, 3], references
    [b, r, 18, 3] -> bias [b, f, r] = -sharpness * distance, shifted so each frame's nearest
    reference gets 0. A pair with unknown distance gets the mean bias of the frame's known pairs
    (0 when the frame has none: every reference alike), so a missing pose neither wins nor loses."""
    bias = -sharpness * pose_distance(frames, references)  # b f r, NaN = unknown
    known = ~torch.isnan(bias)
    best = torch.where(known, bias, torch.full_like(bias, float("-inf"))).amax(-1, keepdim=True)
    bias = bias - torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    mean_known = torch.where(known, bias, torch.zeros_like(bias)).sum(-1, keepdim=True) / known.sum(
        -1, keepdim=True).clamp(min=1)
    return torch.where(known, bias, mean_known.expand_as(bias))


def view_logits(frames: torch.Tensor, references: torch.Tensor, reference_mask: torch.Tensor,
                posed: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Per frame, logits over the views a video has: the input image (posed as frame 0) and each
    reference. frames [b, f, 18, 3] (driving keypoints; frame 0 = the image's pose), references
    [b, r, 18, 3], reference_mask bool [b, r], posed bool [b] (False: the video's pose is
    dropped) -> [b, f, 1 + r]. A masked reference, one of unknown pose, and every reference of an
    unposed video get -inf, so such frames see the image alone, as without references."""
    candidates = torch.cat((frames[:, :1], references), dim=1)  # b (1 + r) 18 3
    logits = pose_routing_bias(frames, candidates, sharpness)
    known = (references[..., 2] >= CONFIDENCE_THRESHOLD).any(-1)  # b r
    usable = torch.cat((torch.ones_like(reference_mask[:, :1]), reference_mask & known & posed[:, None]), dim=1)
    return logits.masked_fill(~usable[:, None], float("-inf"))
