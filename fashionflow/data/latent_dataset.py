"""The projected latent clips as a torch Dataset (what training reads; FASHIONFLOW.md, "Data").

`project_latent_space.py` writes one safetensors file per clip:

| tensor | shape | dtype |
| --- | --- | --- |
| `latents` | [f, 4, h, w] | float32 or float16: each frame's VAE latent (sampled) x scaling factor |
| `image` | [3, H, W] | uint8: the conditioning image = the clip's first frame after resizing |
| `image_latent_mean`, `image_latent_std` | [4, h, w] | float32: the conditioning image's VAE latent distribution x scaling factor |
| `clip_hidden_states` | [50, C] | float32: CLIP `last_hidden_state` of the conditioning image |

Projected with `data.reference_candidates` = k > 0, a file also holds k reference candidates
from frames spread over the whole video (read only for `model.max_references` > 0; older
files without them still load for single-image training):

| tensor | shape | dtype |
| --- | --- | --- |
| `reference_frames` | [k] | int64: frame index of each candidate in the video |
| `reference_images` | [k, 3, H, W] | uint8: the candidate frames after resizing |
| `reference_latent_mean`, `reference_latent_std` | [k, 4, h, w] | float32: their VAE latent distribution x scaling factor |
| `reference_clip_hidden_states` | [k, 50, C] | float32: their CLIP `last_hidden_state` |

Projected with `data.poses`, a file also holds the clip's poses (read only for
`model.pose_guider`; files without them still load for pose-free training):

| tensor | shape | dtype |
| --- | --- | --- |
| `keypoints` | [f, 18, 3] | float32: OpenPose-18 keypoints per frame, x y in [0, 1] of the resized frame, confidence |
| `reference_keypoints` | [k, 18, 3] | float32: likewise for each reference candidate (with candidates; read for `model.reference_pose_routing`) |

plus string metadata (source video, start frame, fps, original size, config hash, encoders).
The dataset checks every file's header against the training config up front, so a wrong
folder fails at start-up with a message saying what differs, and loads tensors lazily.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import Dataset

from fashionflow.config import FashionFlowConfig, config_hash

CLIP_FORMAT = "fashionflow-latent-clip/1"
CLIP_SUFFIX = ".safetensors"
MANIFEST_NAME = "manifest.jsonl"
TENSOR_NAMES = ("latents", "image", "image_latent_mean", "image_latent_std", "clip_hidden_states")
REFERENCE_TENSOR_NAMES = ("reference_frames", "reference_images", "reference_latent_mean", "reference_latent_std",
                          "reference_clip_hidden_states")
# metadata that must match the training config: latents from another VAE, scale or
# preprocessing live in another space, whatever their shape (vae_subfolder is recorded only:
# a local copy may hold the VAE with or without the hub repo's `vae/` folder)
CHECKED_ENCODER_KEYS = ("vae", "vae_scaling_factor", "image_encoder", "preprocessing")
KEYPOINT_SHAPE = (18, 3)  # per frame: OpenPose-18 joints x (x, y, confidence); fashionflow.pose.keypoints


class LatentDatasetError(ValueError):
    """The latent folder is missing, empty, unreadable or does not match the config."""


def list_clip_files(folder: str | os.PathLike) -> list[Path]:
    """Clip files in `folder`, sorted by name (hidden temporary files of atomic writes excluded)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(f"*{CLIP_SUFFIX}") if p.is_file() and not p.name.startswith("."))


