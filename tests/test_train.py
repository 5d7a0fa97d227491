"""Training: step-derived data order, optimiser presets, exact resume, faults, checkpoints, torchrun.

Runs the real loop on configs/tiny.yaml with hand-written latent clips and tiny random
encoders (so checkpoints are complete pipeline folders and previews render).
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fashionflow.config import config_hash, load_config
from fashionflow.data import LatentDatasetError
from fashionflow.data.latent_dataset import CLIP_FORMAT, encoder_metadata, expected_reference_shapes, expected_shapes
from fashionflow.distributed import derive_seed
from fashionflow.testing import save_tiny_encoders, tiny_encoders_config
from fashionflow.training import NonFiniteLossError, train
from fashionflow.training import checkpoint as ckpt
from fashionflow.training import loop
from fashionflow.training.optim import build_lr_scheduler, build_optimizer
from fashionflow.training.sampler import StepOrder, StepSampler

ROOT = Path(__file__).resolve().parents[1]


def write_clips(folder: Path, cfg, count: int = 4, candidates: int = 0) -> Path:
    """Latent clip files in the projection's format (random tensors, a positive std), with
    `candidates` reference candidates at frames 0, 5, 10, ... (the clip starts at frame 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = expected_shapes(cfg)
    if candidates:
        shapes.update(expected_reference_shapes(cfg, candidates))
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        tensors = {k: torch.randn(v, generator=generator) for k, v in shapes.items()
                   if k not in ("image", "reference_images")}
        for name in ("image_latent_std", "reference_latent_std"):
            if name in tensors:
                tensors[name] = tensors[name].abs() * 0.1
        for name in ("image", "reference_images"):
            if name in shapes:
                tensors[name] = torch.randint(0, 256, shapes[name], generator=generator, dtype=torch.uint8)
        if candidates:
            tensors["reference_frames"] = torch.arange(candidates) * 5
        metadata = {"format": CLIP_FORMAT, "config_hash": config_hash(cfg), "start_frame": "0",
                    **encoder_metadata(cfg)}
        save_file(tensors, str(folder / f"clip{index:03d}.safetensors"), metadata=metadata)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config overrides pointing at tiny encoders, latents folder, scratch root)."""
    root = tmp_path_factory.mktemp("train")
    base = load_config(ROOT / "configs" / "tiny.yaml")
    paths = save_tiny_encoders(root / "encoders", context_dim=base.model.context_dim)
    enc = tiny_encoders_config(paths)
    overrides = [f"encoders.vae={enc.vae}", "encoders.vae_subfolder=null", f"encoders.image_encoder={enc.image_encoder}",
                 "encoders.preprocessing=correct", "train.max_steps=4", "train.checkpoint_every=2",
                 "train.log_every=1", "train.num_workers=0"]
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    return overrides, write_clips(root / "latents", cfg), root


def tiny_cfg(setup, *extra):
    torch.set_num_threads(1)  # the same in every run (bitwise comparisons) and kind to a shared CPU
    return load_config(ROOT / "configs" / "tiny.yaml", setup[0] + list(extra))


# ------------------------------------------------------------------------ pure pieces

def test_step_order_reads_every_clip_once_per_epoch_and_does_not_depend_on_the_start():
    orders = [StepOrder(num_items=10, batch_size=2, grad_accum_steps=1, world_size=2, rank=r, seed=3) for r in (0, 1)]
    assert orders[0].items_per_step == 4 and orders[0].steps_per_epoch() == 2
    stream = [i for step in range(5) for order in orders for i in order.indices(step, 0)]  # 20 positions = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]  # epochs are reshuffled
    resumed = list(StepSampler(orders[1], start_step=3, end_step=5))
    assert resumed == list(StepSampler(orders[1], 0, 5))[3 * 2:]
    accum = StepOrder(10, 1, 2, 2, 0, 3)  # same clips per step, split into micro-batches
    assert accum.indices(1, 0) + accum.indices(1, 1) != orders[0].indices(1, 0)
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)


def test_optimiser_presets_and_warmup():
    params = [torch.nn.Parameter(torch.zeros(3))]
    released = load_config(ROOT / "configs" / "fashionflow.yaml").train
    paper = load_config(ROOT / "configs" / "fashionflow_paper.yaml").train
    group = build_optimizer(params, released).param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (1e-4, 0.01, (0.9, 0.999))
    group = build_optimizer(params, paper).param_groups[0]
    assert (group["lr"], group["betas"]) == (2e-4, (0.5, 0.999))
    released.warmup_steps = 4
    optimizer = build_optimizer(params, released)
    schedule = build_lr_scheduler(optimizer, released, total_steps=10)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([0.0, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4])


# ------------------------------------------------------------------------ the loop

def test_dry_run_prints_config_and_sizes(setup, capsys):
    sys.path.insert(0, str(ROOT))
    import train as train_script

    args = ["--config", str(ROOT / "configs/tiny.yaml"), "--latents", str(setup[1]), "--output-dir",
            str(setup[2] / "dry"), "--dry-run", *setup[0]]
    assert train_script.main(args) == 0
    out = capsys.readouterr().out
    assert "lr_schedule: constant" in out and "4 clips in" in out and "U-Net" in out and "4 steps" in out
    assert not (setup[2] / "dry").exists()


def test_wrong_latents_folder_fails_before_compute(setup, tmp_path):
    cfg = tiny_cfg(setup)
    with pytest.raises(LatentDatasetError, match="does not exist"):
        train(cfg, tmp_path / "missing", tmp_path / "run")
    other = write_clips(tmp_path / "other", tiny_cfg(setup, "data.num_frames=4", "sample.num_frames=4"), count=1)
    with pytest.raises(LatentDatasetError, match=r"latents has shape \[4, 4, 16, 16\].*expects \[8, 4, 16, 16\]"):
        train(cfg, other, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def straight_run(setup):
    """4 steps with EMA, condition dropout, accumulation, warmup, clipping and a preview at step 4."""
    extra = ["train.ema_decay=0.9", "train.cond_dropout=0.5", "train.grad_accum_steps=2", "train.warmup_steps=2",
             "train.grad_clip=1.0", "train.sample_every=4", "train.sample_steps=2", "train.keep_last=2"]
    cfg = tiny_cfg(setup, *extra)
    run = setup[2] / "straight"
    result = train(cfg, setup[1], run)
    return cfg, run, result


def test_resume_reproduces_the_uninterrupted_run_bitwise(setup, straight_run, capsys):
    cfg, run, result = straight_run
    assert sorted(result.losses) == [1, 2, 3, 4] and result.last_checkpoint == ckpt.checkpoint_path(run, 4)
    assert [p.name for _, p in ckpt.list_checkpoints(run)] == ["step-0000002", "step-0000004"]
    resumed = setup[2] / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-0000004")  # as if killed after step 2's checkpoint
    capsys.readouterr()
    torch.set_num_threads(1)  # as in the straight run: CPU kernels reduce in an order that depends on it
    second = train(cfg, setup[1], resumed)
    assert "resuming from" in capsys.readouterr().out
    assert second.start_step == 2 and {s: second.losses[s] for s in (3, 4)} == {s: result.losses[s] for s in (3, 4)}
    for folder in ("unet", "adapter", "training/unet", "training/adapter"):  # EMA and raw weights
        a = ckpt.load_weights(run / "checkpoints/step-0000004" / folder)
        b = ckpt.load_weights(resumed / "checkpoints/step-0000004" / folder)
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    state = ckpt.read_state(run / "checkpoints/step-0000004")
    assert state["pipeline"] and state["ema"]["optimization_step"] == 4 and state["epoch"] == 4
    ema, raw = (ckpt.load_weights(run / "checkpoints/step-0000004" / f) for f in ("unet", "training/unet"))
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)


def test_checkpoint_is_a_pipeline_folder_with_ema_weights(straight_run):
    from fashionflow.pipeline import FashionFlowPipeline

    cfg, run, _ = straight_run
    folder = run / "checkpoints" / "step-0000004"
    pipeline = FashionFlowPipeline.from_pretrained(folder)
    ema = ckpt.load_weights(folder / "unet")
    assert all(torch.equal(v, ema[k]) for k, v in pipeline.unet.state_dict().items())
    assert (folder / "config.yaml").is_file() and load_config(folder / "config.yaml").train.ema_decay == 0.9
    assert (run / "samples" / "step-0000004.mp4").stat().st_size > 0


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(setup, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = loop.diffusion_loss

    def loss_that_explodes_at_step_3(*args, **kwargs):
        calls["n"] += 1
        value = real_loss(*args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(loop, "diffusion_loss", loss_that_explodes_at_step_3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 3.*step-0000002"):
        train(tiny_cfg(setup), setup[1], tmp_path)
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_failed_or_killed_save_leaves_the_previous_checkpoint(setup, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def save_that_dies_at_step_4(obj, path, *args, **kwargs):
        if "step-0000004" in str(path) and str(path).endswith("rng.pt"):
            raise OSError("disk full (simulated)")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save_that_dies_at_step_4)
    with pytest.raises(OSError, match="disk full"):
        train(tiny_cfg(setup), setup[1], tmp_path)
    monkeypatch.undo()
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    assert not list((tmp_path / "checkpoints").glob(".step-*"))  # the failed save cleaned up after itself
    killed = tmp_path / "checkpoints" / ".step-0000004.abc123.tmp"  # what a SIGKILL mid-save leaves
    (killed / "unet").mkdir(parents=True)
    assert ckpt.find_latest(tmp_path) == ckpt.checkpoint_path(tmp_path, 2)
    capsys.readouterr()
    result = train(tiny_cfg(setup), setup[1], tmp_path)
    out = capsys.readouterr().out
    assert "resuming from" in out and "removed a half-written checkpoint" in out and not killed.exists()
    assert result.start_step == 2 and result.final_step == 4


def test_two_process_gloo_run_under_torchrun(setup, tmp_path):
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "train.py"), "--config", str(ROOT / "configs/tiny.yaml"), "--latents", str(setup[1]),
               "--output-dir", str(run), "--device", "cpu", *setup[0], "train.max_steps=2", "train.batch_size=1",
               "train.sample_every=1", "train.sample_steps=1"]  # rank 0 previews while rank 1 waits
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] > 0 for r in records)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000001.mp4", "step-0000002.mp4"]
    state = ckpt.read_state(run / "checkpoints" / "step-0000002")
    assert state["world_size"] == 2 and state["num_rng_states"] == 2 and state["samples_seen"] == 4
    rng = torch.load(run / "checkpoints/step-0000002/training/rng.pt", weights_only=True)
    assert not torch.equal(rng["rank-0"]["torch"], rng["rank-1"]["torch"])  # ranks seeded apart


def test_init_from_a_checkpoint_folder_and_resume_refuses_another_model(setup, straight_run, tmp_path):
    from fashionflow.models import build_models

    cfg, run, _ = straight_run
    folder = run / "checkpoints" / "step-0000004"
    unet, adapter = build_models(cfg.model)
    loop.load_initial_weights(folder, unet, adapter, cfg)
    ema = ckpt.load_weights(folder / "unet")
    assert all(torch.equal(v, ema[k]) for k, v in unet.state_dict().items())
    with pytest.raises(ckpt.CheckpointError, match="unet/ is missing"):
        loop.load_initial_weights(folder / "scheduler", unet, adapter, cfg)
    wider = tiny_cfg(setup, "model.base_dim=16")  # another architecture: one line, not a page of size mismatches
    with pytest.raises(ckpt.CheckpointError, match=r"U-Net tensors have other shapes .*\[8\] in the checkpoint, "
                                                   r"\[16\] here\); --init needs the model.\* settings"):
        loop.load_initial_weights(folder, *build_models(wider.model), wider)
    from safetensors.torch import save_file

    shutil.copytree(folder, tmp_path / "extra")
    save_file({"stray.weight": torch.zeros(1)}, tmp_path / "extra" / "unet" / "stray.safetensors")
    with pytest.raises(ckpt.CheckpointError, match=r"--init .*unexpected \['stray.weight'\]"):
        loop.load_initial_weights(tmp_path / "extra", unet, adapter, cfg)
    shutil.copytree(run, tmp_path / "run")
    with pytest.raises(ckpt.CheckpointError, match=r"model.base_dim differs \(8 there, 16 now\)"):
        train(tiny_cfg(setup, "model.base_dim=16"), setup[1], tmp_path / "run")


def read_tensorboard(folder: Path) -> dict[str, list]:
    """{tag: [(step, value or "image")]} from tensorboardX event files (TFRecord framing)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    tags: dict[str, list] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4  # length, its crc, payload, its crc
            for value in event.summary.value:
                kind = value.simple_value if value.HasField("simple_value") else value.WhichOneof("value")
                tags.setdefault(value.tag, []).append((event.step, kind))
    return tags


