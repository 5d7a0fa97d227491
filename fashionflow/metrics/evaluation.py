"""Evaluate a folder of generated videos against a folder of real ones (docs/evaluation.md).

Unpaired metrics compare the two sets as distributions: FVD (I3D logits of `num_frames`-frame
clips), VFID-I3D (I3D Mixed_5c features of clips of up to `vfid_frames` frames), FID and KID
(Inception features of the frames of the FVD clips) and IS (C3D, generated clips only). Paired
metrics compare each generated video with the real video of the same file stem (or, for
inference.py's `NAME_K.mp4`, with `NAME`), frame by frame: SSIM, PSNR, LPIPS. Every figure carries the number of videos and samples behind it and warnings
where that number is too small for a stable estimate. A video that cannot be read is reported
on one line and left out; the others are still evaluated.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from fashionflow.metrics.frechet import frechet_distance_from_features
from fashionflow.metrics.inception_score import as_probabilities, inception_score
from fashionflow.metrics.kid import kernel_inception_distance
from fashionflow.metrics.paired import psnr_per_frame, ssim_per_frame
from fashionflow.metrics.video import i3d_clip_tensor, inception_tensor, load_frames, split_clips
from fashionflow.utils import atomic_write_text
from fashionflow.video_io import VideoReadError, list_videos

UNPAIRED_METRICS = ("fvd", "vfid_i3d", "fid", "kid", "is")
PAIRED_METRICS = ("ssim", "psnr", "lpips")
ALL_METRICS = UNPAIRED_METRICS + PAIRED_METRICS
# the sample counts below which an estimate is flagged (feature dimensions for Fréchet distances)
FEATURE_DIMS = {"fvd": 400, "vfid_i3d": 1024, "fid": 2048}
C3D_FRAMES = 16


@dataclass
class EvalSettings:
    metrics: tuple[str, ...] = ("fvd", "vfid_i3d", "fid", "kid", "ssim", "psnr")
    num_frames: int = 16  # FVD clip length (StyleGAN-V, common_metrics: 16)
    clips_per_video: int = 1  # consecutive non-overlapping clips from the first frame
    vfid_frames: int = 60  # VFID-I3D clip length: up to this many frames from the first
    paired_skip_frames: int = 0  # leave out the first frames of each pair (e.g. 1: the conditioning frame)
    real_offsets: dict[str, int] = field(default_factory=dict)  # generated or real stem -> real video's first frame
    batch_size: int = 8
    device: str = "cpu"
    is_splits: int = 10
    kid_subsets: int = 100
    seed: int = 0
    i3d_weights: str | None = None
    inception_weights: str | None = None
    c3d_weights: str | None = None
    lpips_backbone: str | None = None
    lpips_weights: str | None = None

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(ALL_METRICS)}")
        if self.num_frames < 1 or self.clips_per_video < 1 or self.vfid_frames < 1:
            raise ValueError("num_frames, clips_per_video and vfid_frames must be positive")


@dataclass
class Networks:
    """The feature networks the requested metrics need (None where not requested)."""
    i3d: torch.nn.Module | None = None
    inception: torch.nn.Module | None = None
    c3d: torch.nn.Module | None = None
    lpips: torch.nn.Module | None = None

    @classmethod
    def load(cls, settings: EvalSettings) -> "Networks":
        """Load every needed network up front, so missing weights fail before any video is read."""
        wanted, device = set(settings.metrics), settings.device
        nets = cls()
        if wanted & {"fvd", "vfid_i3d"}:
            from fashionflow.metrics.i3d import load_i3d
            nets.i3d = load_i3d(settings.i3d_weights, device)
        if wanted & {"fid", "kid"}:
            from fashionflow.metrics.inception import load_inception
            nets.inception = load_inception(settings.inception_weights, device)
        if "is" in wanted:
            from fashionflow.metrics.inception_score import load_c3d
            nets.c3d = load_c3d(settings.c3d_weights, device)
        if "lpips" in wanted:
            from fashionflow.metrics.lpips import load_lpips
            nets.lpips = load_lpips(settings.lpips_backbone, settings.lpips_weights, device)
        return nets


@dataclass
class FeatureSet:
    """Features of one folder, accumulated video by video."""
    videos: list[str] = field(default_factory=list)
    fvd: list[np.ndarray] = field(default_factory=list)  # [400] per clip
    vfid_i3d: list[np.ndarray] = field(default_factory=list)  # [1024] per clip
    inception: list[np.ndarray] = field(default_factory=list)  # [2048] per frame
    c3d: list[np.ndarray] = field(default_factory=list)  # [101] per clip
    too_short: list[str] = field(default_factory=list)  # videos with fewer frames than one clip


def _batched(model, inputs: list[torch.Tensor], batch_size: int, device: str) -> list[torch.Tensor]:
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.stack(inputs[start:start + batch_size]).to(device)
            outputs.append(model(batch))
    return outputs


def add_video_features(features: FeatureSet, name: str, frames: np.ndarray, nets: Networks,
                       settings: EvalSettings, generated: bool) -> None:
    """Append the unpaired-metric features of one video (uint8 frames [f, h, w, 3])."""
    wanted, bs, device = set(settings.metrics), settings.batch_size, settings.device
    clips = split_clips(frames, settings.num_frames, settings.clips_per_video)
    if not clips:
        features.too_short.append(name)
    if "fvd" in wanted and clips:
        outs = _batched(nets.i3d, [i3d_clip_tensor(c) for c in clips], bs, device)
        features.fvd += [row for logits, _ in outs for row in logits.double().cpu().numpy()]
    if "vfid_i3d" in wanted:
        outs = _batched(nets.i3d, [i3d_clip_tensor(frames[:settings.vfid_frames])], 1, device)
        features.vfid_i3d += [row for _, pool in outs for row in pool.double().cpu().numpy()]
    if wanted & {"fid", "kid"} and clips:
        images = list(inception_tensor(np.concatenate(clips)))
        features.inception += [row for out in _batched(nets.inception, images, bs * 4, device)
                               for row in out.double().cpu().numpy()]
    if "is" in wanted and generated:
        c3d_clips = split_clips(frames, C3D_FRAMES, settings.clips_per_video)
        inputs = [torch.from_numpy(np.ascontiguousarray(c)).permute(3, 0, 1, 2).float() for c in c3d_clips]
        features.c3d += [row for out in _batched(nets.c3d, inputs, bs, device)
                         for row in as_probabilities(out.cpu()).numpy()]
    features.videos.append(name)


def paired_scores(generated: np.ndarray, real: np.ndarray, nets: Networks, settings: EvalSettings) -> dict:
    """Per-frame-averaged SSIM, PSNR, LPIPS of one pair over their common frames; real resized to generated."""
    count = min(len(generated), len(real))
    generated, real = generated[settings.paired_skip_frames:count], real[settings.paired_skip_frames:count]
    if len(generated) == 0:
        raise ValueError(f"no frames to compare after skipping {settings.paired_skip_frames}")
    if real.shape[1:3] != generated.shape[1:3]:
        real = np.stack([cv2.resize(f, generated.shape[2:0:-1], interpolation=cv2.INTER_AREA) for f in real])
    scores = {"frames": len(generated)}
    if "ssim" in settings.metrics:
        scores["ssim"] = float(ssim_per_frame(generated, real).mean())
    if "psnr" in settings.metrics:
        scores["psnr"] = float(psnr_per_frame(generated, real).mean())
    if "lpips" in settings.metrics:
        to_unit = lambda f: torch.from_numpy(np.ascontiguousarray(f)).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.inference_mode():
            values = [nets.lpips(to_unit(g).to(settings.device), to_unit(r).to(settings.device)).cpu()
                      for g, r in zip(np.array_split(generated, max(1, len(generated) // settings.batch_size)),
                                      np.array_split(real, max(1, len(real) // settings.batch_size)))]
        scores["lpips"] = float(torch.cat(values).double().mean())
    return scores


def _frames_needed(settings: EvalSettings) -> int:
    need = 0
    if set(settings.metrics) & {"fvd", "fid", "kid", "is"}:
        need = max(settings.num_frames, C3D_FRAMES if "is" in settings.metrics else 0) * settings.clips_per_video
    if "vfid_i3d" in settings.metrics:
        need = max(need, settings.vfid_frames)
    return need


def _load(path: Path, max_frames: int | None, skipped: list[dict], log, start: int = 0) -> np.ndarray | None:
    try:
        return load_frames(path, max_frames, start)
    except (VideoReadError, OSError, ValueError) as error:
        log(f"skipping {path}: {error}")
        skipped.append({"path": str(path), "reason": str(error)})
        return None


def _sample_warning(metric: str, samples: int, unit: str) -> str | None:
    dims = FEATURE_DIMS.get(metric)
    if dims and samples < dims:
        return (f"only {samples} {unit} for {dims}-d features: the covariance is singular and the estimate is "
                f"biased upward; compare only with figures from the same number of {unit}")
    return None


def summarise(settings: EvalSettings, gen: FeatureSet, real: FeatureSet, pairs: dict[str, dict]) -> dict:
    """The figure, sample counts and warnings of every requested metric."""
    out = {}
    clip_unit = f"{settings.num_frames}-frame clips"
    sources = {"fvd": ("fvd", clip_unit), "vfid_i3d": ("vfid_i3d", f"clips of up to {settings.vfid_frames} frames"),
               "fid": ("inception", "frames"), "kid": ("inception", "frames")}
    for metric in settings.metrics:
        entry = {"generated_videos": len(gen.videos), "warnings": []}
        short = gen.too_short + (real.too_short if metric != "is" else [])
        if metric in ("fvd", "fid", "kid", "is") and short:
            entry["warnings"].append(f"{len(short)} video(s) shorter than {settings.num_frames} frames gave no "
                                     f"clip: {', '.join(short[:5])}{' ...' if len(short) > 5 else ''}")
        if metric in sources:
            attr, unit = sources[metric]
            g, r = np.array(getattr(gen, attr)), np.array(getattr(real, attr))
            entry.update(real_videos=len(real.videos), generated_samples=len(g), real_samples=len(r), sample=unit)
            if min(len(g), len(r)) < 2:
                entry.update(value=None, error=f"needs at least 2 {unit} in each folder, got {len(g)} and {len(r)}")
            elif metric == "kid":
                entry["value"], entry["std"] = kernel_inception_distance(g, r, settings.kid_subsets, seed=settings.seed)
                if min(len(g), len(r)) < 100:
                    entry["warnings"].append(f"KID from fewer than 100 {unit} per folder has a large variance")
            else:
                entry["value"] = frechet_distance_from_features(g, r)
                warning = _sample_warning(metric, min(len(g), len(r)), unit)
                entry["warnings"] += [warning] if warning else []
        elif metric == "is":
            probs = np.array(gen.c3d)
            entry.update(generated_samples=len(probs), sample=f"{C3D_FRAMES}-frame clips")
            if len(probs) < settings.is_splits:
                entry.update(value=None, error=f"needs at least {settings.is_splits} clips (one per split), got {len(probs)}")
            else:
                entry["value"], entry["std"] = inception_score(probs, settings.is_splits)
                if len(probs) < 10 * settings.is_splits:
                    entry["warnings"].append(f"fewer than 10 clips per split ({len(probs)} clips, "
                                             f"{settings.is_splits} splits): the score is biased low")
        else:
            values = [scores[metric] for scores in pairs.values() if metric in scores]
            entry.update(generated_videos=len(values), real_videos=len({s["real"] for s in pairs.values()}),
                         generated_samples=sum(s["frames"] for s in pairs.values()),
                         sample="frame pairs", per_video={n: s[metric] for n, s in pairs.items() if metric in s})
            entry["value"] = float(np.mean(values)) if values else None
            if not values:
                entry["error"] = "no generated video has a real video of the same name"
            elif len(values) < 10:
                entry["warnings"].append(f"only {len(values)} video pairs")
        out[metric] = entry
    return out


def matching_real_name(generated_name: str, real_names) -> str | None:
    """The real video a generated one pairs with: the same stem, else the stem without inference.py's `_K`."""
    if generated_name in real_names:
        return generated_name
    base, _, index = generated_name.rpartition("_")
    return base if index.isdigit() and base in real_names else None


