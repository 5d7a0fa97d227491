"""Optimiser and learning-rate schedule (FASHIONFLOW.md, "Training").

Released code: AdamW(lr 1e-4, weight decay 0.01, betas (0.9, 0.999)) on the U-Net and adapter
together, constant learning rate, no warmup. Paper: lr 2e-4, betas (0.5, 0.999)
(`configs/fashionflow_paper.yaml`). Warmup and a decaying schedule are options.
"""

from __future__ import annotations

from typing import Iterable

import torch
from diffusers.optimization import get_scheduler

from fashionflow.config import TrainConfig

# our names -> diffusers' schedule names (each takes a linear warmup of `warmup_steps`)
_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def build_optimizer(params: Iterable[torch.nn.Parameter], train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over all trainable parameters, weight decay on all of them (as released)."""
    params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(params, lr=train.lr, betas=tuple(train.betas), eps=train.eps,
                             weight_decay=train.weight_decay)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    """Per-optimiser-step LR multiplier: linear warmup, then constant / cosine / linear decay."""
    return get_scheduler(_SCHEDULES[train.lr_schedule], optimizer, num_warmup_steps=train.warmup_steps,
                         num_training_steps=max(total_steps, 1))