def test_tensorboard_gets_loss_lr_grad_norm_throughput_and_previews(straight_run):
    _, run, result = straight_run
    tags = read_tensorboard(run / "tensorboard")
    assert [(step, pytest.approx(loss)) for step, loss in tags["train/loss"]] == sorted(result.losses.items())
    assert [lr for _, lr in tags["train/lr"]] == pytest.approx([0.0, 5e-5, 1e-4, 1e-4])  # 2 warmup steps
    assert all(v > 0 for _, v in tags["train/grad_norm"] + tags["train/samples_per_s"])
    assert tags["preview/conditioning_image"] == [(4, "image")] and tags["preview/frames"] == [(4, "image")]


# ------------------------------------------------------------------------ precision, compile, learning

def records_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_bf16_training_step_on_cpu_matches_fp32(setup, tmp_path):
    fp32 = train(tiny_cfg(setup, "train.max_steps=2", "train.checkpoint_every=100"), setup[1], tmp_path / "fp32")
    bf16 = train(tiny_cfg(setup, "train.max_steps=2", "train.checkpoint_every=100", "train.mixed_precision=bf16"),
                 setup[1], tmp_path / "bf16")
    for step in (1, 2):  # the same inputs (step-derived draws), bf16 compute
        assert math.isfinite(bf16.losses[step]) and bf16.losses[step] != fp32.losses[step]
        assert bf16.losses[step] == pytest.approx(fp32.losses[step], rel=0.05)
    weights = ckpt.load_weights(tmp_path / "bf16/checkpoints/step-0000002/unet")
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())