def read_clip_header(path: str | os.PathLike) -> dict:
    """Metadata and tensor shapes of one clip file without loading tensors.

    Returns {"metadata": {str: str}, "shapes": {name: [..]}, "dtypes": {name: "F32"...}}.
    Raises LatentDatasetError naming the file when it is not a readable clip file.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
            dtypes = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}
    except Exception as error:  # safetensors raises several types for damaged files
        raise LatentDatasetError(f"{path}: not a readable safetensors file ({type(error).__name__}: {error})") from None
    if metadata.get("format") != CLIP_FORMAT:
        raise LatentDatasetError(f"{path}: not a fashionflow latent clip (metadata format "
                                 f"{metadata.get('format')!r}, expected {CLIP_FORMAT!r})")
    missing = [name for name in TENSOR_NAMES if name not in shapes]
    if missing:
        raise LatentDatasetError(f"{path}: missing tensors {', '.join(missing)}")
    return {"metadata": metadata, "shapes": shapes, "dtypes": dtypes}


def expected_shapes(cfg: FashionFlowConfig) -> dict[str, list[int]]:
    """The tensor shapes a config's model trains on."""
    m, d = cfg.model, cfg.data
    latent = [m.in_channels, m.latent_height, m.latent_width]
    return {
        "latents": [d.num_frames, *latent],
        "image": [3, d.height, d.width],
        "image_latent_mean": latent,
        "image_latent_std": latent,
        "clip_hidden_states": [m.num_context_tokens, m.context_dim],
    }


def expected_reference_shapes(cfg: FashionFlowConfig, k: int) -> dict[str, list[int]]:
    """The shapes of k reference candidates (the per-frame shapes of `expected_shapes`, k of them)."""
    per_frame = expected_shapes(cfg)
    return {"reference_frames": [k], "reference_images": [k, *per_frame["image"]],
            "reference_latent_mean": [k, *per_frame["image_latent_mean"]],
            "reference_latent_std": [k, *per_frame["image_latent_std"]],
            "reference_clip_hidden_states": [k, *per_frame["clip_hidden_states"]]}


def check_reference_header(path: Path, header: dict, cfg: FashionFlowConfig) -> int:
    """Raise LatentDatasetError unless the file holds reference candidates of the config's shapes; returns k."""
    shapes = header["shapes"]
    if "reference_frames" not in shapes:
        raise LatentDatasetError(f"{path}: no reference candidates, but model.max_references="
                                 f"{cfg.model.max_references} trains with references: project the videos with "
                                 f"data.reference_candidates=K (e.g. 4)")
    k = shapes["reference_frames"][0]
    for name, wanted in expected_reference_shapes(cfg, k).items():
        if shapes.get(name) != wanted:
            raise LatentDatasetError(f"{path}: {name} has shape {shapes.get(name)} but the config expects {wanted}")
    if k < 1:
        raise LatentDatasetError(f"{path}: holds 0 reference candidates")
    return k


def encoder_metadata(cfg: FashionFlowConfig) -> dict[str, str]:
    """The encoder settings as stored in (and compared against) clip metadata."""
    e = cfg.encoders
    return {"vae": e.vae, "vae_subfolder": e.vae_subfolder or "", "vae_scaling_factor": repr(float(e.vae_scaling_factor)),
            "image_encoder": e.image_encoder, "preprocessing": e.preprocessing}


_SHAPE_HINTS = {
    "latents": "data.num_frames, model.in_channels, model.latent_height, model.latent_width",
    "image": "data.height, data.width",
    "image_latent_mean": "model.in_channels, model.latent_height, model.latent_width",
    "image_latent_std": "model.in_channels, model.latent_height, model.latent_width",
    "clip_hidden_states": "model.num_context_tokens, model.context_dim (the CLIP tower's width)",
}


def _same_model(stored: str, wanted: str) -> bool:
    """The same model: equal ids, the same folder, or the same last name (a hub id and its local
    copy, e.g. CompVis/stable-diffusion-v1-4 and weights/stable-diffusion-v1-4)."""
    if stored == wanted:
        return True
    if stored and wanted and os.path.isdir(stored) and os.path.isdir(wanted):
        return Path(stored).resolve() == Path(wanted).resolve()
    return bool(stored and wanted) and _model_name(stored) == _model_name(wanted)


def _model_name(model: str) -> str:
    return Path(model.rstrip("/\\")).name.lower()


