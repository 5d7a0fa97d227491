"""Fréchet distance between Gaussians fitted to feature sets (FID, FVD, VFID-I3D).

d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))   (Heusel et al. 2017, eq. 6)

Computed in float64 with scipy.linalg.sqrtm. Covariances from fewer samples than feature
dimensions are singular; sqrtm of their product can then come back non-finite or with
spurious imaginary parts. We retry with eps * I added to both covariances (as pytorch-fid
and StyleGAN do) and drop imaginary parts that are negligible against the trace.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and unbiased covariance [d, d] (float64) of features [n, d]; needs n >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [n, d], got shape {features.shape}")
    if len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about singular input; we check the result
        root = scipy.linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, imaginary_tolerance: float = 1e-3) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: [d]; sigma: [d, d]. Returns a float >= 0. Raises ValueError on mismatched shapes or when
    the matrix square root stays unusable after the eps * I regularisation.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu1 {mu1.shape}, mu2 {mu2.shape}, "
                         f"sigma1 {sigma1.shape}, sigma2 {sigma2.shape}")
    scale = max(np.trace(sigma1) + np.trace(sigma2), 1e-12)

    def usable(root: np.ndarray) -> bool:
        if not np.isfinite(root).all():
            return False
        return not np.iscomplexobj(root) or np.abs(root.imag).max() <= imaginary_tolerance * scale

    covmean = _sqrtm(sigma1 @ sigma2)
    if not usable(covmean):
        offset = np.eye(d) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not usable(covmean):
            raise ValueError("matrix square root of sigma1 @ sigma2 is not usable even with eps * I added "
                             "(non-finite or large imaginary part); check the features for NaN or Inf")
    covmean = covmean.real
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(distance, 0.0))  # tiny negatives are round-off of an exact zero


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between two feature sets [n1, d] and [n2, d] (n >= 2 each).

    With fewer samples than dimensions (FVD on 100 clips, FID on a few frames) the covariances
    are S1 = A^T A and S2 = B^T B with A, B the centred features over sqrt(n - 1); the non-zero
    eigenvalues of S1 S2 are the squared singular values of A B^T, so tr (S1 S2)^(1/2) is its
    nuclear norm: exact, and O(n1 n2 d) instead of a d x d sqrtm. Otherwise: frechet_distance.
    """
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be [n, d] with the same d, got {x.shape} and {y.shape}")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"need at least 2 feature vectors in each set, got {len(x)} and {len(y)}")
    if min(len(x), len(y)) > x.shape[1]:
        return frechet_distance(*feature_statistics(x), *feature_statistics(y))
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    a, b = (x - mu1) / np.sqrt(len(x) - 1), (y - mu2) / np.sqrt(len(y) - 1)
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    distance = (mu1 - mu2) @ (mu1 - mu2) + (a * a).sum() + (b * b).sum() - 2.0 * trace_sqrt
    return float(max(distance, 0.0))
