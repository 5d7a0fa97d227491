"""Project videos to VAE latent clips, once, offline (FASHIONFLOW.md, "Data"; STYLE.md item 9).

Per video: decode (opencv or ffmpeg), pick clip windows by `data.clip_policy` from the video's
own seed, resize every frame (released: bilinear stretch to 640 x 512), encode every frame
with the VAE in batches, sample the latent (released: mean + std * noise, x scaling factor)
and write one safetensors file per clip (format in `latent_dataset.py`). The conditioning
image is the clip's first frame; its VAE latent distribution and CLIP hidden states are
stored too, so training needs neither encoder. With `data.reference_candidates` = K, every
clip file also holds K reference candidates spread over the whole video (for training with
several reference images, models/references.py): their frame index, image, VAE latent
distribution and CLIP hidden states. With `data.poses`, every clip file
also holds the clip's OpenPose-18 keypoints (the video's NAME.pose.npz sidecar, else MediaPipe).

Robustness: files are written atomically; a rerun skips clips already written with the same
config (a killed run resumes); under torchrun the pending videos are split across ranks; a
video that cannot be decoded or is too short is reported with the reason and skipped.
"""

from __future__ import annotations

import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from fashionflow import distributed
from fashionflow.config import FashionFlowConfig, config_hash, config_to_dict
from fashionflow.data.clips import ClipTooShortError, clip_starts, frames_needed, reference_candidate_frames, video_seed
from fashionflow.data.latent_dataset import (CLIP_FORMAT, CLIP_SUFFIX, MANIFEST_NAME, LatentDatasetError,
                                             encoder_metadata, list_clip_files, read_clip_header)
from fashionflow.utils import atomic_path, atomic_write_text
from fashionflow.video_io import VideoReadError, list_videos, read_video

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ProjectionError(RuntimeError):
    """The run cannot start (no videos, output folder of another config, ...)."""


# --- naming and resizing ------------------------------------------------------------------

def clip_key(video_name: str) -> str:
    """A file-name-safe key from a video's file name: its stem, keeping letters, digits, + - _ ."""
    return re.sub(r"[^A-Za-z0-9+\-_.]", "_", Path(video_name).stem)


def clip_file_name(video_name: str, start: int) -> str:
    return f"{clip_key(video_name)}__{start:05d}{CLIP_SUFFIX}"


def resize_frame(frame: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """uint8 [H0, W0, 3] -> uint8 [height, width, 3] with PIL's bilinear filter.

    stretch (released): torchvision's Resize((640, 512)) on a PIL image, i.e. this exact call.
    crop: aspect-preserving, the centred region of the target aspect is resized.
    """
    box = crop_box(frame.shape[0], frame.shape[1], height, width, mode)
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR, box=box))


def crop_box(h0: int, w0: int, height: int, width: int, mode: str) -> tuple[float, float, float, float] | None:
    """The region (left, top, right, bottom) of an h0 x w0 frame that `resize_frame` maps onto
    height x width: None (the whole frame) for stretch, the centred box of the target aspect for crop."""
    if mode == "stretch":
        return None
    if mode != "crop":
        raise ValueError(f"unknown data.resize {mode!r} (stretch or crop)")
    if w0 * height > h0 * width:  # too wide: keep the full height
        crop = h0 * width / height
        return (w0 - crop) / 2, 0.0, (w0 + crop) / 2, float(h0)
    crop = w0 * height / width
    return 0.0, (h0 - crop) / 2, float(w0), (h0 + crop) / 2


def resize_keypoints(keypoints: np.ndarray, h0: int, w0: int, height: int, width: int, mode: str) -> np.ndarray:
    """Keypoints [..., 18, 3] with x, y in [0, 1] of an h0 x w0 frame -> the same joints in [0, 1]
    of that frame after `resize_frame` (joints the crop cuts off get confidence 0)."""
    out = np.array(keypoints, np.float32)
    box = crop_box(h0, w0, height, width, mode)
    if box is None:  # a stretch keeps relative positions
        return out
    left, top, right, bottom = box
    out[..., 0] = (out[..., 0] * w0 - left) / (right - left)
    out[..., 1] = (out[..., 1] * h0 - top) / (bottom - top)
    inside = ((out[..., :2] >= 0) & (out[..., :2] <= 1)).all(-1)
    out[..., 2] = np.where(inside, out[..., 2], 0.0)
    return out


# --- one video: decode and choose clips ----------------------------------------------------