def check_clip_header(path: Path, header: dict, cfg: FashionFlowConfig) -> None:
    """Raise LatentDatasetError saying what differs between a clip file and the config."""
    for name, wanted in expected_shapes(cfg).items():
        got = header["shapes"][name]
        if got != wanted:
            raise LatentDatasetError(
                f"{path}: {name} has shape {got} but the config expects {wanted} ({_SHAPE_HINTS[name]}); "
                f"these latents were projected with another config: project the videos again with this one")
    stored, wanted = header["metadata"], encoder_metadata(cfg)
    for key in CHECKED_ENCODER_KEYS:
        value = wanted[key]
        same = _same_model if key in ("vae", "image_encoder") else str.__eq__
        if not same(stored.get(key, ""), value):
            raise LatentDatasetError(
                f"{path}: projected with encoders.{key}={stored.get(key)!r} but the config has "
                f"encoders.{key}={value!r}; latents of another VAE / preprocessing do not match the model: "
                f"project the videos again or set encoders.{key}")


def check_keypoint_header(path: Path, header: dict, cfg: FashionFlowConfig) -> None:
    """Raise LatentDatasetError unless the file holds keypoints [f, 18, 3] (what model.pose_guider trains on)."""
    got, wanted = header["shapes"].get("keypoints"), [cfg.data.num_frames, *KEYPOINT_SHAPE]
    if got is None:
        raise LatentDatasetError(f"{path}: no keypoints, but model.pose_guider=true trains on poses: project the "
                                 f"videos with data.poses=true (sidecar NAME.pose.npz keypoints, else extracted)")
    if got != wanted:
        raise LatentDatasetError(f"{path}: keypoints have shape {got} but the config expects {wanted}")