class SmallScaleGradScaler(torch.amp.GradScaler):
    """A loss scale of 16, so fp16 gradients of the tiny model never overflow on their own."""

    def __init__(self, device: str = "cuda", init_scale: float = 16.0, **kwargs):
        super().__init__(device, init_scale=init_scale, **kwargs)


def test_fp16_step_skipped_by_the_scaler_advances_neither_lr_schedule_nor_ema(setup, tmp_path, monkeypatch):
    real_loss, calls = loop.diffusion_loss, {"n": 0}

    def loss_with_inf_gradients_at_step_2(*args, **kwargs):
        calls["n"] += 1
        value = real_loss(*args, **kwargs)
        if calls["n"] == 2:
            value.register_hook(lambda grad: grad * float("inf"))  # finite loss, inf/NaN gradients
        return value

    monkeypatch.setattr(loop, "diffusion_loss", loss_with_inf_gradients_at_step_2)
    monkeypatch.setattr(torch.amp, "GradScaler", SmallScaleGradScaler)
    cfg = tiny_cfg(setup, "train.mixed_precision=fp16", "train.warmup_steps=4", "train.ema_decay=0.9",
                   "train.checkpoint_every=1", "train.keep_last=4")
    train(cfg, setup[1], tmp_path)
    records = records_of(tmp_path)
    assert [r["skipped"] for r in records] == [False, True, False, False]
    assert [r["loss_scale"] for r in records] == [16.0, 16.0, 8.0, 8.0]  # backed off after the skip
    assert [r["lr"] for r in records] == pytest.approx([0.0, 2.5e-5, 2.5e-5, 5e-5])  # warmup paused at step 2
    raw = [ckpt.load_weights(ckpt.checkpoint_path(tmp_path, s) / "training/unet") for s in (1, 2, 3)]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])  # the skipped step changed nothing
    assert any(not torch.equal(raw[1][k], raw[2][k]) for k in raw[1])
    assert ckpt.read_state(ckpt.checkpoint_path(tmp_path, 4))["ema"]["optimization_step"] == 3