def evaluate_folders(generated_dir, real_dir, settings: EvalSettings, nets: Networks | None = None,
                     log=lambda message: print(message, file=sys.stderr)) -> dict:
    """All requested metrics for two folders of videos; returns the JSON-ready result."""
    nets = nets or Networks.load(settings)
    generated_paths = {p.stem: p for p in list_videos(generated_dir)}
    real_paths = {p.stem: p for p in list_videos(real_dir)}
    if not generated_paths:
        raise FileNotFoundError(f"no videos in {generated_dir}")
    unpaired = bool(set(settings.metrics) & set(UNPAIRED_METRICS))
    paired = bool(set(settings.metrics) & set(PAIRED_METRICS))
    needs_real = bool(set(settings.metrics) & {"fvd", "vfid_i3d", "fid", "kid"})
    need = _frames_needed(settings)
    gen, real, pairs, skipped, real_done = FeatureSet(), FeatureSet(), {}, [], set()
    offset = lambda gen_name, real_name: settings.real_offsets.get(gen_name, settings.real_offsets.get(real_name, 0))
    for name, path in generated_paths.items():
        frames = _load(path, None if paired else need, skipped, log)
        if frames is None:
            continue
        if unpaired:
            add_video_features(gen, name, frames[:need], nets, settings, generated=True)
        real_name = matching_real_name(name, real_paths)
        if paired and real_name is not None:
            real_frames = _load(real_paths[real_name], max(need, len(frames)), skipped, log, offset(name, real_name))
            if real_frames is None:
                continue
            try:
                pairs[name] = {"real": real_name, **paired_scores(frames, real_frames, nets, settings)}
            except ValueError as error:
                log(f"skipping pair {name}: {error}")
                skipped.append({"path": str(path), "reason": str(error)})
            if needs_real and real_name not in real_done:
                add_video_features(real, real_name, real_frames[:need], nets, settings, generated=False)
            real_done.add(real_name)
        elif paired:
            log(f"no real video named {name} in {real_dir}: left out of the paired metrics")
    if needs_real:
        for name, path in real_paths.items():
            frames = None if name in real_done else _load(path, need, skipped, log, offset(name, name))
            if frames is not None:
                add_video_features(real, name, frames, nets, settings, generated=False)
    return {"metrics": summarise(settings, gen, real, pairs), "settings": asdict(settings),
            "generated_dir": str(generated_dir), "real_dir": str(real_dir), "skipped": skipped}


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"


