"""Paired, frame-by-frame metrics against the real continuation (ProFashion's protocol): SSIM, PSNR.

SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255,
population statistics, computed per RGB channel over the valid region and averaged (what
skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False,
channel_axis=-1) gives). PSNR: 10 log10(255^2 / MSE) over all pixels and channels of a frame.
Both return one value per frame; identical frames give SSIM 1 and PSNR inf.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"paired metrics need frames [f, h, w, 3] of equal shape, got {a.shape} and {b.shape}")


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2-D Gaussian [size, size] (float64)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_per_frame(frames1: np.ndarray, frames2: np.ndarray, data_range: float = 255.0,
                   window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """SSIM of each frame pair: uint8 (or float in [0, data_range]) [f, h, w, 3] twice -> [f]."""
    x, y = np.asarray(frames1, np.float64), np.asarray(frames2, np.float64)
    _check_pair(x, y)
    if min(x.shape[1:3]) < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got {x.shape[1:3]}")
    g = gaussian_window(window, sigma).numpy()
    g1 = g.sum(axis=0)  # the separable 1-D factor
    crop = window // 2

    def blur(t):  # Gaussian-weighted local mean over the valid region (float64, separable)
        t = scipy.ndimage.correlate1d(t, g1, axis=1, mode="constant")
        t = scipy.ndimage.correlate1d(t, g1, axis=2, mode="constant")
        return t[:, crop:t.shape[1] - crop, crop:t.shape[2] - crop]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(axis=(1, 2, 3))


def psnr_per_frame(frames1: np.ndarray, frames2: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """PSNR in dB of each frame pair [f, h, w, 3] -> [f]; inf where the frames are identical."""
    a, b = np.asarray(frames1, np.float64), np.asarray(frames2, np.float64)
    _check_pair(a, b)
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / mse)