def test_train_compile_traces_the_unet_and_gives_the_eager_losses(setup, tmp_path):
    """torch.compile with the "eager" backend: dynamo traces the U-Net (graph capture, guards)
    without generating code, so the CPU test stays cheap; a one-level U-Net keeps tracing short."""
    import torch._dynamo

    small = ["model.dim_mults=[1]", "model.resnet_depths=[1]", "model.self_attention=[true]",
             "model.temporal_compression=[true]", "model.cross_attention_heads=[1]", "train.max_steps=2",
             "train.checkpoint_every=100"]
    eager = train(tiny_cfg(setup, *small), setup[1], tmp_path / "eager")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(tiny_cfg(setup, *small, "train.compile=true", "train.compile_backend=eager"), setup[1],
                     tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-5)
    with pytest.raises(Exception, match="compile_mode='max-autotune' needs train.compile_backend=inductor"):
        tiny_cfg(setup, "train.compile_mode=max-autotune", "train.compile_backend=eager")


def test_training_learns_to_denoise_one_clip(setup, tmp_path):
    """Overfitting one clip for 30 steps: the loss (summed over 8 frames; ~7 at the start) falls
    clearly. Each step draws another timestep, so losses are compared over 10 steps."""
    one_clip = write_clips(tmp_path / "one", tiny_cfg(setup), count=1)
    result = train(tiny_cfg(setup, "train.batch_size=1", "train.max_steps=30", "train.lr=1e-2",
                            "train.checkpoint_every=100"), one_clip, tmp_path / "run")
    losses = [result.losses[step] for step in range(1, 31)]
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.75 * first, (first, last)