@dataclass
class VideoClips:
    """The resized clips of one video still to write: frames uint8 [n, f, H, W, 3] starting at `starts`."""

    name: str
    starts: list[int]
    frames: np.ndarray
    fps: float
    original_size: tuple[int, int]  # (height, width)
    clips_in_video: int  # all clips the policy takes from this video, written or not
    reference_frames: list[int] = field(default_factory=list)  # data.reference_candidates frame indices
    references: np.ndarray | None = None  # their resized frames uint8 [k, H, W, 3]
    keypoints: np.ndarray | None = None  # data.poses: float32 [n, f, 18, 3] in [0, 1] of the resized frames
    reference_keypoints: np.ndarray | None = None  # data.poses with candidates: float32 [k, 18, 3], likewise
    pose_source: str = ""  # "sidecar" (the video's NAME.pose.npz) or "extracted"


def load_video_clips(path: Path, cfg: FashionFlowConfig, written: set[int] | None = None) -> VideoClips:
    """Decode a video, choose its clips (seeded by the file name) and resize their frames.

    `written`: start frames of clips already written (left out). Raises VideoReadError or
    ClipTooShortError naming the reason.
    """
    d = cfg.data
    limit = frames_needed(d) if d.reference_candidates == 0 else None  # candidates span the whole video
    try:  # decode only the frames the policy can use; short videos need the full count
        video, fps = read_video(path, 0, limit) if limit else read_video(path)
    except VideoReadError:
        if limit is None:
            raise
        video, fps = read_video(path)
    rng = np.random.default_rng(video_seed(d, path.name))
    all_starts = clip_starts(d, len(video), rng)
    starts = [s for s in all_starts if s not in (written or ())]
    frames = np.empty((len(starts), d.num_frames, d.height, d.width, 3), np.uint8)  # n f h w c
    for n, start in enumerate(starts):
        for i, frame in enumerate(video[start:start + d.num_frames]):
            frames[n, i] = resize_frame(frame, d.height, d.width, d.resize)
    candidates = reference_candidate_frames(d, len(video))
    references = (np.stack([resize_frame(video[i], d.height, d.width, d.resize) for i in candidates])
                  if candidates else None)
    clips = VideoClips(path.name, starts, frames, fps, (video.shape[1], video.shape[2]), len(all_starts),
                      candidates, references)
    if d.poses:
        clips.keypoints, clips.reference_keypoints, clips.pose_source = clip_keypoints(path, clips, cfg)
    return clips


