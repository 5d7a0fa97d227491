"""Simple, checkable quality measures for videos of one figure on a plain background.

Used by `fashionflow.demo.evaluate_demo` on held-out synthetic clips, where the ground truth
is known. All take uint8 videos [f, h, w, 3] (RGB) and return plain floats.

- `psnr`: peak signal-to-noise ratio in dB (8-bit scale); `masked_psnr` over chosen pixels.
- `motion`: mean absolute change between consecutive frames (0-255 scale): how much moves.
- `figure_mask`: the pixels that differ from the studio background (estimated from the border).
- `colour_histogram` / `histogram_distance`: a joint RGB histogram of the figure's pixels and
  the total-variation distance between two of them (0 = same colours, 1 = disjoint).
- `colour_distance`: how far (0-255) the colours of two pixel sets are apart: the 1-D Wasserstein
  distance per RGB channel, averaged. Unlike the histogram distance it grows with the size of a
  colour shift, so shifts of a few levels that cross a bin edge do not read as new colours.
"""

from __future__ import annotations

import numpy as np

HISTOGRAM_BINS = 8  # per channel: 512 joint RGB bins
QUANTILES = np.linspace(0.0, 1.0, 32)  # where colour_distance compares the two distributions


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two uint8 arrays of the same shape; inf when identical."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of two uint8 arrays [..., h, w, 3] over the pixels where mask [..., h, w] is True
    (one pooled error); inf when they agree there, nan when the mask is empty."""
    return psnr(a[mask], b[mask]) if mask.any() else float("nan")


def motion(video: np.ndarray) -> float:
    """Mean |frame[t+1] - frame[t]| over frames, pixels and channels (0-255 scale). [f, h, w, 3] -> float."""
    video = video.astype(np.float32)
    return float(np.abs(np.diff(video, axis=0)).mean()) if len(video) > 1 else 0.0


def background_colour(frame: np.ndarray, border: int = 4) -> np.ndarray:
    """Median colour of the frame's top, left and right borders (the studio wall): float [3]."""
    edges = np.concatenate([frame[:border].reshape(-1, 3), frame[:, :border].reshape(-1, 3),
                            frame[:, -border:].reshape(-1, 3)])
    return np.median(edges.astype(np.float32), axis=0)


def figure_mask(frame: np.ndarray, threshold: float = 40.0) -> np.ndarray:
    """bool [h, w]: pixels whose colour is farther than `threshold` (L1, 0-255) from the background."""
    distance = np.abs(frame.astype(np.float32) - background_colour(frame)).sum(-1)
    return distance > threshold


def colour_histogram(frame: np.ndarray, mask: np.ndarray | None = None, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Normalised joint RGB histogram (float [bins**3], sums to 1) of the masked pixels [h, w, 3]."""
    pixels = frame.reshape(-1, 3) if mask is None else frame[mask]
    if len(pixels) == 0:
        return np.full(bins ** 3, 1.0 / bins ** 3)
    index = (pixels.astype(np.int64) * bins // 256) @ np.array([bins * bins, bins, 1])
    counts = np.bincount(index, minlength=bins ** 3).astype(np.float64)
    return counts / counts.sum()


def histogram_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance 0.5 * sum |p - q| between two normalised histograms: [0, 1]."""
    return float(0.5 * np.abs(p - q).sum())


def figure_colour_drift(video: np.ndarray) -> float:
    """Histogram distance between the figure's colours in the first and the last frame."""
    first, last = video[0], video[-1]
    return histogram_distance(colour_histogram(first, figure_mask(first)), colour_histogram(last, figure_mask(last)))


def colour_distance(pixels: np.ndarray, reference: np.ndarray) -> float:
    """1-D Wasserstein distance per RGB channel between two pixel sets [n, 3] (0-255), averaged."""
    if len(pixels) == 0 or len(reference) == 0:
        return 0.0
    a, b = (np.quantile(x.astype(np.float64), QUANTILES, axis=0) for x in (pixels, reference))  # 32 3
    return float(np.abs(a - b).mean())


def mean_colour_distance(video: np.ndarray, reference: np.ndarray) -> float:
    """Mean over frames of the `colour_distance` (0-255) between the figure's pixels and a reference frame's."""
    target = reference[figure_mask(reference)]
    return float(np.mean([colour_distance(f[figure_mask(f)], target) for f in video]))


def mean_colour_drift(video: np.ndarray, reference: np.ndarray) -> float:
    """Mean over frames of the figure-colour histogram distance to a reference frame [h, w, 3]."""
    target = colour_histogram(reference, figure_mask(reference))
    return float(np.mean([histogram_distance(colour_histogram(f, figure_mask(f)), target) for f in video]))


# A garment-sized flat patch of each of 24 saturated colours (8 hues x 3 saturation/value pairs)
# on a light studio wall: the demo VAE must return the patch's colour (issue: "a VAE that keeps
# colours"). The error is measured inside the patch, `PATCH_MARGIN` pixels in from its edge.
GRID_HUES = 8
GRID_SATURATION_VALUE = ((1.0, 0.9), (0.7, 0.6), (0.9, 0.35))
STUDIO_WALL = (225, 222, 218)
PATCH_MARGIN = 4


def hsv_to_rgb(hue_degrees: float, saturation: float, value: float) -> np.ndarray:
    """One HSV colour (hue in degrees, saturation and value in [0, 1]) -> uint8 RGB [3]."""
    import cv2

    pixel = np.array([[[hue_degrees / 2, saturation * 255, value * 255]]], np.float32).round().astype(np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0]


def colour_grid(height: int = 128, width: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 24 test images: (images uint8 [24, h, w, 3], colours uint8 [24, 3], patch mask bool [h, w])."""
    colours = np.array([hsv_to_rgb(360 * i / GRID_HUES, s, v) for i in range(GRID_HUES)
                        for s, v in GRID_SATURATION_VALUE])
    top, bottom, left, right = height // 4, height * 13 // 16, width * 5 // 16, width * 11 // 16  # a dress-sized block
    images = np.empty((len(colours), height, width, 3), np.uint8)
    images[:] = STUDIO_WALL
    images[:, top:bottom, left:right] = colours[:, None, None]
    inside = np.zeros((height, width), bool)
    inside[top + PATCH_MARGIN:bottom - PATCH_MARGIN, left + PATCH_MARGIN:right - PATCH_MARGIN] = True
    return images, colours, inside


def colour_grid_errors(round_trip, height: int = 128, width: int = 128) -> np.ndarray:
    """Mean absolute round-trip error inside each patch, per channel: float [24, 3] (0-255 scale).

    `round_trip` maps uint8 images [n, h, w, 3] to uint8 images of the same shape (e.g. VAE
    encode -> latent mean -> decode).
    """
    images, _, inside = colour_grid(height, width)
    output = round_trip(images)
    return np.abs(output[:, inside].astype(np.float64) - images[:, inside].astype(np.float64)).mean(1)
