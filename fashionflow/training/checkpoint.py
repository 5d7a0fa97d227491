"""Step-numbered, atomic training checkpoints; resuming is rerunning the same command.

Layout of `RUN/checkpoints/step-0000400/` (written to a hidden temporary folder, renamed when
complete, so a run killed mid-save leaves the previous checkpoint as the latest):

    model_index.json, unet/, adapter/, scheduler/, vae/, image_encoder/, feature_extractor/
        a complete pipeline folder (`inference.py --checkpoint`); unet/ and adapter/ hold the
        EMA weights when EMA is on. Without loadable encoders only unet/, adapter/ and
        scheduler/ are written and state.json says so.
    config.yaml                   the resolved config
    training/state.json           step, epoch, samples seen, world size, where each weight set is
    training/unet/, adapter/      raw (non-EMA) weights, only when EMA is on
    training/optimizer.pt         optimiser, LR schedule and grad-scaler state (plain tensors)
    training/rng.pt               every rank's RNG states (plain tensors)

Everything loads with safetensors or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from safetensors.torch import load_file

from fashionflow.config import FashionFlowConfig, save_config
from fashionflow.training.ema import ModelEMA
from fashionflow.utils import atomic_directory

STEP_FOLDER = re.compile(r"^step-(\d{7,})$")
STATE_FILE = Path("training") / "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing parts or does not match the run."""


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoints_dir(run_dir) / f"step-{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a state file), oldest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = STEP_FOLDER.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_latest(run_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete hidden half-written folders left by a run killed mid-save; returns them."""
    folder = checkpoints_dir(run_dir)
    stale = [p for p in folder.glob(".step-*") if p.is_dir()] if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Keep the newest `keep_last` checkpoints; returns the removed folders."""
    removed = [path for _, path in list_checkpoints(run_dir)[:-keep_last]]
    for path in removed:
        shutil.rmtree(path)
    return removed


# ---------------------------------------------------------------- RNG states as plain tensors

def capture_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's python / numpy / torch (and CUDA) RNG states, as tensors."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([gauss], dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": torch.tensor([py_version, -1 if py_gauss is None else 1], dtype=torch.int64),
        "python_gauss": torch.tensor([0.0 if py_gauss is None else py_gauss], dtype=torch.float64),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss = state["numpy_meta"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"][0])))
    version, gauss_flag = state["python_meta"].tolist()
    gauss = None if gauss_flag < 0 else float(state["python_gauss"][0])
    random.setstate((version, tuple(state["python"].tolist()), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------- save / load

def _save_models(folder: Path, unet, adapter, scheduler, make_pipeline: Optional[Callable]) -> bool:
    """A pipeline folder when `make_pipeline(unet, adapter)` is given, else unet/ adapter/ scheduler/ only."""
    if make_pipeline is not None:
        make_pipeline(unet, adapter).save_pretrained(folder, safe_serialization=True)
        return True
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    adapter.save_pretrained(folder / "adapter", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    return False


def save_checkpoint(run_dir: str | Path, step: int, *, unet, adapter, scheduler, optimizer, lr_scheduler,
                    grad_scaler, ema: Optional[ModelEMA], rng_states: list[dict], cfg: FashionFlowConfig,
                    state: dict, make_pipeline: Optional[Callable] = None, keep_last: int = 3) -> Path:
    """Write `RUN/checkpoints/step-XXXXXXX/` atomically (rank 0 only), then prune old ones.

    `state`: json-able bookkeeping (step, epoch, samples seen, world size, ...).
    `make_pipeline(unet, adapter)`: a pipeline to save, or None without encoders; `scheduler` is
    saved only in the latter case (a pipeline brings its own).
    """
    final = checkpoint_path(run_dir, step)
    with atomic_directory(final) as tmp:
        training = tmp / "training"
        training.mkdir()
        if ema is not None:
            with ema.averaged_weights():
                complete = _save_models(tmp, unet, adapter, scheduler, make_pipeline)
            unet.save_pretrained(training / "unet", safe_serialization=True)
            adapter.save_pretrained(training / "adapter", safe_serialization=True)
            weights = {"unet": "training/unet", "adapter": "training/adapter"}
            ema_info = {"unet": "unet", "adapter": "adapter", "optimization_step": ema.optimization_step}
        else:
            complete = _save_models(tmp, unet, adapter, scheduler, make_pipeline)
            weights, ema_info = {"unet": "unet", "adapter": "adapter"}, None
        torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                    "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else {}},
                   training / "optimizer.pt")
        torch.save({f"rank-{rank}": rng for rank, rng in enumerate(rng_states)}, training / "rng.pt")
        save_config(cfg, tmp / "config.yaml")
        full_state = {**state, "step": step, "weights": weights, "ema": ema_info, "pipeline": complete,
                      "num_rng_states": len(rng_states), "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if not complete:
            full_state["note"] = ("no VAE / CLIP image encoder could be loaded (encoders.vae / "
                                  "encoders.image_encoder), so this folder holds unet/, adapter/ and "
                                  "scheduler/ but not a complete pipeline")
        (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=2))  # written last
    prune_checkpoints(run_dir, keep_last)
    return final


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """State dict from a diffusers model folder (one or several *.safetensors files)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    return state


def read_state(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint} is not a training checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def load_checkpoint(checkpoint: str | Path, *, unet, adapter, optimizer, lr_scheduler, grad_scaler,
                    ema: Optional[ModelEMA]) -> tuple[dict, dict[str, dict]]:
    """Restore weights, EMA, optimiser, schedule and scaler in place.

    Returns (state.json contents, {"rank-N": rng state}).
    """
    checkpoint = Path(checkpoint)
    state = read_state(checkpoint)
    unet.load_state_dict(load_weights(checkpoint / state["weights"]["unet"]))
    adapter.load_state_dict(load_weights(checkpoint / state["weights"]["adapter"]))
    if ema is not None:
        if state["ema"] is None:  # EMA switched on at resume: start it from the current weights
            ema.load_averaged_weights({"unet": unet.state_dict(), "adapter": adapter.state_dict()}, 0)
        else:
            ema.load_averaged_weights({name: load_weights(checkpoint / state["ema"][name])
                                       for name in ("unet", "adapter")}, state["ema"]["optimization_step"])
    bundle = torch.load(checkpoint / "training" / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(bundle["optimizer"])
    lr_scheduler.load_state_dict(bundle["lr_scheduler"])
    if grad_scaler is not None and bundle["grad_scaler"]:
        grad_scaler.load_state_dict(bundle["grad_scaler"])
    rng = torch.load(checkpoint / "training" / "rng.pt", map_location="cpu", weights_only=True)
    return state, rng
