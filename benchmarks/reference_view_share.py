"""Does each frame attend to the reference view that shows what it shows?

    python benchmarks/reference_view_share.py --checkpoint checkpoint/demo --limit 6 \
        --output benchmarks/results/reference_view_share.json

The reference attention (models/references.py) is meant to learn a per-frame weighting: a
back-facing frame should put its attention on the back view's tokens, a front-facing frame on
the front view's. On held-out synthetic turning clips (the renderer's yaw), the model gets two
references, a front-facing frame and the most back-facing frame of the clip, and is driven by the
clip's own poses (when it has a pose guider) so that its frames face the way the truth's do.
Recorded at every reference attention (every level, every sampling step, all heads): the share
of each video token's attention on the back view's tokens, averaged per frame. Reported: the
mean share of back-facing and of front-facing frames. A learned weighting shows as a higher
share on back-facing frames; 0.5 on both is no weighting (the two views' values averaged).
A model with `model.reference_pose_routing` (or `--pose-routing S`, switching it on for this
run) routes by the poses instead; the references' poses are the clip's keypoints of those frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashionflow.demo import evaluate_references as ev  # noqa: E402
from fashionflow.demo.evaluate_demo import load_for_evaluation  # noqa: E402
from fashionflow.models import references as reference_module  # noqa: E402
from fashionflow.models.attention import to_frames  # noqa: E402


class ShareRecorder:
    """Stands in for `attend` inside models/references.py: records, per video token, the attention
    share on the second half of the keys (the second reference), then attends as before."""

    def __init__(self):
        self.shares: list[torch.Tensor] = []  # one [l] per call, mean over heads: the last batch item,
        # the conditional branch when the sampler guides (`Guidance.branches` puts it last)
        self.attend = reference_module.attend
        self.attend_per_frame = reference_module.attend_per_frame

    def __call__(self, q, k, v, bias=None):
        logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # b heads l s
        if bias is not None:
            logits = logits + bias
        half = k.shape[2] // 2
        self.shares.append(logits.softmax(-1)[..., half:].sum(-1).mean(1)[-1].float())
        return self.attend(q, k, v, bias)

    def per_frame_call(self, q, k, v, frame_bias, frames):
        """Stands in for `attend_per_frame` (pose routing): the same share, with each frame's logits."""
        frame_bias = to_frames(frame_bias, frames)
        b, heads, length, _ = q.shape
        logits = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).reshape(b, heads, frames, length // frames, -1)
        logits = logits + frame_bias[:, None, :, None, :]
        half = k.shape[2] // 2
        self.shares.append(logits.softmax(-1)[..., half:].sum(-1).mean(1)[-1].reshape(-1).float())
        return self.attend_per_frame(q, k, v, frame_bias, frames)

    def per_frame(self, frames: int) -> np.ndarray:
        """Mean share per frame [frames] over every recorded call (levels x steps)."""
        return np.mean([s.reshape(frames, -1).mean(1).numpy() for s in self.shares], axis=0)


def front_view_index(yaw: np.ndarray, back_index: int) -> int | None:
    """A front-facing frame other than frame 0 and away from the back view (the latest one)."""
    _, front = ev.facing(yaw)
    candidates = [j for j in range(1, len(yaw)) if front[j] and abs(j - back_index) > 1]
    return candidates[-1] if candidates else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoint/demo")
    parser.add_argument("--dataset", default="fashion_dataset/synthetic")
    parser.add_argument("--limit", type=int, default=6, help="turning clips to use")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pose-routing", type=float,
                        help="switch model.reference_pose_routing to this sharpness for the run (0 = off)")
    parser.add_argument("--output", help="write the result as JSON here")
    args = parser.parse_args(argv)
    pipe, _, num_frames, steps, init_strength, routed_init_strength = load_for_evaluation(
        SimpleNamespace(checkpoint=args.checkpoint, dataset=args.dataset, threads=args.threads, sampler=None,
                        steps=None, init_strength=None, routed_init_strength=None))
    if pipe.unet.references is None:
        print(f"error: {args.checkpoint} takes no reference images", file=sys.stderr)
        return 1
    drive = pipe.unet.pose_guider is not None
    if args.pose_routing is not None:
        if not drive:
            print(f"error: {args.checkpoint} has no pose guider: nothing to route by", file=sys.stderr)
            return 1
        pipe.unet.register_to_config(reference_pose_routing=args.pose_routing)
    height, width = pipe.image_size
    rows = []
    for index, (entry, clip, yaw) in enumerate(ev.turning_clips(Path(args.dataset), args.limit, num_frames,
                                                                height, width)):
        back_index = ev.back_view_index(yaw)
        front_index = front_view_index(yaw, back_index)
        if front_index is None:
            continue
        recorder = ShareRecorder()
        with mock.patch.object(reference_module, "attend", recorder), \
                mock.patch.object(reference_module, "attend_per_frame", recorder.per_frame_call):
            pipe(clip.frames[0], num_frames=len(yaw), num_inference_steps=steps, output_type="np",
                 generator=[torch.Generator().manual_seed(args.seed + index)], init_strength=init_strength,
                 routed_init_strength=routed_init_strength,
                 reference_images=[[clip.frames[front_index], clip.frames[back_index]]],
                 poses=clip.keypoints if drive else None, align=False,
                 reference_keypoints=[[clip.keypoints[front_index], clip.keypoints[back_index]]] if drive else None)
        share = recorder.per_frame(len(yaw))
        back, front = ev.facing(yaw)
        rows.append({"clip": entry["file"], "front_view": front_index, "back_view": back_index,
                     "back_facing_frames": float(share[back].mean()), "front_facing_frames": float(share[front].mean())})
        print(f"{entry['file']}: share of attention on the back view (frame {back_index}; front view frame "
              f"{front_index}): back-facing frames {rows[-1]['back_facing_frames']:.3f}, "
              f"front-facing {rows[-1]['front_facing_frames']:.3f}")
    if not rows:
        print("error: no held-out turning clip with a front-facing frame to use as the front view", file=sys.stderr)
        return 1
    result = {"checkpoint": args.checkpoint, "clips": len(rows), "pose_driven": drive,
              "pose_routing": pipe.unet.config.get("reference_pose_routing", 0.0), "per_clip": rows,
              **{key: float(np.mean([r[key] for r in rows])) for key in ("back_facing_frames", "front_facing_frames")}}
    print(f"mean share on the back view: back-facing frames {result['back_facing_frames']:.3f}, "
          f"front-facing frames {result['front_facing_frames']:.3f} (0.5 on both: no per-frame weighting)")
    if args.output:
        from fashionflow.utils import atomic_write_text

        atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
