"""Video Inception Score (Saito et al. 2017, TGAN) with a C3D classifier fine-tuned on UCF-101.

The paper reports IS from "a C3D trained on UCF-101" (Table 1). Its weights cannot be had from a
package registry. We load the TorchScript export StyleGAN-V uses (`c3d_ucf101.pt`, a faithful
port of TGAN's chainer C3D) from a path given on the command line. Its interface: clips
[b, 3, 16, h, w] with values in [0, 255] (it resizes and normalises inside) -> class
probabilities [b, 101]. Outputs that are not probabilities are passed through a softmax.
IS = exp(E_x KL(p(y|x) || p(y))), computed on `num_splits` shuffled splits (mean, std).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

C3D_HINT = ("the video Inception Score needs the UCF-101 C3D as TorchScript (StyleGAN-V's c3d_ucf101.pt; "
            "see docs/evaluation.md for where to get it): pass --c3d-weights PATH")


def load_c3d(weights: str | os.PathLike | None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The C3D TorchScript in eval mode; FileNotFoundError with directions when it is missing."""
    if not weights:
        raise FileNotFoundError(f"no C3D weights given: {C3D_HINT}")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"C3D weights not found at {path}: {C3D_HINT}")
    with warnings.catch_warnings():  # these files are TorchScript; torch >= 2.10 warns that the format is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()


def as_probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """Class probabilities [b, k]: the outputs themselves when they already are, else their softmax."""
    outputs = outputs.double()
    is_distribution = bool((outputs >= 0).all()) and torch.allclose(outputs.sum(-1), torch.ones(len(outputs),
                                                                                                 dtype=outputs.dtype), atol=1e-3)
    return outputs if is_distribution else outputs.softmax(-1)


def inception_score(probabilities: np.ndarray, num_splits: int = 10, seed: int = 42) -> tuple[float, float]:
    """(mean, std) of exp(mean KL(p(y|x) || p(y))) over shuffled splits; probabilities [n, k]."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or len(p) < num_splits:
        raise ValueError(f"need probabilities [n, k] with n >= num_splits={num_splits}, got shape {p.shape}")
    p = p[np.random.default_rng(seed).permutation(len(p))]
    scores = []
    for split in np.array_split(p, num_splits):
        marginal = split.mean(axis=0, keepdims=True)
        kl = (split * (np.log(split + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
