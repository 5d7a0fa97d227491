"""Time the U-Net forward (and forward + backward): ours against the released formulation.

    python benchmarks/unet.py --tiny                       # seconds, any machine (CI)
    python benchmarks/unet.py                              # [1,4,16,32,32] and paper size [1,4,70,80,64]
    python benchmarks/unet.py --sizes 1,4,16,32,32 --repeats 5 --backward
    python benchmarks/unet.py --backward --compile --compile-mode max-autotune      # CUDA

Both networks hold the same weights (ours loaded through `fashionflow.official` from the
reference's state dict) and are timed alternately in one process, so drifting machine load
hits both alike. `--precision` (default: bf16 autocast on CUDA, fp32 on CPU) applies to both;
`--released-precision fp16` times the reference as the released code sampled (fp16 autocast).
`--compile` compiles ours only. Columns: seconds (median), peak GPU memory, and achieved
TFLOP/s of ours with its fraction of the bf16 peak (FLOPs counted by torch's FlopCounterMode on
the meta device; backward counted as twice the forward). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bf16_peak_tflops, count_flops, device_name, synchronize, throughput_cell  # noqa: E402
from benchmarks.released_reference import EmbeddingAdapter, SpaceTimeUnet, randomize_  # noqa: E402
from fashionflow.models import SpaceTimeUNet  # noqa: E402
from fashionflow.official import load_official_state  # noqa: E402
from fashionflow.precision import PRECISIONS, autocast, autocast_dtype, tf32, tf32_for  # noqa: E402

TINY_SIZES = ["1,4,2,16,16"]


def run_once(fn, device, backward: bool) -> float:
    synchronize(device)
    start = time.perf_counter()
    if backward:
        fn().float().square().mean().backward()
    else:
        with torch.no_grad():
            fn()
    synchronize(device)
    return time.perf_counter() - start


def bench_size(shape, ours, reference, context, device, repeats, backward, dtypes):
    """Median seconds of ours and of the reference, each under its autocast dtype."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(device)
    t = torch.full((shape[0],), 500, device=device)
    ctx = context.expand(shape[0], -1, -1)

    def ours_call():
        with autocast(device, dtypes["ours"]):
            return ours(x, t, ctx)

    def released_call():
        with autocast(device, dtypes["released"]):
            return reference(x, ctx, t)

    fns = {"ours": ours_call, "released": released_call}
    for fn in fns.values():  # warm-up (and compilation)
        run_once(fn, device, backward)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            ours.zero_grad(set_to_none=True)
            reference.zero_grad(set_to_none=True)
            times[name].append(run_once(fn, device, backward))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {name: statistics.median(v) for name, v in times.items()}, peak


def unet_flops(shape) -> int:
    """FLOPs of one forward of the paper-width U-Net on latents of `shape`."""
    meta = dict(device="meta")
    return count_flops(SpaceTimeUNet, lambda m: m(torch.randn(shape, **meta), torch.ones(shape[0], **meta),
                                                  torch.randn(shape[0], 50, 768, **meta)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help=f"sizes {TINY_SIZES}, 1 repeat, with backward (CI)")
    parser.add_argument("--sizes", nargs="+", default=["1,4,16,32,32", "1,4,70,80,64"],
                        help="latent shapes b,c,f,h,w")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--released-precision", choices=PRECISIONS, help="default: --precision")
    parser.add_argument("--compile", action="store_true", help="torch.compile ours")
    parser.add_argument("--compile-mode", default=None, help="e.g. max-autotune (inductor)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak (default: by GPU name)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.repeats, args.backward = TINY_SIZES, 1, True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtypes = {"ours": autocast_dtype(device, args.precision),
              "released": autocast_dtype(device, args.released_precision or args.precision)}
    peak_tflops = bf16_peak_tflops(device, args.peak_tflops)

    generator = torch.Generator().manual_seed(0)
    reference, reference_adapter = randomize_(SpaceTimeUnet(), generator), randomize_(EmbeddingAdapter(), generator)
    ours, _ = load_official_state({"net": reference.state_dict(), "adapter": reference_adapter.state_dict()})
    ours, reference = ours.to(device), reference.to(device)
    if args.compile:
        ours.compile(backend=args.compile_backend, **({"mode": args.compile_mode} if args.compile_mode else {}))
    context = torch.randn(1, 50, 768, generator=generator).to(device)

    names = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}
    print(f"device: {device_name(device)}; torch {torch.__version__}; ours {names[dtypes['ours']]}"
          f"{' (TF32)' if args.precision == 'tf32' else ''}{', compiled' if args.compile else ''}, released "
          f"{names[dtypes['released']]}; median of {args.repeats}; bf16 peak "
          f"{f'{peak_tflops:.0f} TFLOP/s' if peak_tflops else 'unknown'}\n")
    print("| latents [b,c,f,h,w] | pass | ours (s) | released (s) | speed-up | peak GPU mem (GiB) | "
          "ours TFLOP/s (of peak) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tf32(tf32_for(args.precision)):
        for size in args.sizes:
            shape = tuple(int(n) for n in size.split(","))
            forward_flops = unet_flops(shape)
            for backward in ([False, True] if args.backward else [False]):
                for module in (ours, reference):
                    module.train(backward)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times, peak = bench_size(shape, ours, reference, context, device, args.repeats, backward, dtypes)
                flops = forward_flops * (3 if backward else 1)
                print(f"| {list(shape)} | {'fwd+bwd' if backward else 'fwd'} | {times['ours']:.3f} | "
                      f"{times['released']:.3f} | {times['released'] / times['ours']:.2f}x | {peak:.1f} | "
                      f"{throughput_cell(flops, times['ours'], peak_tflops)} |", flush=True)


if __name__ == "__main__":
    main()
