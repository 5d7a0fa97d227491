"""One small distributed layer: works with and without `torchrun`.

`torchrun --nproc_per_node=N train.py ...` sets RANK / WORLD_SIZE / LOCAL_RANK; `python train.py`
sets nothing and runs one process. NCCL on GPUs, gloo on CPU. Rank 0 logs, saves and renders
previews; the other ranks wait for it in `wait_for_main` (a CPU barrier with a long timeout).
Seeds derive from (global seed, rank, step, ...), never from a process-global RNG, so a resumed
run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import datetime
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str | None = None, timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise a single-process context.

    `device`: "cuda" / "cpu" / None (CUDA when available). The backend follows the device.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    if not launched_by_torchrun():
        return DistributedContext(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if use_cuda else {}
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    _main_work_barrier_group()  # now, while every rank is here
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown() -> None:
    global _main_work_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _main_work_group = None


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


# Rank 0 may work alone for long (a 1000-step DDPM preview of 70 frames takes minutes; a save
# to a slow filesystem too). The other ranks wait for it on a CPU (gloo) group with this timeout,
# not in the next NCCL collective, whose timeout (init_distributed) would end the job. If rank 0
# dies instead, torchrun stops the others.
MAIN_WORK_TIMEOUT = datetime.timedelta(hours=24)
_main_work_group = None


def wait_for_main(ctx: DistributedContext) -> None:
    """Every rank waits here until rank 0 arrives (call it on all ranks after rank-0-only work).

    The wait is a barrier on a gloo group with MAIN_WORK_TIMEOUT, so no NCCL collective is
    pending (and no NCCL watchdog running) while rank 0 renders a preview or saves.
    """
    if ctx.is_distributed:
        dist.barrier(group=_main_work_barrier_group())


def _main_work_barrier_group():
    """The gloo group of `wait_for_main`, made once per process group by every rank together
    (in init_distributed; here when the process group was made elsewhere)."""
    global _main_work_group
    if _main_work_group is None:
        _main_work_group = dist.new_group(backend="gloo", timeout=MAIN_WORK_TIMEOUT)
    return _main_work_group


def all_reduce_mean(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is untouched)."""
    value = value.detach().clone()
    if ctx.is_distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= ctx.world_size
    return value


def gather_to_main(obj, ctx: DistributedContext) -> list | None:
    """Every rank's picklable `obj` as a list on rank 0 (None elsewhere)."""
    if not ctx.is_distributed:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj, ctx: DistributedContext):
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from the global seed and integer keys (rank, step, micro-step, ...).

    numpy's SeedSequence hashes the keys, so neighbouring keys give unrelated streams.
    """
    words = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def seed_rank(seed: int, ctx: DistributedContext) -> int:
    """Seed this rank's global RNGs from the global seed and the rank; returns the rank seed."""
    rank_seed = derive_seed(seed, ctx.rank)
    seed_everything(rank_seed)
    return rank_seed


def log(message: str, ctx: DistributedContext | None = None, all_ranks: bool = False) -> None:
    """Print on rank 0 (or on every rank with a rank prefix), flushed, to stdout."""
    if ctx is None or ctx.is_main or all_ranks:
        prefix = f"[rank {ctx.rank}] " if ctx is not None and all_ranks and ctx.is_distributed else ""
        print(prefix + message, file=sys.stdout, flush=True)
