"""Evaluation metrics of the paper (FVD, VFID-I3D, IS) and of ProFashion (SSIM, PSNR, LPIPS, FVD).

See docs/evaluation.md for the protocols and `evaluate.py` for the command-line tool.
"""

from fashionflow.metrics.frechet import feature_statistics, frechet_distance, frechet_distance_from_features

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_features"]
