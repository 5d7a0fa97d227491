"""The training loop (FASHIONFLOW.md, "Training"; the released train.py, rebuilt for torchrun).

One optimiser step = `grad_accum_steps` micro-batches of `batch_size` clips on every rank:

1. read the micro-batch the step-derived order assigns to this rank (`sampler.StepOrder`);
2. draw, from a generator seeded by (seed, rank, step, micro-step): a VAE sample of the
   conditioning image (mean + std * eps, as the released code re-encodes it every step), the
   condition-dropout mask, the timesteps and the noise; with the pose guider, after those,
   the pose-dropout mask (the clip's skeletons are rendered from its stored keypoints);
3. adapter(CLIP tokens, image latent) -> context; loss = diffusion_loss (frame 0 kept clean);
4. all-reduce the loss; stop on a non-finite value before the optimiser touches the weights;
5. clip, AdamW step, LR schedule, EMA (with fp16 loss scaling, a step the scaler skips for
   inf/NaN gradients advances neither the schedule nor the EMA); log, preview and checkpoint
   on schedule.

Nothing random depends on process-global RNG state, so rerunning the same command resumes
from the latest checkpoint and reproduces the uninterrupted run's losses bitwise (same world
size and device type; on CUDA some backward kernels sum in a varying order unless
`train.deterministic` is set: README, "Training").
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from einops import rearrange
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from fashionflow.config import FashionFlowConfig, config_to_dict, config_to_yaml, save_config
from fashionflow.diffusion import diffusion_loss, make_scheduler, null_context
from fashionflow.distributed import (DistributedContext, barrier, all_reduce_mean, broadcast_from_main,
                                     derive_seed, gather_to_main, init_distributed, log, seed_rank, wait_for_main)
from fashionflow.models import base_model_config, build_models, load_base_weights
from fashionflow.precision import autocast, deterministic, tf32
from fashionflow.training import checkpoint as ckpt
from fashionflow.training.ema import ModelEMA
from fashionflow.training.optim import build_lr_scheduler, build_optimizer
from fashionflow.training.sampler import StepOrder, StepSampler
from fashionflow.training.validation import VALIDATION_FILE, validation_loss
from fashionflow.utils import atomic_write_text


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, step: int, what: str, value: float, last_checkpoint: Optional[Path]):
        kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        super().__init__(f"non-finite {what} ({value}) at step {step}: training stopped before updating the "
                         f"weights; {kept}")
        self.step = step


@dataclass
class TrainResult:
    start_step: int
    final_step: int
    losses: dict[int, float] = field(default_factory=dict)  # step (1-based) -> all-reduced loss
    last_checkpoint: Optional[Path] = None


class DenoisingLoss(nn.Module):
    """U-Net and adapter in one module so DDP synchronises both; forward returns the loss.

    latents [b, c, f, h, w] (clean), clip_hidden_states [b, n, d], image_latent [b, c, h, w],
    keep_context [b] bool (False = condition dropped), timesteps [b], noise like latents;
    with references (model.max_references = R): reference_clip [b, R, n, d], reference_latent
    [b, R, c, h, w] and reference_mask [b, R], each reference through the same adapter.
    with the pose guider (keywords): pose [b, 3, f, H, W] skeleton images, pose_mask [b] bool;
    with model.reference_pose_routing also pose_keypoints [b, f, 18, 3] (keyword) and
    reference_keypoints [b, R, 18, 3] (after reference_mask).
    """

    def __init__(self, unet, adapter, scheduler, diffusion_cfg, compile_options: Optional[dict] = None):
        super().__init__()
        self.unet = torch.compile(unet, **compile_options) if compile_options is not None else unet
        self.adapter = adapter
        self.scheduler, self.diffusion_cfg = scheduler, diffusion_cfg

    def forward(self, latents, clip_hidden_states, image_latent, keep_context, timesteps, noise,
                reference_clip=None, reference_latent=None, reference_mask=None, reference_keypoints=None, *,
                pose=None, pose_mask=None, pose_keypoints=None):
        context = self.adapter(clip_hidden_states, image_latent)
        if keep_context is not None:  # classifier-free guidance: the null context is all zeros
            context = torch.where(keep_context[:, None, None], context, null_context(context))
        conditions = {"pose": pose, "pose_mask": pose_mask} if pose is not None else {}
        if reference_mask is not None:
            tokens = self.adapter(rearrange(reference_clip, "b r n d -> (b r) n d"),
                                  rearrange(reference_latent, "b r c h w -> (b r) c h w"))
            if keep_context is not None:  # a dropped condition drops the references too
                reference_mask = reference_mask & keep_context[:, None]
            conditions.update(references=rearrange(tokens, "(b r) n d -> b r n d", b=len(reference_mask)),
                              reference_mask=reference_mask)
            if reference_keypoints is not None and pose_keypoints is not None:
                conditions.update(reference_keypoints=reference_keypoints, pose_keypoints=pose_keypoints)
        return diffusion_loss(self.unet, latents, context, self.scheduler, self.diffusion_cfg,
                              timesteps=timesteps, noise=noise, conditions=conditions)


def total_steps(cfg: FashionFlowConfig, order: StepOrder) -> int:
    """`train.max_steps`, or `train.epochs` full passes over the data."""
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    return cfg.train.epochs * order.steps_per_epoch()


def draw_step_inputs(batch: dict, cfg: FashionFlowConfig, generator: torch.Generator, device: torch.device):
    """The micro-batch on `device` plus everything random for it, from one seeded generator."""
    latents = rearrange(batch["latents"].to(device, non_blocking=True), "b f c h w -> b c f h w")
    mean = batch["image_latent_mean"].to(device, non_blocking=True)
    std = batch["image_latent_std"].to(device, non_blocking=True)
    b = latents.shape[0]
    eps = torch.randn(mean.shape, generator=generator, device=device)
    image_latent = mean + std * eps  # a fresh VAE sample of the conditioning image (released)
    uniform = torch.rand(b, generator=generator, device=device)
    keep_context = uniform >= cfg.train.cond_dropout if cfg.train.cond_dropout > 0 else None
    timesteps = torch.randint(0, cfg.diffusion.num_train_timesteps, (b,), generator=generator, device=device)
    noise = torch.randn(latents.shape, generator=generator, device=device)
    clip_hidden_states = batch["clip_hidden_states"].to(device, non_blocking=True)
    inputs = (latents, clip_hidden_states, image_latent, keep_context, timesteps, noise)
    if cfg.model.max_references > 0:  # drawn after the single-image draws, which stay as they were
        inputs += draw_references(batch, cfg, generator, device)
    return inputs


def draw_references(batch: dict, cfg: FashionFlowConfig, generator: torch.Generator, device: torch.device):
    """Which of its video's reference candidates each clip trains with, and a VAE sample of each.

    Per clip: with probability `train.reference_dropout` none; else r ~ U{1 .. min(R, valid)} of
    the valid candidates (not the clip's own conditioning frame), chosen uniformly at random
    (`train.reference_draw="uniform"`), or the one whose VAE latent mean is farthest from the
    conditioning image's plus r - 1 uniform ones ("dissimilar"). The same random draws either way.
    Returns reference_clip [b, R, n, d], reference_latent [b, R, c, h, w], reference_mask [b, R]
    (R = model.max_references; unused slots masked), and with model.reference_pose_routing the
    chosen candidates' poses reference_keypoints [b, R, 18, 3] (no further random draws).
    """
    limit = cfg.model.max_references
    valid = batch["reference_valid"].to(device)  # b k
    b, k = valid.shape
    scores = torch.rand(b, k, generator=generator, device=device).masked_fill(~valid, 2.0)  # invalid last
    if cfg.train.reference_draw == "dissimilar":  # the farthest valid candidate first, the rest in random order
        image = batch["image_latent_mean"].to(device)[:, None]  # b 1 c h w
        distance = (batch["reference_latent_mean"].to(device) - image).flatten(2).norm(dim=2)  # b k
        farthest = distance.masked_fill(~valid, -1.0).argmax(dim=1)
        scores = scores.scatter(1, farthest[:, None], -1.0).masked_fill(~valid, 2.0)
    chosen = scores.argsort(dim=1, stable=True)[:, :limit]  # b min(R, k): a random order of the valid ones
    available = valid.sum(dim=1).clamp(max=limit)
    count = (1 + torch.rand(b, generator=generator, device=device) * available).floor().long()
    count = torch.minimum(count, available)
    dropped = torch.rand(b, generator=generator, device=device) < cfg.train.reference_dropout
    count = torch.where(dropped, torch.zeros_like(count), count)
    pick = lambda name: torch.stack([batch[name][i].to(device)[chosen[i]] for i in range(b)])  # noqa: E731
    mean, std, clip = pick("reference_latent_mean"), pick("reference_latent_std"), pick("reference_clip_hidden_states")
    latent = mean + std * torch.randn(mean.shape, generator=generator, device=device)
    mask = torch.arange(chosen.shape[1], device=device)[None] < count[:, None]
    missing = limit - chosen.shape[1]  # fewer candidates than R: masked zero slots
    if missing:
        pad = lambda x: torch.cat([x, x.new_zeros(b, missing, *x.shape[2:])], dim=1)  # noqa: E731
        clip, latent, mask = pad(clip), pad(latent), pad(mask)
    if not cfg.model.reference_pose_routing:
        return clip, latent, mask
    keypoints = pick("reference_keypoints")
    return clip, latent, mask, pad(keypoints) if missing else keypoints


def draw_pose_inputs(batch: dict, cfg: FashionFlowConfig, generator: torch.Generator, device: torch.device) -> dict:
    """The pose guider's keyword inputs for a micro-batch: {} without the guider (nothing drawn,
    so pose-free runs and their exact resume are unchanged); else pose [b, 3, f, H, W], the
    clips' OpenPose skeletons (drawn by the dataset) in [0, 1], and pose_mask [b] bool, False
    with probability `train.pose_dropout` (drawn after `draw_step_inputs`' draws)."""
    if not cfg.model.pose_guider:
        return {}
    skeletons = batch["pose"].to(device, non_blocking=True)  # b f 3 H W uint8
    pose_mask = torch.rand(len(skeletons), generator=generator, device=device) >= cfg.train.pose_dropout
    pose = rearrange(skeletons, "b f c h w -> b c f h w").float() / 255.0
    if cfg.model.reference_pose_routing:  # the keypoints the skeletons were drawn from, for the routing
        return {"pose": pose, "pose_mask": pose_mask, "pose_keypoints": batch["keypoints"].to(device)}
    return {"pose": pose, "pose_mask": pose_mask}


MIXED_PRECISION = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def compile_options(t) -> Optional[dict]:
    """`torch.compile` keyword arguments from `train.compile*`, or None when not compiling."""
    if not t.compile:
        return None
    return {"backend": t.compile_backend, **({"mode": t.compile_mode} if t.compile_mode else {})}


def load_initial_weights(path: str | Path, unet, adapter, cfg: FashionFlowConfig) -> list[str]:
    """Start from a converted checkpoint folder (unet/, adapter/) or the authors' released .pth.

    The checkpoint may lack the weights of optional conditions the model has (references, a pose
    guider): they keep their zero init, so the model starts as the checkpoint. Returns those missing keys.
    """
    path = Path(path)
    if path.is_file():
        from fashionflow.official import load_official_checkpoint

        source_unet, source_adapter = load_official_checkpoint(path, base_model_config(cfg.model))
        states = {"unet": source_unet.state_dict(), "adapter": source_adapter.state_dict()}
    else:
        for name in ("unet", "adapter"):
            if not (path / name).is_dir():
                raise ckpt.CheckpointError(f"--init {path}: expected a folder with unet/ and adapter/ (a converted "
                                           f"or fashionflow checkpoint) or the released .pth file; {name}/ is missing")
        states = {name: ckpt.load_weights(path / name) for name in ("unet", "adapter")}
    check_shapes(path, "U-Net", unet, states["unet"])
    check_shapes(path, "adapter", adapter, states["adapter"])
    try:
        adapter.load_state_dict(states["adapter"])
        return load_base_weights(unet, states["unet"])  # a single-image checkpoint: new conditions start at zero
    except RuntimeError as error:
        raise ckpt.CheckpointError(f"--init {path}: {str(error).splitlines()[0]}") from error


def check_shapes(path: Path, name: str, module: torch.nn.Module, state: dict) -> None:
    """One clear line when a checkpoint's tensors have other shapes than the model this config builds."""
    own = module.state_dict()
    wrong = [(key, tuple(tensor.shape), tuple(own[key].shape)) for key, tensor in state.items()
             if key in own and tensor.shape != own[key].shape]
    if wrong:
        key, theirs, ours = wrong[0]
        raise ckpt.CheckpointError(
            f"--init {path}: {len(wrong)} {name} tensors have other shapes than this config's model (first: {key} "
            f"{list(theirs)} in the checkpoint, {list(ours)} here); --init needs the model.* settings of the run it "
            f"comes from (its config.yaml): only optional conditions may be added")


def _open_writer(run_dir: Path, start_step: int, ctx: DistributedContext):
    """TensorBoard on rank 0; on resume, events after the checkpoint's step are purged."""
    if not ctx.is_main:
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)


