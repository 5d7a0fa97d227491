"""Exponential moving average of the U-Net and adapter weights (an option; released: none).

Built on diffusers' `EMAModel` (its decay warms up as (1 + n) / (10 + n) up to `ema_decay`).
Checkpoints store the averaged weights as the pipeline's `unet/` and `adapter/` folders, so
inference uses them; the raw weights go to `training/` beside the optimiser state.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers.training_utils import EMAModel


class ModelEMA:
    """EMA of several modules, keyed by name ("unet", "adapter")."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.modules = modules
        self.averages = {name: EMAModel(list(module.parameters()), decay=decay) for name, module in modules.items()}

    @property
    def optimization_step(self) -> int:
        return next(iter(self.averages.values())).optimization_step

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step after an optimiser step."""
        for name, module in self.modules.items():
            self.averages[name].step(list(module.parameters()))

    @contextlib.contextmanager
    def averaged_weights(self):
        """Temporarily swap the averaged weights into the modules (for saving or sampling)."""
        for name, module in self.modules.items():
            self.averages[name].store(list(module.parameters()))
            self.averages[name].copy_to(list(module.parameters()))
        try:
            yield
        finally:
            for name, module in self.modules.items():
                self.averages[name].restore(list(module.parameters()))

    def load_averaged_weights(self, state_dicts: dict[str, dict[str, torch.Tensor]], optimization_step: int) -> None:
        """Restore the averages from per-module state dicts of the averaged weights (e.g. a checkpoint's)."""
        for name, module in self.modules.items():
            state = state_dicts[name]
            shadow = self.averages[name].shadow_params
            names = [n for n, _ in module.named_parameters()]
            missing = [n for n in names if n not in state]
            if missing:
                raise KeyError(f"EMA weights of {name} lack {len(missing)} parameters, e.g. {missing[0]}")
            for target, key in zip(shadow, names):
                target.copy_(state[key].to(target.device, target.dtype))
            self.averages[name].optimization_step = int(optimization_step)