class LatentClipDataset(Dataset):
    """Latent clips written by `project_latent_space.py`, checked against a training config.

    Items are dicts: latents float32 [f, 4, h, w], image uint8 [3, H, W],
    image_latent_mean / image_latent_std float32 [4, h, w], clip_hidden_states float32
    [50, C], name str (the file name without suffix). With `model.max_references` > 0 also
    the reference candidates (`REFERENCE_TENSOR_NAMES`, k of them) and reference_valid bool [k]:
    False for a candidate that is the clip's own conditioning frame. With `model.pose_guider`
    also keypoints float32 [f, 18, 3] and pose uint8 [f, 3, H, W], them drawn as OpenPose
    skeletons (drawn here, in the DataLoader's workers, rather than in the training step). With
    both, reference_keypoints float32 [k, 18, 3]: each candidate's pose (`candidate_keypoints`).

    subset: None (all clips), an int n (a fixed, evenly spaced choice of n clips, the same
    on every run and rank), or a sequence of clip names or indices.
    """

    def __init__(self, folder: str | os.PathLike, cfg: FashionFlowConfig, subset: int | Sequence | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise LatentDatasetError(f"latent folder {self.folder} does not exist; create it with "
                                     f"`python project_latent_space.py --config C --dataset VIDEOS --output-dir {self.folder}`")
        files = list_clip_files(self.folder)
        if not files:
            raise LatentDatasetError(f"latent folder {self.folder} holds no clip files (*{CLIP_SUFFIX}); project videos "
                                     f"into it first: `python project_latent_space.py --config C --dataset VIDEOS "
                                     f"--output-dir {self.folder}`")
        self.headers = {}
        self.with_references = cfg.model.max_references > 0
        self.with_poses = cfg.model.pose_guider
        self.frame_size = (cfg.data.height, cfg.data.width)
        candidates = {}
        for path in files:
            header = read_clip_header(path)
            check_clip_header(path, header, cfg)
            if self.with_references:
                candidates.setdefault(check_reference_header(path, header, cfg), path)
            if self.with_poses:
                check_keypoint_header(path, header, cfg)
            self.headers[path.stem] = header["metadata"]
        if len(candidates) > 1:
            (k1, a), (k2, b) = list(candidates.items())[:2]
            raise LatentDatasetError(f"{self.folder}: clips hold different numbers of reference candidates "
                                     f"({k1} in {a.name}, {k2} in {b.name}); project the folder with one config")
        hashes = {meta.get("config_hash") for meta in self.headers.values()}
        if hashes != {config_hash(cfg)}:
            warnings.warn(f"latent folder {self.folder} was projected with data/encoders config hash(es) "
                          f"{', '.join(sorted(map(str, hashes)))}, the training config has {config_hash(cfg)}: the shapes "
                          f"and encoders match, but clip choice or resizing may differ (see the files' metadata)",
                          stacklevel=2)
        self.files = files
        if subset is not None:
            self.files = self._select(subset)

    def _select(self, subset: int | Sequence) -> list[Path]:
        if isinstance(subset, int):
            if not 0 < subset <= len(self.files):
                raise LatentDatasetError(f"subset of {subset} clips asked from {len(self.files)} in {self.folder}")
            index = np.linspace(0, len(self.files) - 1, subset).round().astype(int)
            return [self.files[i] for i in index]
        by_name = {p.stem: p for p in self.files}
        chosen = []
        for item in subset:
            if isinstance(item, (int, np.integer)):
                chosen.append(self.files[int(item)])
            elif str(item) in by_name:
                chosen.append(by_name[str(item)])
            else:
                raise LatentDatasetError(f"no clip named {item!r} in {self.folder}")
        return chosen

    def validation_subset(self, n: int) -> "LatentClipDataset":
        """A fixed, evenly spaced subset of n clips (same choice on every run and rank)."""
        subset = copy.copy(self)
        subset.files = self._select(n)
        return subset

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.files]

    def metadata(self, index: int) -> dict:
        """The string metadata of clip `index` (source video, start frame, fps, ...)."""
        meta = dict(self.headers[self.files[index].stem])
        if "config" in meta:
            meta["config"] = json.loads(meta["config"])
        return meta

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        tensors = load_file(str(path))
        item = {name: tensors[name].float() for name in TENSOR_NAMES if name != "image"}
        item["image"] = tensors["image"].to(torch.uint8)
        item["name"] = path.stem
        if self.with_references:
            item.update({name: tensors[name].float() for name in REFERENCE_TENSOR_NAMES[2:]})
            item["reference_frames"] = tensors["reference_frames"].long()
            item["reference_images"] = tensors["reference_images"].to(torch.uint8)
            start = self.headers[path.stem].get("start_frame")
            item["reference_valid"] = (item["reference_frames"] != int(start) if start is not None
                                       else torch.ones(len(item["reference_frames"]), dtype=torch.bool))
        if self.with_poses:
            from fashionflow.pose.render import render_poses

            item["keypoints"] = tensors["keypoints"].float()
            skeletons = render_poses(item["keypoints"].numpy(), *self.frame_size)  # f H W 3
            item["pose"] = torch.from_numpy(skeletons).permute(0, 3, 1, 2).contiguous()  # f 3 H W
            if self.with_references:
                start = self.headers[path.stem].get("start_frame")
                item["reference_keypoints"] = candidate_keypoints(tensors, None if start is None else int(start))
        return item


def candidate_keypoints(tensors: dict, start: int | None) -> torch.Tensor:
    """Each reference candidate's pose float32 [k, 18, 3]: the stored `reference_keypoints`; in
    files projected before they were stored, the clip's own keypoints for a candidate inside its
    window (start .. start + f - 1), confidence 0 (unknown) for the others."""
    if "reference_keypoints" in tensors:
        return tensors["reference_keypoints"].float()
    frames, clip = tensors["reference_frames"].long(), tensors["keypoints"].float()
    poses = torch.zeros(len(frames), *clip.shape[1:])
    if start is not None:
        inside = (frames >= start) & (frames < start + len(clip))
        poses[inside] = clip[frames[inside] - start]
    return poses