def _truncate_metrics(run_dir: Path, start_step: int, name: str = "metrics.jsonl") -> None:
    """On resume, drop records of steps after the checkpoint (they are recomputed)."""
    path = run_dir / name
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= start_step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _append_metrics(run_dir: Path, record: dict, name: str = "metrics.jsonl") -> None:
    with open(run_dir / name, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _check_resume_config(saved: Path, cfg: FashionFlowConfig, ctx: DistributedContext) -> None:
    """The model must match the checkpoint's; other changes (e.g. a longer max_steps) are reported."""
    from fashionflow.config import load_config

    before, now = config_to_dict(load_config(saved)), config_to_dict(cfg)
    if before["model"] != now["model"]:
        changed = [k for k in now["model"] if now["model"][k] != before["model"].get(k)]
        raise ckpt.CheckpointError(f"cannot resume from {saved.parent}: model.{changed[0]} differs "
                                   f"({before['model'][changed[0]]} there, {now['model'][changed[0]]} now); "
                                   f"use another --output-dir or the checkpoint's config")
    changes = [f"{s}.{k}: {before[s].get(k)} -> {v}" for s in now for k, v in now[s].items() if before[s].get(k) != v]
    if changes:
        log("config differs from the checkpoint's: " + "; ".join(changes), ctx)


@dataclass
class TrainingParts:
    """What a checkpoint holds: the trained modules and the optimisation state."""

    unet: nn.Module
    adapter: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    grad_scaler: Optional[torch.amp.GradScaler]
    ema: Optional[ModelEMA]

    @property
    def params(self) -> list[nn.Parameter]:
        return list(self.unet.parameters()) + list(self.adapter.parameters())


def freeze_base(unet, adapter) -> None:
    """`train.trainable=new_conditions`: only the optional condition modules (unet.references,
    unet.pose_guider, unet.first_frame) keep requires_grad; the base U-Net and the adapter are frozen (the config
    makes sure the model has at least one of them)."""
    for module in (unet, adapter):
        module.requires_grad_(False)
    for module in (unet.references, unet.pose_guider, unet.first_frame):
        if module is not None:
            module.requires_grad_(True)


def build_parts(cfg: FashionFlowConfig, unet, adapter, end_step: int, device: torch.device) -> TrainingParts:
    t = cfg.train
    unet.to(device).train()
    adapter.to(device).train()
    if t.gradient_checkpointing or cfg.model.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if t.trainable == "new_conditions":
        freeze_base(unet, adapter)
    optimizer = build_optimizer(list(unet.parameters()) + list(adapter.parameters()), t)
    return TrainingParts(unet, adapter, optimizer, build_lr_scheduler(optimizer, t, end_step),
                         torch.amp.GradScaler(device.type) if t.mixed_precision == "fp16" else None,
                         ModelEMA({"unet": unet, "adapter": adapter}, t.ema_decay) if t.ema_decay is not None else None)


def train(cfg: FashionFlowConfig, latents_dir: str | Path, run_dir: str | Path, *, init: str | Path | None = None,
          ctx: Optional[DistributedContext] = None, dry_run: bool = False,
          val_latents: str | Path | None = None) -> TrainResult:
    """Train (or resume) into `run_dir`; see the module docstring. Returns the losses it computed.

    `val_latents`: projected held-out clips; every `train.val_every` steps rank 0 scores the EMA
    weights on them (`validation.validation_loss`) into `validation.jsonl` and TensorBoard `val/`.

    `train.tf32` and `train.deterministic` hold for the whole run and are undone afterwards.
    """
    with tf32(True if cfg.train.tf32 else None), deterministic(cfg.train.deterministic):
        return _train(cfg, latents_dir, run_dir, init=init, ctx=ctx, dry_run=dry_run, val_latents=val_latents)


def _train(cfg: FashionFlowConfig, latents_dir: str | Path, run_dir: str | Path, *, init, ctx, dry_run,
           val_latents) -> TrainResult:
    from fashionflow.data import LatentClipDataset
    from fashionflow.training.preview import PreviewMaker

    ctx = ctx or init_distributed()
    run_dir, t = Path(run_dir), cfg.train
    dataset = LatentClipDataset(latents_dir, cfg)  # a wrong folder fails here, before any compute
    held_out = LatentClipDataset(val_latents, cfg) if val_latents is not None and t.val_every else None
    order = StepOrder(len(dataset), t.batch_size, t.grad_accum_steps, ctx.world_size, ctx.rank, t.seed)
    end_step = total_steps(cfg, order)

    seed_rank(t.seed, ctx)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        unet, adapter = build_models(cfg.model)
    if dry_run:
        _print_dry_run(cfg, dataset, order, end_step, unet, adapter, ctx)
        return TrainResult(0, 0)

    latest = broadcast_from_main(ckpt.find_latest(run_dir), ctx)
    if init is not None and latest is None:
        missing = load_initial_weights(init, unet, adapter, cfg)
        log(f"initial weights from {init}" + (f"; {len(missing)} tensors of new conditions start at zero "
                                             f"({missing[0].split('.')[0]})" if missing else ""), ctx)
    parts = build_parts(cfg, unet, adapter, end_step, ctx.device)
    start_step = _resume(latest, parts, cfg, end_step, ctx) if latest is not None else 0

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ckpt.remove_stale_temporaries(run_dir):
            log(f"removed a half-written checkpoint {stale.name} (a run stopped while saving)", ctx)
        save_config(cfg, run_dir / "config.yaml")
        _truncate_metrics(run_dir, start_step)
        _truncate_metrics(run_dir, start_step, VALIDATION_FILE)
    preview = PreviewMaker(cfg, dataset, run_dir, ctx) if ctx.is_main else None
    barrier(ctx)

    model = DenoisingLoss(unet, adapter, make_scheduler(cfg.diffusion), cfg.diffusion, compile_options(t))
    if ctx.is_distributed:
        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                        broadcast_buffers=False)
    writer = _open_writer(run_dir, start_step, ctx)
    loader = DataLoader(dataset, batch_size=t.batch_size, sampler=StepSampler(order, start_step, end_step),
                        num_workers=t.num_workers, pin_memory=ctx.device.type == "cuda", drop_last=False)
    batches = iter(loader)
    result = TrainResult(start_step, start_step, last_checkpoint=latest)
    if start_step >= end_step:
        log(f"nothing to do: {run_dir} already reached step {start_step} of {end_step}", ctx)
    progress = _progress_bar(start_step, end_step, ctx)
    clock = time.perf_counter()

    for step in range(start_step, end_step):
        loss = _accumulate_gradients(model, batches, cfg, step, parts.grad_scaler, ctx)
        if not math.isfinite(loss):
            raise NonFiniteLossError(step + 1, "loss", loss, result.last_checkpoint)
        lr, grad_norm, scaler_state = _apply_gradients(parts, cfg.train.grad_clip, step, result.last_checkpoint)

        done = step + 1
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        now = time.perf_counter()
        record = {"step": done, "epoch": order.epoch_of_step(done), "loss": loss, "lr": lr, "grad_norm": grad_norm,
                  "samples_per_s": order.items_per_step / max(now - clock, 1e-9), **scaler_state}  # over all ranks
        clock = now
        result.losses[done], result.final_step = loss, done
        if ctx.is_main:
            _log_step(run_dir, record, end_step, t.log_every, writer, progress)
        if t.sample_every and done % t.sample_every == 0:
            if ctx.is_main:
                with parts.ema.averaged_weights() if parts.ema is not None else contextlib.nullcontext():
                    preview.make(unet, adapter, done, writer)
            wait_for_main(ctx)  # the other ranks wait here, not in the next NCCL all-reduce
            clock = time.perf_counter()  # previews are not training time
        if held_out is not None and (done % t.val_every == 0 or done == end_step):
            if ctx.is_main:
                _validate(run_dir, done, cfg, parts, held_out, writer, progress, ctx)
            wait_for_main(ctx)
            clock = time.perf_counter()
        if done % t.checkpoint_every == 0 or done == end_step:
            result.last_checkpoint = _save(run_dir, done, record["epoch"], order, cfg, parts, preview, ctx)
            clock = time.perf_counter()

    progress.close()
    if writer is not None:
        writer.close()
    return result


