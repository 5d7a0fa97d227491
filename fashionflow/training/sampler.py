"""Data order derived from the step count, so a resumed run reads what an uninterrupted one would.

The training stream is an endless concatenation of shuffled epochs: epoch e is the dataset in
the order `randperm(n, seed=derive_seed(seed, e))`. Optimiser step s consumes the global
positions [s * G, (s + 1) * G) with G = world_size * batch_size * grad_accum_steps; inside a
step, micro-step m of rank r reads positions s*G + (m * world_size + r) * batch_size + [0, b).
Every clip is read once per epoch over all ranks; nothing depends on iterator state, so the
order at step s is the same whether the run started at 0 or resumed at s.

(Released code: torch's DistributedSampler without `set_epoch`, i.e. the same order every
epoch and a dropped remainder; docs/differences.md.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import Sampler

from fashionflow.distributed import derive_seed


@dataclass(frozen=True)
class StepOrder:
    num_items: int
    batch_size: int  # per rank and micro-step
    grad_accum_steps: int
    world_size: int
    rank: int
    seed: int

    @property
    def items_per_step(self) -> int:
        """G: clips consumed by one optimiser step over all ranks."""
        return self.world_size * self.batch_size * self.grad_accum_steps

    def steps_per_epoch(self) -> int:
        return max(1, self.num_items // self.items_per_step)

    def epoch_of_step(self, step: int) -> int:
        """Epoch (complete passes over the data) reached after `step` optimiser steps."""
        return step * self.items_per_step // self.num_items

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.num_items, generator=generator)

    def indices(self, step: int, micro_step: int) -> list[int]:
        """Dataset indices of this rank's micro-batch (`step` counts from 0)."""
        start = step * self.items_per_step + (micro_step * self.world_size + self.rank) * self.batch_size
        out, cache = [], {}
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.num_items)
            if epoch not in cache:
                cache[epoch] = self._epoch_order(epoch)
            out.append(int(cache[epoch][offset]))
        return out


class StepSampler(Sampler[int]):
    """Yields this rank's indices for steps [start_step, end_step), micro-batch after micro-batch.

    Use with `DataLoader(batch_size=order.batch_size)`: each batch is one micro-step.
    """

    def __init__(self, order: StepOrder, start_step: int, end_step: int):
        self.order, self.start_step, self.end_step = order, start_step, end_step

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.order.grad_accum_steps * self.order.batch_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.end_step):
            for micro in range(self.order.grad_accum_steps):
                yield from self.order.indices(step, micro)
