"""Which frames of a video become training clips (FASHIONFLOW.md, "Data"), and its seed.

Released: one window of `data.num_frames` (70) consecutive frames whose start is drawn
uniformly from [0, 241 - 70] (`data.start_window` = 241), once per video. Options: K such
windows per video (`k_random_windows`, distinct starts), or every non-overlapping window of
the whole video (`all_windows`). Each video's draws come from its own seed (derived from
`data.seed` and the file name), so a clip reproduces whatever the rank, order or resume.
"""

from __future__ import annotations

import hashlib

import numpy as np

from fashionflow.config import DataConfig


class ClipTooShortError(ValueError):
    """The video has fewer decodable frames than one clip needs."""


def video_seed(data_cfg: DataConfig, video_name: str) -> int:
    """A 63-bit seed from `data.seed` and the video's file name (not its folder or position)."""
    digest = hashlib.sha256(f"{data_cfg.seed}:{video_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def frames_needed(data_cfg: DataConfig) -> int | None:
    """How many leading frames the policy can use (None: the whole video)."""
    if data_cfg.clip_policy == "all_windows" or data_cfg.start_window <= 0:
        return None
    return data_cfg.start_window


def clip_starts(data_cfg: DataConfig, num_available: int, rng: np.random.Generator) -> list[int]:
    """Start frames (sorted) of the clips to take from a video with `num_available` frames.

    random_window / k_random_windows draw starts in [0, min(start_window, num_available) - f]
    (start_window <= 0: the whole video); all_windows takes 0, f, 2f, ... while a whole clip fits.
    """
    f = data_cfg.num_frames
    if num_available < f:
        raise ClipTooShortError(f"{num_available} decodable frames, a clip needs {f} (data.num_frames)")
    if data_cfg.clip_policy == "all_windows":
        return list(range(0, num_available - f + 1, f))
    limit = frames_needed(data_cfg)
    last_start = (num_available if limit is None else min(limit, num_available)) - f
    if data_cfg.clip_policy == "random_window":
        return [int(rng.integers(0, last_start + 1))]  # released: random.randint(0, 241 - 70)
    if data_cfg.clip_policy == "k_random_windows":
        k = min(data_cfg.clips_per_video, last_start + 1)
        return sorted(int(s) for s in rng.choice(last_start + 1, size=k, replace=False))
    raise ValueError(f"unknown data.clip_policy {data_cfg.clip_policy!r}")


def reference_candidate_frames(data_cfg: DataConfig, num_available: int) -> list[int]:
    """Frames of a video stored as reference candidates (`data.reference_candidates` of them):
    evenly spread over the whole video, first and last frame included, since a turn to the
    back often happens outside the clip's window."""
    k = data_cfg.reference_candidates
    return [int(i) for i in np.linspace(0, num_available - 1, k).round()] if k > 0 else []