def markdown_table(result: dict) -> str:
    """One row per metric: value (± std), the samples behind it, and warnings."""
    lines = ["| metric | value | generated | real | notes |", "| --- | --- | --- | --- | --- |"]
    for metric, entry in result["metrics"].items():
        value = _fmt(entry.get("value")) + (f" ± {_fmt(entry['std'])}" if "std" in entry else "")
        sample = entry.get("sample", "")
        gen = f"{entry['generated_videos']} videos, {entry.get('generated_samples', 0)} {sample}"
        if "real_samples" in entry:
            real = f"{entry['real_videos']} videos, {entry['real_samples']} {sample}"
        else:
            real = f"{entry['real_videos']} videos" if metric in PAIRED_METRICS else "-"
        notes = "; ".join(([entry["error"]] if "error" in entry else []) + entry["warnings"])
        lines.append(f"| {metric} | {value} | {gen} | {real} | {notes} |")
    if result.get("skipped"):
        lines.append(f"\n{len(result['skipped'])} video(s) skipped: " + "; ".join(
            f"{s['path']} ({s['reason']})" for s in result["skipped"]))
    return "\n".join(lines) + "\n"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf / nan; "inf" is what PSNR of identical frames is
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(result: dict, output_dir) -> tuple[Path, Path]:
    """Write metrics.json and metrics.md into `output_dir`, each atomically."""
    output_dir = Path(output_dir)
    json_path, md_path = output_dir / "metrics.json", output_dir / "metrics.md"
    atomic_write_text(json_path, json.dumps(_json_safe(result), indent=2) + "\n")
    atomic_write_text(md_path, markdown_table(result))
    return json_path, md_path
