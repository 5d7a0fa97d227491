"""Loading user images as the conditioning image (FASHIONFLOW.md, "Data": resize + ToTensor).

Released: the photo is resized to height x width (640 x 512) with bilinear interpolation,
ignoring its aspect ratio, and converted to float [0, 1]. Every input a user may hand us
becomes either that tensor or an `ImageLoadError` whose message is one line naming the file
and the reason:

- missing file, broken symbolic link, folder, empty file, not an image, truncated/corrupt: error.
- grayscale, CMYK, palette: converted to RGB. RGBA / LA / palette with transparency:
  composited on white (the studio background of UBC Fashion).
- 16-bit grayscale: scaled from 0..65535 (PIL's own RGB conversion would clip it to white);
  16-bit RGB is read by PIL as 8-bit RGB already.
- EXIF orientation: applied, so the photo is upright as a viewer shows it.
- smaller than MIN_SIDE pixels a side: error (nothing to see); larger than PIL's
  decompression-bomb limit (about 179 megapixels): error; anything in between is resized.
- other aspect ratios, by `resize`: "stretch" (released: squash to the target size),
  "crop" (centre-crop to the target aspect, then resize) or "pad" (fit inside, pad with white).
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fashionflow.utils import list_inputs, unreadable_reason

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MIN_SIDE = 32
RESIZE_POLICIES = ("stretch", "crop", "pad")
Resize = Literal["stretch", "crop", "pad"]
BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """An input image cannot be used; the message is one line: `path: reason`."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Files with an image extension directly inside `folder`, sorted by name; broken symbolic
    links included (loading them says so), hidden files not (fashionflow.utils.list_inputs)."""
    return list_inputs(folder, IMAGE_EXTENSIONS)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency composited on white, 16-bit grey rescaled."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grey
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max() > 255):
            values = values / 65535.0 * 255.0
        elif mode == "F" and values.max() <= 1.0:
            values = values * 255.0
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1))
    return image.convert("RGB")


def resize_image(image: Image.Image, height: int, width: int, resize: Resize = "stretch") -> Image.Image:
    """RGB PIL image -> exactly width x height, bilinear (PIL's, as torchvision's Resize on PIL images)."""
    if resize == "crop":
        w, h = image.size
        scale = min(w / width, h / height)
        crop_w, crop_h = round(width * scale), round(height * scale)
        left, top = (w - crop_w) // 2, (h - crop_h) // 2
        image = image.crop((left, top, left + crop_w, top + crop_h))
    elif resize == "pad":
        w, h = image.size
        scale = min(width / w, height / h)
        inner = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        canvas = Image.new("RGB", (width, height), BACKGROUND)
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    elif resize != "stretch":
        raise ValueError(f"unknown resize policy {resize!r} (one of {', '.join(RESIZE_POLICIES)})")
    return image.resize((width, height), Image.BILINEAR)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float [3, H, W] in [0, 1] (torchvision's ToTensor)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def to_uint8(image01: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [0, 1] -> uint8 [H, W, 3] (the inverse of `image_to_tensor`)."""
    return (image01.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open, decode, apply EXIF orientation and convert to RGB; ImageLoadError with one line otherwise."""
    path = Path(path)
    reason = unreadable_reason(path)
    if reason is not None:
        raise ImageLoadError(f"{path}: {reason}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                image = to_rgb(image)
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{path}: image too large to decode safely ({_first_line(error)})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file (no decoder recognises it)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageLoadError(f"{path}: cannot decode the image ({_first_line(error)})") from None
    if min(image.size) < MIN_SIDE:
        raise ImageLoadError(f"{path}: image is too small ({image.width}x{image.height}; "
                             f"at least {MIN_SIDE} px a side)")
    return image


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def load_image(path: str | os.PathLike, height: int = 640, width: int = 512, resize: Resize = "stretch"
               ) -> torch.Tensor:
    """An image file -> float [3, height, width] in [0, 1], ready for the pipeline."""
    return image_to_tensor(resize_image(open_image(path), height, width, resize))


def frame_to_tensor(frame: np.ndarray, height: int = 640, width: int = 512, resize: Resize = "stretch"
                    ) -> torch.Tensor:
    """A decoded video frame uint8 [h, w, 3] RGB -> float [3, height, width] in [0, 1]."""
    return image_to_tensor(resize_image(Image.fromarray(frame), height, width, resize))


def random_video_frame(path: str | os.PathLike, rng: random.Random, window: int = 241, num_frames: int = 70
                       ) -> tuple[np.ndarray, int]:
    """Released inference: a random frame in [0, window - num_frames] of a test video.

    Returns (frame uint8 [h, w, 3], index). A video too short for the drawn index gives its
    first frame. Raises fashionflow.video_io.VideoReadError naming the file when undecodable.
    """
    from fashionflow.video_io import VideoReadError, read_video

    index = rng.randint(0, max(0, window - num_frames))
    try:
        frames, _ = read_video(path, start=index, num_frames=1)
    except VideoReadError:
        index = 0
        frames, _ = read_video(path, start=0, num_frames=1)
    return frames[0], index