def clip_keypoints(path: Path, clips: VideoClips, cfg: FashionFlowConfig
                   ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(keypoints float32 [n, f, 18, 3] of the clips, of the reference candidates [k, 18, 3]
    (None without candidates), where they came from).

    The video's sidecar `NAME.pose.npz` when there is one (the synthetic clips' true poses),
    moved with the frames' resize or crop; else MediaPipe on the resized frames of each clip
    (`fashionflow.pose.extract_keypoints`) and on each candidate frame alone. A clip or a
    candidate with nobody in it gets all confidences 0 (pose-free training for that clip, an
    unknown pose for that candidate) and one line on stderr.
    """
    from fashionflow.synthetic import read_pose_sidecar

    d = cfg.data
    sidecar = read_pose_sidecar(path)
    if sidecar is not None:
        video_keypoints = sidecar["keypoints"]
        if any(start + d.num_frames > len(video_keypoints) for start in clips.starts) or any(
                i >= len(video_keypoints) for i in clips.reference_frames):
            raise ValueError(f"its pose sidecar has {len(video_keypoints)} frames, fewer than a clip needs")
        keypoints = np.stack([video_keypoints[start:start + d.num_frames] for start in clips.starts])
        resize = lambda k: resize_keypoints(k, *clips.original_size, d.height, d.width, d.resize)  # noqa: E731
        candidates = resize(video_keypoints[clips.reference_frames]) if clips.reference_frames else None
        return resize(keypoints), candidates, "sidecar"
    from fashionflow.pose.extract import NoPersonError, extract_keypoints

    keypoints = np.zeros((len(clips.starts), d.num_frames, 18, 3), np.float32)
    for index, (start, frames) in enumerate(zip(clips.starts, clips.frames)):
        try:
            keypoints[index] = extract_keypoints(frames, video=True)
        except NoPersonError:
            print(f"{path.name}: no person found in the clip at frame {start}; its poses are empty",
                  file=sys.stderr, flush=True)
    candidates = None
    if clips.references is not None:
        candidates = np.zeros((len(clips.references), 18, 3), np.float32)
        for index, (frame_index, image) in enumerate(zip(clips.reference_frames, clips.references)):
            try:
                candidates[index] = extract_keypoints(image, video=False)[0]
            except NoPersonError:
                print(f"{path.name}: no person found in reference candidate frame {frame_index}; its pose is unknown",
                      file=sys.stderr, flush=True)
    return keypoints, candidates, "extracted"


# --- encoding and writing -----------------------------------------------------------------

@dataclass
class Encoders:
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    processor: object
    device: torch.device
    batch_size: int
    dtype_name: str


def load_encoders(cfg: FashionFlowConfig, device: torch.device, dtype: str = "float32", batch_size: int = 8) -> Encoders:
    from fashionflow.encoders import load_image_encoder, load_vae

    vae = load_vae(cfg.encoders, device=device, dtype=DTYPES[dtype])
    image_encoder, processor = load_image_encoder(cfg.encoders, device=device, dtype=DTYPES[dtype])
    return Encoders(vae, image_encoder, processor, device, batch_size, dtype)


@torch.no_grad()
def encode_clip(frames: np.ndarray, cfg: FashionFlowConfig, enc: Encoders, seed: int) -> dict[str, torch.Tensor]:
    """uint8 frames [f, H, W, 3] -> the tensors of one clip file (all on the CPU).

    latents [f, 4, h, w] = mean + std * noise (released: sampled) with the noise drawn on the
    CPU from `seed`, so a clip is the same whatever the device or batch size.
    """
    from fashionflow.encoders import clip_hidden_states, encode_latent_dist

    video = torch.from_numpy(frames).to(enc.device)
    images01 = video.permute(0, 3, 1, 2).float() / 255.0  # f h w c -> f c h w, in [0, 1]
    mean, std = encode_latent_dist(enc.vae, images01, cfg.encoders, chunk_size=enc.batch_size)
    mean, std = mean.float().cpu(), std.float().cpu()
    latents = mean
    if cfg.data.sample_latent:
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
        latents = mean + std * noise
    clip = clip_hidden_states(enc.image_encoder, enc.processor, images01[:1], cfg.encoders.preprocessing)
    return {
        "latents": latents.to(DTYPES[cfg.data.latent_dtype]).contiguous(),
        "image": torch.from_numpy(np.ascontiguousarray(frames[0].transpose(2, 0, 1))),  # h w c -> c h w
        "image_latent_mean": mean[0].contiguous(),  # frame 0 is the conditioning image
        "image_latent_std": std[0].contiguous(),
        "clip_hidden_states": clip[0].float().cpu().contiguous(),
    }


@torch.no_grad()
def encode_reference_candidates(clips: VideoClips, cfg: FashionFlowConfig, enc: Encoders) -> dict[str, torch.Tensor]:
    """A video's reference candidates -> the tensors every clip file of the video holds (CPU):
    reference_frames int64 [k], reference_images uint8 [k, 3, H, W], reference_latent_mean /
    reference_latent_std float32 [k, 4, h, w], reference_clip_hidden_states float32 [k, n, C]."""
    from fashionflow.encoders import clip_hidden_states, encode_latent_dist

    if clips.references is None:
        return {}
    images01 = torch.from_numpy(clips.references).to(enc.device).permute(0, 3, 1, 2).float() / 255.0
    mean, std = encode_latent_dist(enc.vae, images01, cfg.encoders, chunk_size=enc.batch_size)
    clip = clip_hidden_states(enc.image_encoder, enc.processor, images01, cfg.encoders.preprocessing)
    return {
        "reference_frames": torch.tensor(clips.reference_frames, dtype=torch.int64),
        "reference_images": torch.from_numpy(np.ascontiguousarray(clips.references.transpose(0, 3, 1, 2))),
        "reference_latent_mean": mean.float().cpu().contiguous(),
        "reference_latent_std": std.float().cpu().contiguous(),
        "reference_clip_hidden_states": clip.float().cpu().contiguous(),
    }


def clip_metadata(cfg: FashionFlowConfig, clips: VideoClips, index: int, encode_dtype: str) -> dict[str, str]:
    """safetensors string metadata of one clip (read back by the dataset and the manifest)."""
    d = cfg.data
    settings = {s: config_to_dict(cfg)[s] for s in ("data", "encoders")}
    return {
        "format": CLIP_FORMAT,
        "source": clips.name,
        "start_frame": str(clips.starts[index]),
        "num_frames": str(d.num_frames),
        "clips_in_video": str(clips.clips_in_video),
        "fps": repr(float(clips.fps)),
        "original_height": str(clips.original_size[0]),
        "original_width": str(clips.original_size[1]),
        "height": str(d.height),
        "width": str(d.width),
        "resize": d.resize,
        "latent_dtype": d.latent_dtype,
        "sampled": str(d.sample_latent).lower(),
        "reference_candidates": str(len(clips.reference_frames)),
        **({"poses": clips.pose_source} if clips.keypoints is not None else {}),
        "encode_dtype": encode_dtype,
        "config_hash": config_hash(cfg),
        "config": json.dumps(settings, sort_keys=True),
        **encoder_metadata(cfg),
    }


def write_clip(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


# --- the output folder: what is done, the manifest -----------------------------------------

MANIFEST_FIELDS = ("source", "start_frame", "num_frames", "fps", "original_height", "original_width", "config_hash")


def manifest_record(file_name: str, metadata: dict[str, str]) -> dict:
    record = {"file": file_name, **{k: metadata.get(k) for k in MANIFEST_FIELDS}}
    for key in ("start_frame", "num_frames", "original_height", "original_width"):
        record[key] = int(record[key])
    record["fps"] = float(record["fps"])
    return record


def append_manifest(folder: Path, record: dict) -> None:
    """One line, one write to an O_APPEND file: lines of concurrent ranks do not interleave."""
    line = (json.dumps(record) + "\n").encode()
    handle = os.open(folder / MANIFEST_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, line)
    finally:
        os.close(handle)


@dataclass
class OutputState:
    """Clips already in the output folder: source video name -> written starts and expected count."""

    done: dict[str, set[int]] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def is_complete(self, video_name: str) -> bool:
        return video_name in self.done and len(self.done[video_name]) >= self.expected[video_name]


def scan_output(folder: Path, cfg: FashionFlowConfig) -> OutputState:
    """Read the headers of the clips in `folder`; refuse a folder projected with another config."""
    state, wanted, foreign = OutputState(), config_hash(cfg), {}
    for path in list_clip_files(folder):
        try:
            meta = read_clip_header(path)["metadata"]
        except LatentDatasetError as error:
            state.unreadable.append(str(error))  # rewritten if its video still produces this clip
            continue
        if meta.get("config_hash") != wanted:
            foreign.setdefault(meta.get("config_hash"), path.name)
            continue
        source = meta["source"]
        state.done.setdefault(source, set()).add(int(meta["start_frame"]))
        state.expected[source] = int(meta["clips_in_video"])
        state.records.append(manifest_record(path.name, meta))
    if foreign:
        (other, example), = list(foreign.items())[:1]
        raise ProjectionError(
            f"{folder} holds clips projected with another data/encoders config (hash {other}, e.g. {example}; "
            f"this config: {wanted}); use another --output-dir or remove those files")
    return state


def rebuild_manifest(folder: Path, state: OutputState) -> None:
    """Rewrite the manifest (atomically) from the clip files themselves."""
    text = "".join(json.dumps(r) + "\n" for r in sorted(state.records, key=lambda r: r["file"]))
    atomic_write_text(folder / MANIFEST_NAME, text)


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of writes that a killed run never renamed."""
    for stale in folder.glob(f".*.tmp{CLIP_SUFFIX}"):
        stale.unlink(missing_ok=True)


