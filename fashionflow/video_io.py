"""Reading and writing videos and frame strips.

Decoding tries OpenCV first and falls back to imageio's ffmpeg reader, so anything either
can decode (mp4, mov, webm; any size, frame rate and length) is accepted. Writing uses
imageio-ffmpeg with H.264 / yuv420p, the combination every browser plays. All writes are
atomic (temporary file, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fashionflow.utils import list_inputs, unreadable_reason

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")


class VideoReadError(RuntimeError):
    """A video cannot be opened or decoded; the message names the file and the reason."""


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """Video files directly inside `folder`, sorted by name; broken symbolic links included (reading
    them says so), hidden files not: the temporary files of atomic writes and downloads in
    progress are not videos (fashionflow.utils.list_inputs)."""
    return list_inputs(folder, VIDEO_EXTENSIONS)


def read_video(path: str | os.PathLike, start: int = 0, num_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode frames [start, start + num_frames) of a video.

    Returns (frames, fps) with frames uint8 [f, h, w, 3] RGB. Raises VideoReadError naming the
    file when it is missing, cannot be decoded, or has fewer frames than asked for.
    """
    path = Path(path)
    reason = unreadable_reason(path)
    if reason is not None:
        raise VideoReadError(f"{path}: {reason}")
    frames, fps = _read_opencv(path, start, num_frames)
    if frames is None:
        frames, fps = _read_imageio(path, start, num_frames)
    if len(frames) == 0:
        raise VideoReadError(f"{path}: no decodable frames" + (f" from frame {start}" if start else ""))
    if num_frames is not None and len(frames) < num_frames:
        raise VideoReadError(f"{path}: only {len(frames) + start} decodable frames, need {start + num_frames}")
    return np.stack(frames), fps


def _read_opencv(path: Path, start: int, num_frames: int | None):
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return None, None
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        frames, index = [], 0
        while num_frames is None or len(frames) < num_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            if index >= start:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
        if not frames and index == 0:
            return None, None  # opencv could not decode anything: let imageio try
        return frames, fps
    finally:
        capture.release()


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else "no message"


def _read_imageio(path: Path, start: int, num_frames: int | None):
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(path), format="ffmpeg")
    except Exception as error:  # imageio raises several types for undecodable input
        raise VideoReadError(f"{path}: cannot open as a video ({type(error).__name__}: {_first_line(error)})") from None
    frames = []
    try:
        fps = float(reader.get_meta_data().get("fps") or 25.0)
        for index, frame in enumerate(reader):
            if index < start:
                continue
            frames.append(np.asarray(frame)[..., :3])
            if num_frames is not None and len(frames) >= num_frames:
                break
    except Exception as error:
        if not frames:
            raise VideoReadError(f"{path}: cannot decode ({type(error).__name__}: {_first_line(error)})") from None
    finally:
        reader.close()
    return frames, fps


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0, quality: int = 8) -> Path:
    """Write uint8 frames [f, h, w, 3] as an H.264 / yuv420p mp4, atomically.

    H.264 with yuv420p needs even sizes; odd sizes are padded by one pixel (edge colour).
    """
    import imageio.v2 as imageio

    from fashionflow.utils import atomic_path

    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"write_mp4 expects uint8 frames, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_mp4 expects frames [f, h, w, 3], got {tuple(frames.shape)}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = imageio.get_writer(str(tmp), format="ffmpeg", fps=fps, codec="libx264", quality=quality,
                                    pixelformat="yuv420p", macro_block_size=1,
                                    ffmpeg_params=["-movflags", "+faststart"])
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
    return Path(path)


def contact_sheet(frames: np.ndarray, max_frames: int = 8) -> np.ndarray:
    """Evenly spaced frames side by side in one strip: uint8 [h, n * w, 3]."""
    frames = np.asarray(frames)
    index = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    return np.concatenate(list(frames[index]), axis=1)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 [h, w, 3] image (PNG or JPEG by extension), atomically."""
    from PIL import Image

    from fashionflow.utils import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image)).save(tmp, format=None if Path(path).suffix else "PNG")
    return Path(path)
