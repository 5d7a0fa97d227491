"""Numerics in one place: autocast on any device, bf16 support, TF32 and deterministic kernels.

Autocast works on CPU as well as CUDA (bf16 on CPU is PyTorch's own CPU autocast), so the
tests run the mixed-precision paths on a machine without a GPU and catch dtype errors there.
Precision names (pipeline `precision`, `inference.py --precision`):

    auto   CUDA: bf16 autocast where the GPU has native bf16 (compute capability >= 8.0), fp16
           otherwise; CPU: fp32
    fp32   no autocast, full fp32 matmuls
    tf32   no autocast; on CUDA fp32 matmuls and convolutions on TF32 tensor cores
    bf16, fp16   autocast to that dtype, on any device
"""

from __future__ import annotations

import contextlib
import os
from typing import Literal, Optional

import torch

Precision = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
# cuBLAS needs a fixed workspace for deterministic matmuls (PyTorch's reproducibility notes)
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: CUDA compute capability >= 8.0 (Ampere, Hopper),
    ROCm, or a CPU (autocast). `torch.cuda.is_bf16_supported()` also counts emulated bf16
    (V100, T4: slow) and asks the current device, not this one."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    if torch.version.hip:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> Optional[torch.dtype]:
    """The autocast dtype for a precision name on a device; None = no autocast (see the module doc)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    if precision in ("fp32", "tf32"):
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """`torch.autocast` on the device's type (CPU or CUDA); a no-op for None / fp32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def tf32(enabled: Optional[bool]):
    """Within the block, CUDA fp32 matmuls and cuDNN convolutions use TF32 tensor cores (True)
    or full fp32 (False); None leaves PyTorch's settings (its defaults: convolutions TF32,
    matmuls fp32). The previous settings come back afterwards."""
    if enabled is None:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def tf32_for(precision: Precision) -> Optional[bool]:
    """The `tf32` setting a precision name implies: on for "tf32", off for "fp32" (full fp32),
    PyTorch's own settings under autocast."""
    return {"tf32": True, "fp32": False}.get(precision)


@contextlib.contextmanager
def deterministic(enabled: bool):
    """Within the block, ask PyTorch for deterministic kernels (True): `use_deterministic_algorithms`
    (strict: an op without a deterministic kernel raises, naming itself; with warn_only the
    flash and memory-efficient attention backwards would stay non-deterministic, warning only),
    cuDNN deterministic without autotuning, and `CUBLAS_WORKSPACE_CONFIG` (set here only if
    unset; it takes effect only when no cuBLAS handle exists yet, i.e. before the first CUDA
    matmul of the process)."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
