"""What every benchmark script needs: the device's name for the report, a barrier so CUDA
timings measure finished work, FLOP counts, and the GPU's bf16 peak for "fraction of peak"."""

from __future__ import annotations

import platform
from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets; the first
# name that is part of torch.cuda.get_device_name() wins, so specific names come first.
# `--peak-tflops` overrides (clocks and power limits vary between boards).
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),  # SXM5, "NVIDIA H100 80GB HBM3"
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_peak_tflops(device: torch.device, override: Optional[float] = None) -> Optional[float]:
    """The device's dense bf16 peak (TFLOP/s): `override`, else the table above; None if unknown (CPUs)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def count_flops(build: Callable[[], torch.nn.Module], run: Callable[[torch.nn.Module], object]) -> int:
    """FLOPs of `run(build())` counted by torch's FlopCounterMode on the meta device: the module
    is built there (no weights in memory, nothing computed), so any size counts in a moment."""
    with torch.device("meta"):
        module = build()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run(module)
    return counter.get_total_flops()


def throughput_cell(flops: float, seconds: float, peak_tflops: Optional[float]) -> str:
    """'123 (12%)': achieved TFLOP/s and, when the peak is known, its fraction of the bf16 peak."""
    achieved = flops / seconds / 1e12
    return f"{achieved:.3g} ({achieved / peak_tflops:.0%})" if peak_tflops else f"{achieved:.3g}"