def _resume(latest: Path, parts: TrainingParts, cfg: FashionFlowConfig, end_step: int, ctx) -> int:
    """Load a checkpoint into `parts` (and this rank's RNG state); returns its step."""
    _check_resume_config(latest / "config.yaml", cfg, ctx)
    state, rng = ckpt.load_checkpoint(latest, unet=parts.unet, adapter=parts.adapter, optimizer=parts.optimizer,
                                      lr_scheduler=parts.lr_scheduler, grad_scaler=parts.grad_scaler, ema=parts.ema)
    if state.get("world_size") != ctx.world_size:
        log(f"warning: {latest} was written by {state.get('world_size')} processes, this run has "
            f"{ctx.world_size}: it resumes, but the data order and losses will differ from an uninterrupted run", ctx)
    elif f"rank-{ctx.rank}" in rng:
        ckpt.restore_rng_state(rng[f"rank-{ctx.rank}"], ctx.device)
    log(f"resuming from {latest} (step {state['step']} of {end_step})", ctx)
    return state["step"]


def _accumulate_gradients(model, batches, cfg: FashionFlowConfig, step: int, grad_scaler, ctx) -> float:
    """Forward and backward over the step's micro-batches; returns the loss averaged over them and ranks."""
    t = cfg.train
    torch.manual_seed(derive_seed(t.seed, ctx.rank, step))  # any module-level randomness (dropout)
    loss_sum = torch.zeros((), device=ctx.device)
    for micro in range(t.grad_accum_steps):
        generator = torch.Generator(ctx.device).manual_seed(derive_seed(t.seed, ctx.rank, step, micro))
        batch = next(batches)
        inputs = draw_step_inputs(batch, cfg, generator, ctx.device)
        conditions = draw_pose_inputs(batch, cfg, generator, ctx.device)  # after the draws above
        last = micro == t.grad_accum_steps - 1
        with model.no_sync() if ctx.is_distributed and not last else contextlib.nullcontext():
            with autocast(ctx.device, MIXED_PRECISION[t.mixed_precision]):
                loss = model(*inputs, **conditions).float()
            scaled = loss / t.grad_accum_steps
            (grad_scaler.scale(scaled) if grad_scaler else scaled).backward()
        loss_sum += loss.detach()
    return all_reduce_mean(loss_sum / t.grad_accum_steps, ctx).item()


