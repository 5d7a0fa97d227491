"""LPIPS (Zhang et al. 2018), AlexNet variant v0.1, without torchvision.

Two weight files, neither fetchable at run time:
- the AlexNet backbone: torchvision's ImageNet checkpoint `alexnet-owt-7be5be79.pth`
  (a state dict with `features.{0,3,6,8,10}.{weight,bias}`), given with --lpips-backbone;
- the learned linear heads: the `lpips` package's `lpips/weights/v0.1/alex.pth`
  (`lin{0..4}.model.1.weight`, [1, C, 1, 1]), given with --lpips-weights; by default taken from
  an installed `lpips` package (`pip install --no-deps lpips`) when there is one.
Both load with torch.load(weights_only=True). Input images in [-1, 1]; output one distance per pair.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LPIPS_HINT = ("LPIPS needs the torchvision AlexNet checkpoint alexnet-owt-7be5be79.pth (--lpips-backbone) and "
              "the lpips v0.1 linear weights alex.pth (--lpips-weights, or `pip install --no-deps lpips`); "
              "see docs/evaluation.md")

_CHANNELS = (64, 192, 384, 256, 256)
_CONVS = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
          10: (256, 256, 3, 1, 1)}  # torchvision AlexNet `features` index -> (in, out, kernel, stride, pad)


class LPIPS(nn.Module):
    """d(x0, x1) = sum_l mean_hw | w_l * (unit-normalised f_l(x0) - f_l(x1))^2 | over 5 AlexNet ReLUs."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.features = nn.ModuleDict({str(i): nn.Conv2d(c_in, c_out, k, s, p) for i, (c_in, c_out, k, s, p)
                                       in _CONVS.items()})
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS])

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five post-ReLU AlexNet activations of images [b, 3, h, w] in [-1, 1]."""
        x = (x - self.shift) / self.scale
        outputs = []
        for index in sorted(_CONVS):
            if index in (3, 6):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(self.features[str(index)](x))
            outputs.append(x)
        return outputs

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Images [b, 3, h, w] in [-1, 1] twice -> distances [b]."""
        total = 0.0
        for lin, f0, f1 in zip(self.lins, self.taps(x0), self.taps(x1)):
            f0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            f1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return total


def default_lpips_linear_weights() -> Path | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights not found at {path}: {LPIPS_HINT}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lpips(backbone: str | os.PathLike | None, linear: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS-Alex v0.1 in eval mode from the two weight files; FileNotFoundError with directions."""
    linear = Path(linear) if linear else default_lpips_linear_weights()
    if not backbone or linear is None:
        missing = "--lpips-backbone" if not backbone else "--lpips-weights"
        raise FileNotFoundError(f"LPIPS weights missing ({missing}): {LPIPS_HINT}")
    backbone_state, linear_state = _load_state(Path(backbone)), _load_state(linear)
    state = {f"features.{i}.{p}": backbone_state[f"features.{i}.{p}"] for i in _CONVS for p in ("weight", "bias")
             if f"features.{i}.{p}" in backbone_state}
    state.update({f"lins.{k}.weight": linear_state[f"lin{k}.model.1.weight"] for k in range(len(_CHANNELS))
                  if f"lin{k}.model.1.weight" in linear_state})
    model = LPIPS()
    missing = sorted(set(model.state_dict()) - set(state) - {"shift", "scale"})
    if missing:
        raise KeyError(f"LPIPS weight files lack {missing}: expected torchvision AlexNet and lpips v0.1 alex.pth")
    model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False).to(device)
