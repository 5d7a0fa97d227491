"""Time the U-Net forward (and forward + backward): ours against the released formulation.

    python benchmarks/unet.py                              # [1,4,16,32,32] and paper size [1,4,70,80,64]
    python benchmarks/unet.py --sizes 1,4,16,32,32 --repeats 5 --backward

Both networks hold the same weights (ours loaded through `fashionflow.official` from the
reference's state dict) and are timed alternately in one process, so drifting machine load
hits both alike. fp32 on CPU; bf16 autocast on CUDA. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, synchronize  # noqa: E402
from benchmarks.released_reference import EmbeddingAdapter, SpaceTimeUnet, randomize_  # noqa: E402
from fashionflow.official import load_official_state  # noqa: E402




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


def bench_size(shape, ours, reference, context, device, repeats, backward, autocast_dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(device)
    t = torch.full((shape[0],), 500, device=device)
    ctx = context.expand(shape[0], -1, -1)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        fns = {"ours": lambda: ours(x, t, ctx), "released": lambda: reference(x, ctx, t)}
        for name, fn in fns.items():  # warm-up
            run_once(fn, device, backward)
        times = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                ours.zero_grad(set_to_none=True)
                reference.zero_grad(set_to_none=True)
                times[name].append(run_once(fn, device, backward))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {name: statistics.median(v) for name, v in times.items()}, peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1,4,16,32,32", "1,4,70,80,64"],
                        help="latent shapes b,c,f,h,w")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    generator = torch.Generator().manual_seed(0)
    reference, reference_adapter = randomize_(SpaceTimeUnet(), generator), randomize_(EmbeddingAdapter(), generator)
    ours, _ = load_official_state({"net": reference.state_dict(), "adapter": reference_adapter.state_dict()})
    ours, reference = ours.to(device), reference.to(device)
    context = torch.randn(1, 50, 768, generator=generator).to(device)

    print(f"device: {device_name(device)}; torch {torch.__version__}; "
          f"{'bf16 autocast' if autocast_dtype else 'fp32'}; median of {args.repeats}\n")
    print("| latents [b,c,f,h,w] | pass | ours (s) | released (s) | speed-up | peak GPU mem (GiB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        shape = tuple(int(n) for n in size.split(","))
        for backward in ([False, True] if args.backward else [False]):
            for module in (ours, reference):
                module.train(backward)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times, peak = bench_size(shape, ours, reference, context, device, args.repeats, backward, autocast_dtype)
            print(f"| {list(shape)} | {'fwd+bwd' if backward else 'fwd'} | {times['ours']:.3f} | "
                  f"{times['released']:.3f} | {times['released'] / times['ours']:.2f}x | {peak:.1f} |", flush=True)


if __name__ == "__main__":
    main()