def _apply_gradients(parts: TrainingParts, grad_clip: Optional[float], step: int, last_checkpoint
                     ) -> tuple[float, float, dict]:
    """Clip, optimiser step, LR schedule, EMA; returns (the step's lr, the gradient norm before
    clipping, and with fp16 loss scaling {"loss_scale": scale used, "skipped": bool}).

    fp16: the scaler skips the optimiser step when the gradients hold inf/NaN and halves its
    scale; the skipped step then advances neither the LR schedule nor the EMA (so warmup and
    the EMA count real updates only; the data order still follows the step number).
    """
    params, optimizer, scaler = parts.params, parts.optimizer, parts.grad_scaler
    if scaler:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf")).item()
    if not math.isfinite(grad_norm) and scaler is None:  # (fp16: the scaler skips the step and backs off)
        raise NonFiniteLossError(step + 1, "gradient norm", grad_norm, last_checkpoint)
    lr = optimizer.param_groups[0]["lr"]
    scaler_state = {}
    if scaler:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        scaler_state = {"loss_scale": scale, "skipped": scaler.get_scale() < scale}  # update() backs off on inf
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if not scaler_state.get("skipped"):
        parts.lr_scheduler.step()
        if parts.ema is not None:
            parts.ema.update()
    return lr, grad_norm, scaler_state


