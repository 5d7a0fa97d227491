"""Video loading and the input conventions of each metric's network.

- I3D (FVD, VFID-I3D): frames resized to 224x224 (bilinear, aspect ratio ignored, no
  antialiasing, as StyleGAN-V and common_metrics_on_video_quality do), scaled x / 127.5 - 1.
- Inception (FID, KID): 299x299 with TensorFlow-1 style bilinear resampling (the resize the
  TF-Inception graph of the original FID code applies), scaled x / 128 - 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from fashionflow.video_io import VideoReadError, read_video


def load_frames(path: str | os.PathLike, max_frames: int | None, start: int = 0) -> np.ndarray:
    """Frames [start, start + max_frames) (fewer if the video ends) as uint8 [f, h, w, 3]; raises VideoReadError."""
    try:
        frames, _ = read_video(path, start, max_frames)
    except VideoReadError:
        if max_frames is None:
            raise
        frames, _ = read_video(path, start, None)  # shorter than asked: keep what there is
    return frames[:max_frames] if max_frames else frames


def split_clips(frames: np.ndarray, num_frames: int, max_clips: int) -> list[np.ndarray]:
    """Consecutive non-overlapping clips of `num_frames` from the start (at most `max_clips`)."""
    count = min(len(frames) // num_frames, max_clips)
    return [frames[i * num_frames:(i + 1) * num_frames] for i in range(count)]


def _to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    frames = torch.as_tensor(np.asarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [f, h, w, 3], got {tuple(frames.shape)}")
    return rearrange(frames.float(), "f h w c -> f c h w")


def i3d_clip_tensor(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """uint8 frames [f, h, w, 3] -> I3D input [3, f, size, size] in [-1, 1]."""
    x = F.interpolate(_to_float(frames), size=(size, size), mode="bilinear", align_corners=False)
    return rearrange(x / 127.5 - 1.0, "f c h w -> c f h w").clamp(-1.0, 1.0)


def tf1_bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow-1 `resize_bilinear` (align_corners=False, no half-pixel centres); x [b, c, h, w].

    Sample positions are i * in / out, which grid_sample reaches by shifting an identity grid
    by (1/in - 1/out) in normalised coordinates (the resize of the StyleGAN2-ADA Inception port).
    """
    batch, _, height, width = x.shape
    theta = torch.tensor([[1.0, 0.0, 1.0 / width - 1.0 / size[1]],
                          [0.0, 1.0, 1.0 / height - 1.0 / size[0]]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(batch, 2, 3), [batch, x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_tensor(frames: np.ndarray, size: int = 299) -> torch.Tensor:
    """uint8 frames [f, h, w, 3] -> TF-Inception input [f, 3, size, size] scaled x / 128 - 1."""
    x = _to_float(frames)
    if x.shape[-2:] != (size, size):
        x = tf1_bilinear_resize(x, (size, size))
    return (x / 128.0 - 1.0).clamp(-1.0, 255.0 / 128.0 - 1.0)