# --- the run ------------------------------------------------------------------------------

@dataclass
class ProjectionSummary:
    projected: dict[str, int] = field(default_factory=dict)  # video -> clips written now
    already_done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # video -> reason
    videos_per_rank: list[int] = field(default_factory=list)  # pending videos each rank handled

    def merge(self, other: "ProjectionSummary") -> None:
        self.projected.update(other.projected)
        self.already_done += other.already_done
        self.skipped.update(other.skipped)
        self.videos_per_rank += other.videos_per_rank

    def text(self) -> str:
        total = len(self.projected) + len(self.already_done) + len(self.skipped)
        lines = [f"projection: {total} videos: {len(self.projected)} projected ({sum(self.projected.values())} clips "
                 f"written), {len(self.already_done)} already done, {len(self.skipped)} skipped"
                 + (f"; ranks handled {' + '.join(map(str, self.videos_per_rank))} videos"
                    if len(self.videos_per_rank) > 1 else "")]
        lines += [f"  skipped {name}: {reason}" for name, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def _reason(error: Exception, path: Path) -> str:
    text = str(error)
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text if isinstance(error, (VideoReadError, ClipTooShortError)) else f"{type(error).__name__}: {text}"


def _load_or_error(path: Path, cfg: FashionFlowConfig, written: set[int] | None):
    try:
        return load_video_clips(path, cfg, written)
    except Exception as error:  # any bad input: reported and skipped, never fatal
        return error


def project_videos(cfg: FashionFlowConfig, videos: list[Path], output_dir: Path, state: OutputState,
                   enc: Encoders, decode_workers: int = 1, progress=None) -> ProjectionSummary:
    """Project `videos` (this rank's share) into `output_dir`; decoding runs ahead in threads."""
    summary = ProjectionSummary()
    workers = max(1, decode_workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {}

        def decode_ahead(index: int) -> None:
            if index < len(videos):
                path = videos[index]
                futures[index] = pool.submit(_load_or_error, path, cfg, state.done.get(path.name))

        for index in range(workers + 1):
            decode_ahead(index)
        for index, path in enumerate(videos):
            decode_ahead(index + workers + 1)
            clips = futures.pop(index).result()
            if isinstance(clips, Exception):
                summary.skipped[path.name] = _reason(clips, path)
            else:
                try:
                    summary.projected[path.name] = _write_clips(clips, cfg, output_dir, enc)
                except Exception as error:  # e.g. a frame size the VAE rejects: skip this video only
                    summary.skipped[path.name] = _reason(error, path)
            if progress is not None:
                if path.name in summary.skipped:
                    progress.write(f"skipped {path.name}: {summary.skipped[path.name]}")
                progress.update()
    return summary


def _write_clips(clips: VideoClips, cfg: FashionFlowConfig, output_dir: Path, enc: Encoders) -> int:
    seed = video_seed(cfg.data, clips.name)
    references = encode_reference_candidates(clips, cfg, enc) if clips.starts else {}
    for index, start in enumerate(clips.starts):
        tensors = {**encode_clip(clips.frames[index], cfg, enc, distributed.derive_seed(seed, start)), **references}
        if clips.keypoints is not None:
            tensors["keypoints"] = torch.from_numpy(np.ascontiguousarray(clips.keypoints[index]))
        if clips.reference_keypoints is not None:
            tensors["reference_keypoints"] = torch.from_numpy(np.ascontiguousarray(clips.reference_keypoints))
        metadata = clip_metadata(cfg, clips, index, enc.dtype_name)
        name = clip_file_name(clips.name, start)
        write_clip(output_dir / name, tensors, metadata)
        append_manifest(output_dir, manifest_record(name, metadata))
    return len(clips.starts)


def find_videos(dataset: Path, limit: int | None = None) -> list[Path]:
    if not dataset.is_dir():
        raise ProjectionError(f"video folder {dataset} does not exist")
    videos = list_videos(dataset)[:limit]
    if not videos:
        raise ProjectionError(f"no videos (.mp4 .mov .webm .avi .mkv .m4v) in {dataset}")
    keys: dict[str, str] = {}
    for path in videos:
        other = keys.setdefault(clip_key(path.name), path.name)
        if other != path.name:
            raise ProjectionError(f"{other} and {path.name} in {dataset} map to the same clip names; rename one")
    return videos


def run_projection(cfg: FashionFlowConfig, dataset: str | os.PathLike, output_dir: str | os.PathLike,
                   batch_size: int = 8, device: str | None = None, dtype: str = "float32",
                   limit: int | None = None, decode_workers: int = 1, show_progress: bool = True) -> ProjectionSummary:
    """The whole run on this rank (works with and without torchrun); every rank returns the global summary."""
    from tqdm import tqdm

    ctx = distributed.init_distributed(device)
    output_dir = Path(output_dir)
    videos = find_videos(Path(dataset), limit)
    state, error = None, None
    if ctx.is_main:  # one reader of the folder; the others wait for its answer
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(output_dir)
            state = scan_output(output_dir, cfg)
            rebuild_manifest(output_dir, state)
        except ProjectionError as caught:
            error = str(caught)
    state, error = distributed.broadcast_from_main((state, error), ctx)
    if error:
        raise ProjectionError(error)
    pending = [p for p in videos if not state.is_complete(p.name)]
    mine = pending[ctx.rank::ctx.world_size]  # every rank sees the same sorted list
    summary = ProjectionSummary(already_done=[p.name for p in videos if ctx.is_main and state.is_complete(p.name)],
                                videos_per_rank=[len(mine)])
    if mine:
        enc = load_encoders(cfg, ctx.device, dtype, batch_size)
        with tqdm(total=len(mine), unit="video", desc=f"projecting (rank {ctx.rank})",
                  disable=not (show_progress and ctx.is_main), file=sys.stderr) as progress:
            summary.merge(project_videos(cfg, mine, output_dir, state, enc, decode_workers, progress))
    gathered = distributed.gather_to_main(summary, ctx)
    if ctx.is_main:
        total = ProjectionSummary()
        for part in gathered:
            total.merge(part)
        rebuild_manifest(output_dir, scan_output(output_dir, cfg))
        summary = total
    return distributed.broadcast_from_main(summary, ctx)  # every rank exits with the same status