def _log_step(run_dir: Path, record: dict, end_step: int, log_every: int, writer, progress) -> None:
    """metrics.jsonl every step; TensorBoard scalars and a log line every `log_every` steps (rank 0)."""
    _append_metrics(run_dir, record)
    done = record["step"]
    progress.update(1)
    progress.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
    if done % log_every == 0 or done == end_step:
        for key in ("loss", "lr", "grad_norm", "samples_per_s", "epoch"):
            writer.add_scalar(f"train/{key}", record[key], done)
        progress.write(f"step {done}/{end_step}  epoch {record['epoch']}  loss {record['loss']:.5f}  "
                       f"lr {record['lr']:.3g}  grad-norm {record['grad_norm']:.3g}  "
                       f"{record['samples_per_s']:.2f} samples/s")


def _validate(run_dir: Path, step: int, cfg: FashionFlowConfig, parts: TrainingParts, held_out, writer, progress,
              ctx: DistributedContext) -> None:
    """Held-out loss of the EMA weights (the ones checkpoints bundle) into validation.jsonl and TensorBoard."""
    model = DenoisingLoss(parts.unet, parts.adapter, make_scheduler(cfg.diffusion), cfg.diffusion)
    with parts.ema.averaged_weights() if parts.ema is not None else contextlib.nullcontext():
        with autocast(ctx.device, MIXED_PRECISION[cfg.train.mixed_precision]):
            result = validation_loss(model, held_out, cfg, ctx.device, clips=cfg.train.val_clips)
    _append_metrics(run_dir, result.record(step), VALIDATION_FILE)
    writer.add_scalar("val/loss", result.loss, step)
    for timestep, value in result.per_timestep.items():
        writer.add_scalar(f"val/loss_t{timestep}", value, step)
    progress.write(f"step {step}: held-out loss {result.loss:.5f} over {result.clips} clips")