def test_deterministic_switch_trains_and_is_undone(setup, tmp_path):
    result = train(tiny_cfg(setup, "train.deterministic=true", "train.tf32=true", "train.max_steps=1",
                            "train.checkpoint_every=100"), setup[1], tmp_path)
    assert math.isfinite(result.losses[1])
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cuda.matmul.allow_tf32


WAIT_SCRIPT = """
import sys, time, torch, torch.distributed as dist
from fashionflow.distributed import init_distributed, wait_for_main
ctx = init_distributed("cpu", timeout_minutes=1 / 60)  # collectives time out after 1 s
value = torch.ones(1)
if ctx.rank == 0:
    time.sleep(2.5)  # rank 0 alone: a slow preview
wait_for_main(ctx)
dist.all_reduce(value)
print(f"rank {ctx.rank}: all-reduce after the wait gave {value.item():.0f}", flush=True)
if ctx.rank == 0:
    time.sleep(2.5)  # the same without the wait: rank 1 times out in the all-reduce
try:
    dist.all_reduce(value)
    print(f"rank {ctx.rank}: no timeout", flush=True)
except RuntimeError:
    print(f"rank {ctx.rank}: timed out", flush=True)
sys.stdout.flush()
"""


def test_other_ranks_wait_for_a_slow_rank_zero_beyond_the_collective_timeout(tmp_path):
    script = tmp_path / "wait.py"
    script.write_text(WAIT_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert "rank 0: all-reduce after the wait gave 2" in out and "rank 1: all-reduce after the wait gave 2" in out, out
    assert "rank 1: timed out" in out, out  # the control: without wait_for_main the 1 s timeout hits


def test_training_with_references_resumes_bitwise_and_previews_them(setup, tmp_path, capsys):
    extra = ["model.max_references=2", "train.reference_dropout=0.3", "train.sample_every=4", "train.sample_steps=1"]
    cfg = tiny_cfg(setup, *extra)
    latents = write_clips(tmp_path / "latents", cfg, count=4, candidates=3)
    with pytest.raises(LatentDatasetError, match="no reference candidates.*data.reference_candidates"):
        train(cfg, setup[1], tmp_path / "old")  # a single-image folder cannot train references
    run = tmp_path / "run"
    init = setup[2] / "single"  # a single-image model's checkpoint initialises the references model
    train(tiny_cfg(setup, "train.max_steps=2"), setup[1], init)
    capsys.readouterr()
    result = train(cfg, latents, run, init=ckpt.checkpoint_path(init, 2))
    assert "tensors of new conditions start at zero (references)" in capsys.readouterr().out
    assert sorted(result.losses) == [1, 2, 3, 4]
    shutil.rmtree(run / "checkpoints" / "step-0000004")
    torch.set_num_threads(1)
    resumed = train(cfg, latents, run)
    assert resumed.start_step == 2 and {s: resumed.losses[s] for s in (3, 4)} == {s: result.losses[s] for s in (3, 4)}
    weights = ckpt.load_weights(run / "checkpoints/step-0000004" / "unet")
    assert any(k.startswith("references.") and v.abs().sum() > 0 for k, v in weights.items())  # they trained
    preview = dict(read_tensorboard(run / "tensorboard"))
    assert (4, "image") in preview["preview/conditioning_image"]


def test_new_conditions_only_training_leaves_the_base_model_untouched(setup, tmp_path):
    cfg = tiny_cfg(setup, "model.max_references=2", "train.reference_dropout=0.0", "train.trainable=new_conditions",
                   "train.max_steps=2")
    latents = write_clips(tmp_path / "latents", cfg, count=2, candidates=3)
    init = setup[2] / "single_frozen"
    train(tiny_cfg(setup, "train.max_steps=2"), setup[1], init)
    train(cfg, latents, tmp_path / "run", init=ckpt.checkpoint_path(init, 2))
    before = ckpt.load_weights(ckpt.checkpoint_path(init, 2) / "unet")
    after = ckpt.load_weights(tmp_path / "run/checkpoints/step-0000002" / "unet")
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the base U-Net: bit for bit
    adapter_before, adapter_after = (ckpt.load_weights(folder / "adapter") for folder in
                                     (ckpt.checkpoint_path(init, 2), tmp_path / "run/checkpoints/step-0000002"))
    assert adapter_before.keys() == adapter_after.keys()
    assert all(torch.equal(adapter_after[k], v) for k, v in adapter_before.items())  # the adapter too
    assert any(k.startswith("references.") and v.abs().sum() > 0 for k, v in after.items())  # they trained
    with pytest.raises(ValueError, match="new_conditions needs a model with new conditions"):
        train(tiny_cfg(setup, "train.trainable=new_conditions", "train.max_steps=1"), setup[1], tmp_path / "none")


# ------------------------------------------------------------------------ held-out loss

def test_held_out_loss_is_logged_resumes_and_leaves_training_untouched(setup, straight_run, tmp_path):
    from fashionflow.training.validation import main as validation_main

    cfg, plain, result = straight_run
    extra = ["train.ema_decay=0.9", "train.cond_dropout=0.5", "train.grad_accum_steps=2", "train.warmup_steps=2",
             "train.grad_clip=1.0", "train.sample_every=4", "train.sample_steps=2", "train.keep_last=2",
             "train.val_every=2", "train.val_clips=3", "train.val_timesteps=2"]
    held_out = write_clips(tmp_path / "held_out", cfg, count=3)
    run = tmp_path / "run"
    validated = train(tiny_cfg(setup, *extra), setup[1], run, val_latents=held_out)
    assert validated.losses == result.losses  # validation draws nothing from the training's RNG
    for folder in ("unet", "training/unet"):
        a, b = (ckpt.load_weights(r / "checkpoints/step-0000004" / folder) for r in (plain, run))
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    records = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and all(r["clips"] == 3 for r in records)
    assert all(r["loss"] == pytest.approx((r["loss_t250"] + r["loss_t750"]) / 2) and r["loss"] > 0 for r in records)
    tags = read_tensorboard(run / "tensorboard")
    assert [step for step, _ in tags["val/loss"]] == [2, 4] and [s for s, _ in tags["val/loss_t750"]] == [2, 4]

    # the CLI on the step-4 checkpoint (its EMA weights) gives what the run logged at step 4
    summary = tmp_path / "held_out.json"
    args = ["--config", str(ROOT / "configs/tiny.yaml"), "--checkpoint", str(run / "checkpoints/step-0000004"),
            "--latents", str(held_out), "--timesteps", "2", "--output", str(summary), *extra, *setup[0]]
    assert validation_main(args) == 0
    assert json.loads(summary.read_text())["loss"] == pytest.approx(records[1]["loss"], rel=1e-5)

    shutil.rmtree(run / "checkpoints" / "step-0000004")  # killed after step 2's checkpoint: step 4 is redone once
    torch.set_num_threads(1)
    train(tiny_cfg(setup, *extra), setup[1], run, val_latents=held_out)
    again = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [2, 4] and again[1]["loss"] == pytest.approx(records[1]["loss"])


def test_held_out_loss_is_deterministic_and_restores_mode_and_rng(setup):
    from fashionflow.diffusion import make_scheduler
    from fashionflow.data import LatentClipDataset
    from fashionflow.models import build_models
    from fashionflow.training.validation import validation_loss, validation_timesteps

    assert validation_timesteps(1000, 5) == [100, 300, 500, 700, 900] and validation_timesteps(1000, 1) == [500]
    cfg = tiny_cfg(setup, "train.cond_dropout=0.9")  # dropout would drop the condition: validation keeps it
    unet, adapter = build_models(cfg.model)
    model = loop.DenoisingLoss(unet, adapter, make_scheduler(cfg.diffusion), cfg.diffusion).train()
    dataset = LatentClipDataset(setup[1], cfg)
    state = torch.get_rng_state()
    first = validation_loss(model, dataset, cfg, torch.device("cpu"), clips=2, timesteps=[10, 990])
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert validation_loss(model, dataset, cfg, torch.device("cpu"), clips=2, timesteps=[10, 990]) == first
    assert first.clips == 2 and set(first.per_timestep) == {10, 990}
    assert first.per_timestep[10] != first.per_timestep[990]  # each timestep scored on its own
    three = validation_loss(model, dataset, cfg, torch.device("cpu"), clips=3, timesteps=[10, 990])
    assert three.loss != first.loss  # a third clip counts


def test_held_out_loss_cli_reports_a_wrong_folder_in_one_line(setup, tmp_path, capsys):
    from fashionflow.training.validation import main as validation_main

    args = ["--config", str(ROOT / "configs/tiny.yaml"), "--checkpoint", str(tmp_path), "--latents",
            str(tmp_path / "missing"), *setup[0]]
    assert validation_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing" in err and "does not exist" in err and "\n" not in err
