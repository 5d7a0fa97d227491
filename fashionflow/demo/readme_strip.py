"""The README's demo picture: per video, the input photo, a gap, then 8 frames spread over the video.

    python inference.py --output-dir result --overwrite   # the demo model on fashion_dataset/demo/*.png
    python -m fashionflow.demo.readme_strip --results result --output docs/demo_frames.png \
        synthetic_00200 synthetic_00201

Reads `RESULTS/NAME_0_input.png` and `RESULTS/NAME_0.mp4` (what `inference.py` writes) and
stacks one row per name, so the input sits beside its output and the colours can be compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

GAP = 4  # white pixels between the input and the frames, and between rows
WHITE = 255


def strip_row(photo: np.ndarray, frames: np.ndarray, num_frames: int = 8) -> np.ndarray:
    """photo uint8 [h, w, 3] (the input, at the video's height), frames uint8 [f, h, w2, 3] -> [h, w + GAP + n * w2, 3]."""
    from fashionflow.video_io import contact_sheet

    if photo.shape[0] != frames.shape[1]:
        raise ValueError(f"the photo is {photo.shape[0]} px high, the video {frames.shape[1]}")
    gap = np.full((photo.shape[0], GAP, 3), WHITE, np.uint8)
    return np.concatenate([photo, gap, contact_sheet(frames, num_frames)], axis=1)


def readme_strip(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of equal width stacked with a white GAP between them."""
    gap = np.full((GAP, rows[0].shape[1], 3), WHITE, np.uint8)
    out = [rows[0]]
    for row in rows[1:]:
        out += [gap, row]
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from fashionflow.video_io import VideoReadError, read_video, write_image

    parser = argparse.ArgumentParser(description="Input photo beside frames of its video, one row per name.")
    parser.add_argument("names", nargs="+", help="input names as inference.py writes them (NAME_0.mp4)")
    parser.add_argument("--results", default="result")
    parser.add_argument("--output", default="docs/demo_frames.png")
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args(argv)
    rows = []
    for name in args.names:
        photo_path, video_path = Path(args.results) / f"{name}_0_input.png", Path(args.results) / f"{name}_0.mp4"
        try:
            frames, _ = read_video(video_path)
            photo = np.asarray(Image.open(photo_path).convert("RGB"))
        except (OSError, VideoReadError) as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 2
        photo = photo[:, : photo.shape[0] * frames.shape[2] // frames.shape[1]]  # the input alone, not its references
        rows.append(strip_row(photo, frames, args.frames))
    print(f"wrote {write_image(args.output, readme_strip(rows))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