def _save(run_dir, step, epoch, order, cfg, parts: TrainingParts, preview, ctx) -> Path:
    """Rank 0 writes the checkpoint with every rank's RNG state; all ranks wait and share the outcome."""
    rng_states = gather_to_main(ckpt.capture_rng_state(ctx.device), ctx)
    path, error = ckpt.checkpoint_path(run_dir, step), None
    if ctx.is_main:
        state = {"epoch": epoch, "samples_seen": step * order.items_per_step, "world_size": ctx.world_size,
                 "batch_size": order.batch_size, "grad_accum_steps": order.grad_accum_steps, "seed": cfg.train.seed,
                 "torch": torch.__version__}
        sampler = make_scheduler(cfg.diffusion, cfg.sample.sampler)  # what inference uses by default
        try:
            ckpt.save_checkpoint(run_dir, step, unet=parts.unet, adapter=parts.adapter, scheduler=sampler,
                                 optimizer=parts.optimizer, lr_scheduler=parts.lr_scheduler,
                                 grad_scaler=parts.grad_scaler, ema=parts.ema, rng_states=rng_states, cfg=cfg,
                                 state=state, make_pipeline=preview.make_pipeline if preview.has_encoders else None,
                                 keep_last=cfg.train.keep_last)
            log(f"saved {path}", ctx)
        except Exception as caught:  # re-raised below, after telling the other ranks
            error = caught
    wait_for_main(ctx)  # a slow save must not run into the NCCL timeout of the broadcast below
    failed = broadcast_from_main(error is not None, ctx)
    if error is not None:
        raise error
    if failed:
        raise ckpt.CheckpointError(f"rank 0 could not write {path}; see its error")
    return path


def _progress_bar(start: int, end: int, ctx: DistributedContext):
    from tqdm import tqdm

    return tqdm(total=end, initial=start, desc="train", unit="step", disable=not ctx.is_main, dynamic_ncols=True,
                mininterval=5.0)


def _print_dry_run(cfg, dataset, order, end_step, unet, adapter, ctx) -> None:
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    first = dataset[0]
    lines = [config_to_yaml(cfg).rstrip(), "",
             f"data: {len(dataset)} clips in {dataset.folder}; latents {list(first['latents'].shape)} (f c h w), "
             f"image {list(first['image'].shape)}, CLIP tokens {list(first['clip_hidden_states'].shape)}",
             f"model: U-Net {count(unet):,} parameters, adapter {count(adapter):,}",
             f"schedule: {ctx.world_size} process(es) x batch {order.batch_size} x accumulation "
             f"{order.grad_accum_steps} = {order.items_per_step} clips per step; {order.steps_per_epoch()} steps "
             f"per epoch; {end_step} steps"]
    log("\n".join(lines), ctx)
