"""The pose-driven mode wired through: model option, projection, training, pipeline, inference.py, evaluation.

Tiny configs (configs/tiny.yaml with model.pose_guider=true) and tiny random encoders; the
pose extraction itself (MediaPipe) is tested in test_pose.py, so these pass keypoints in.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fashionflow.config import ConfigError, config_hash, load_config
from fashionflow.data import LatentClipDataset, LatentDatasetError
from fashionflow.data.latent_dataset import read_clip_header
from fashionflow.diffusion import Guidance
from fashionflow.models import build_models, load_base_weights
from fashionflow.pose import motion_keypoints
from fashionflow.pose.drive import driving_poses
from fashionflow.testing import build_tiny_pipeline, save_tiny_encoders, tiny_encoders_config
from fashionflow.training import checkpoint as ckpt
from fashionflow.training import loop, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
POSE = ["model.pose_guider=true"]


@pytest.fixture(autouse=True)
def _one_thread(_few_threads):
    """One thread: two spin against each other on a busy 2-core machine (a 0.3 s pipeline call took 10 s)."""
    torch.set_num_threads(1)


def perturb_guider(unet, seed: int = 0) -> None:
    """Give the zero-initialised output convolution weights, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.pose_guider.conv_out.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


def unet_inputs(cfg, batch=2):
    generator = torch.Generator().manual_seed(1)
    m, d = cfg.model, cfg.data
    latents = torch.randn(batch, 4, d.num_frames, m.latent_height, m.latent_width, generator=generator)
    context = torch.randn(batch, m.num_context_tokens, m.context_dim, generator=generator)
    pose = torch.rand(batch, 3, d.num_frames, d.height, d.width, generator=generator)
    return latents, torch.tensor([10, 900]), context, pose


# ------------------------------------------------------------------------ model option

def test_released_preset_has_no_guider_and_a_fresh_guider_changes_nothing():
    released = load_config(ROOT / "configs" / "fashionflow.yaml")
    assert not released.model.pose_guider and released.data.poses is False
    cfg = load_config(TINY, POSE)
    torch.manual_seed(0)
    base, _ = build_models(load_config(TINY).model)
    torch.manual_seed(0)
    guided, _ = build_models(cfg.model)  # the guider is built last: the shared weights are the same
    assert base.pose_guider is None and guided.pose_guider is not None
    latents, t, context, pose = unet_inputs(cfg)
    with torch.no_grad():
        expected = base(latents, t, context)
        assert torch.equal(guided(latents, t, context), expected)
        assert torch.equal(guided(latents, t, context, pose=pose), expected)  # zero-initialised output
    with pytest.raises(ValueError, match="no pose guider"):
        base(latents, t, context, pose=pose)
    with pytest.raises(ValueError, match=r"pose must be \[b, 3, f, H, W\] = \[2, 3, 8, 128, 128\]"):
        guided(latents, t, context, pose=pose[..., :64, :64])


def test_checkpoint_without_guider_loads_and_pose_mask_drops_poses():
    cfg = load_config(TINY, POSE)
    base, _ = build_models(load_config(TINY).model)
    guided, _ = build_models(cfg.model)
    missing = load_base_weights(guided, base.state_dict())
    assert missing and all(k.startswith("pose_guider.") for k in missing)
    latents, t, context, pose = unet_inputs(cfg)
    with torch.no_grad():
        assert torch.equal(guided(latents, t, context), base(latents, t, context))  # = the checkpoint at step 0
        perturb_guider(guided)
        free = guided(latents, t, context)
        driven = guided(latents, t, context, pose=pose)
        masked = guided(latents, t, context, pose=pose, pose_mask=torch.tensor([False, True]))
    assert not torch.allclose(driven, free)
    assert torch.equal(masked[0], free[0]) and torch.allclose(masked[1], driven[1], atol=1e-6)
    with pytest.raises(RuntimeError, match="unexpected"):
        load_base_weights(base, guided.state_dict())  # a guider's weights into a model without one
    with pytest.raises(ConfigError, match="pose_guider_channels"):
        load_config(TINY, POSE + ["model.pose_guider_channels=[16,32]"])


def test_references_and_poses_together_start_as_the_base_model_and_both_act():
    cfg = load_config(TINY, POSE + ["model.max_references=2"])
    torch.manual_seed(0)
    base, _ = build_models(load_config(TINY).model)
    torch.manual_seed(0)
    both, _ = build_models(cfg.model)  # references, then the guider, are built after the base layers
    assert both.optional_condition_prefixes == ("references.", "pose_guider.", "first_frame.")
    assert sorted({k.split(".")[0] for k in load_base_weights(both, base.state_dict())}) == ["pose_guider",
                                                                                            "references"]
    latents, t, context, pose = unet_inputs(cfg)
    references = torch.randn(2, 2, *context.shape[1:], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = base(latents, t, context)
        assert torch.equal(both(latents, t, context, references=references, pose=pose), expected)
        perturb_guider(both)
        posed = both(latents, t, context, pose=pose)
        assert torch.equal(both(latents, t, context, references=references, pose=pose), posed)  # refs still zero
        assert not torch.allclose(posed, expected)



def test_guidance_towards_poses_and_references_is_the_compositional_formula():
    cfg = load_config(TINY, POSE + ["model.max_references=2"])
    unet, _ = build_models(cfg.model)
    perturb_guider(unet)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for layer in [*unet.references.down, *unet.references.up]:
            layer.to_out.weight.copy_(torch.randn(layer.to_out.weight.shape, generator=generator) * 0.5)
    latents, t, context, pose = unet_inputs(cfg)
    references = torch.randn(2, 2, *context.shape[1:], generator=generator)
    guidance = Guidance(image=1.5, pose=2.0, references=3.0)
    names, batch_context, batch_conditions = guidance.branches(context, {"references": references, "pose": pose})
    assert names == ["image", "pose", "references", "cond"] and batch_context.shape[0] == 8
    with torch.no_grad():
        guided = guidance.combine(names, unet(torch.cat([latents] * 4), t.repeat(4), batch_context,
                                              **batch_conditions))
        cond = unet(latents, t, context, references=references, pose=pose)
        null = unet(latents, t, torch.zeros_like(context), pose=pose)  # image guidance keeps the poses
        no_pose = unet(latents, t, context, references=references)
        no_references = unet(latents, t, context, pose=pose)
    expected = null + 1.5 * (cond - null) + (2.0 - 1) * (cond - no_pose) + (3.0 - 1) * (cond - no_references)
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(guided, cond)
    with pytest.raises(ValueError, match="pose guidance .* needs driving poses"):
        Guidance(pose=2.0).branches(context, {"references": references})
    with pytest.raises(ValueError, match="reference guidance .* needs reference images"):
        Guidance(references=2.0).branches(context, {"pose": pose})


def test_pipeline_takes_references_and_poses_together_with_guidance(tmp_path):
    pipe, _ = build_tiny_pipeline(tmp_path, load_config(TINY, POSE + ["model.max_references=2"]))
    pipe.set_progress_bar_config(disable=True)
    out = run(pipe, reference_images=[[torch.rand(3, 128, 128)]], poses=motion_keypoints("turn", 4), align=False,
              guidance_scale=2.0)
    assert out.frames.shape == (1, 4, 128, 128, 3) and out.poses[0].shape == (4, 18, 3)
    # fresh optional modules: guidance towards them changes nothing; a batch may mix inputs with and without
    mixed = pipe(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)), num_inference_steps=2,
                 generator=[torch.Generator().manual_seed(3)] * 2, output_type="np", align=False,
                 reference_images=[None, [torch.rand(3, 128, 128)]], poses=[motion_keypoints("turn", 4), None],
                 pose_guidance_scale=3.0, reference_guidance_scale=3.0)
    plain = pipe(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)), num_inference_steps=2,
                 generator=[torch.Generator().manual_seed(3)] * 2, output_type="np", num_frames=4)
    np.testing.assert_allclose(mixed.frames.astype(float), plain.frames.astype(float), atol=1)


# ------------------------------------------------------------------------ poses for one video

def test_driving_poses_resample_align_and_frame_zero_is_the_reference():
    driving = motion_keypoints("sway", num_frames=12)
    reference = motion_keypoints("turn", num_frames=1)[0]
    reference[:, :2] = reference[:, :2] * 0.5 + 0.2  # a smaller person, elsewhere in the frame
    poses = driving_poses(driving, 8, reference, align=True)
    assert poses.shape == (8, 18, 3) and poses.dtype == np.float32
    np.testing.assert_array_equal(poses[0], reference)  # frame 0 is the input image: its own pose
    assert abs(poses[1:, 1, 1].mean() - reference[1, 1]) < 0.05  # the neck stays at the reference's height
    as_given = driving_poses(driving, 12, reference, align=False)
    np.testing.assert_array_equal(as_given, driving)  # align=False: the poses as they are, frame 0 too
    lines = []
    unaligned = driving_poses(driving, 12, None, align=True, log=lines.append)
    np.testing.assert_array_equal(unaligned, driving)
    assert len(lines) == 1 and "no person found" in lines[0]


# ------------------------------------------------------------------------ data

def write_pose_clips(folder: Path, cfg, count: int = 4, with_keypoints: bool = True) -> Path:
    """Latent clip files as projection writes them with data.poses (random tensors, real motions)."""
    from test_train import write_clips

    write_clips(folder, cfg, count)
    for index, path in enumerate(sorted(folder.glob("clip*.safetensors"))):
        if with_keypoints:
            tensors, metadata = load_file(str(path)), read_clip_header(path)["metadata"]
            motion = ("turn", "sway", "catwalk")[index % 3]
            tensors["keypoints"] = torch.from_numpy(motion_keypoints(motion, cfg.data.num_frames))
            save_file(tensors, str(path), metadata=metadata)
    return folder


def test_projection_stores_sidecar_keypoints_moved_with_the_crop(tmp_path):
    from fashionflow.data.projection import resize_keypoints, run_projection
    from fashionflow.synthetic import generate_dataset, read_pose_sidecar

    points = np.array([[[0.5, 0.5, 1.0], [0.05, 0.5, 1.0]]], np.float32)  # a 200 x 100 frame cropped to 1:1
    moved = resize_keypoints(points, 100, 200, 64, 64, "crop")
    np.testing.assert_allclose(moved[0, 0], [0.5, 0.5, 1.0])
    assert moved[0, 1, 2] == 0  # cut off by the crop
    np.testing.assert_array_equal(resize_keypoints(points, 100, 200, 64, 64, "stretch"), points)

    generate_dataset(tmp_path / "videos", num_videos=1, num_frames=10, height=64, width=64, test_fraction=0,
                     log=lambda *_: None)
    paths = save_tiny_encoders(tmp_path / "encoders", 32)
    enc = tiny_encoders_config(paths)
    overrides = ["data.height=64", "data.width=64", "model.latent_height=8", "model.latent_width=8",
                 "model.dim_mults=[1,2,2]", "model.resnet_depths=[1,1,1]", "model.self_attention=[false,false,true]",
                 "model.temporal_compression=[false,false,true]", "model.cross_attention_heads=[1,1,2]",
                 f"encoders.vae={enc.vae}", "encoders.vae_subfolder=null",
                 f"encoders.image_encoder={enc.image_encoder}"]
    cfg = load_config(TINY, overrides + ["data.poses=true"])
    summary = run_projection(cfg, tmp_path / "videos" / "train", tmp_path / "latents", device="cpu",
                             show_progress=False)
    assert not summary.skipped
    dataset = LatentClipDataset(tmp_path / "latents", load_config(TINY, overrides + ["data.poses=true"] + POSE))
    item, meta = dataset[0], dataset.metadata(0)
    sidecar = read_pose_sidecar(tmp_path / "videos" / "train" / meta["source"])["keypoints"]
    start = int(meta["start_frame"])
    assert meta["poses"] == "sidecar"
    np.testing.assert_array_equal(item["keypoints"].numpy(), sidecar[start:start + 8])
    # the hash of configs without poses is what it was before the option existed
    assert config_hash(load_config(TINY, overrides)) != config_hash(cfg)


def test_dataset_without_keypoints_loads_pose_free_and_is_refused_for_the_guider(tmp_path):
    cfg = load_config(TINY)
    folder = write_pose_clips(tmp_path / "old", cfg, count=1, with_keypoints=False)
    assert "keypoints" not in LatentClipDataset(folder, cfg)[0]
    with pytest.raises(LatentDatasetError, match="no keypoints.*data.poses=true"):
        LatentClipDataset(folder, load_config(TINY, POSE))


# ------------------------------------------------------------------------ training

@pytest.fixture(scope="module")
def pose_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose_train")
    paths = save_tiny_encoders(root / "encoders", context_dim=32)
    enc = tiny_encoders_config(paths)
    overrides = [f"encoders.vae={enc.vae}", "encoders.vae_subfolder=null", f"encoders.image_encoder={enc.image_encoder}",
                 "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1", "train.num_workers=0",
                 "train.pose_dropout=0.5", "train.sample_every=4", "train.sample_steps=2", "sample.num_frames=8",
                 *POSE]
    cfg = load_config(TINY, overrides)
    return overrides, write_pose_clips(root / "latents", cfg), root


def pose_cfg(setup, *extra):
    torch.set_num_threads(1)
    return load_config(TINY, setup[0] + list(extra))


def test_pose_draws_come_after_the_others_and_only_with_the_guider(pose_setup):
    cfg = pose_cfg(pose_setup)
    batch = torch.utils.data.default_collate([LatentClipDataset(pose_setup[1], cfg)[i] for i in range(3)])
    draws = []
    for config in (cfg, load_config(TINY, [o for o in pose_setup[0] if o not in POSE])):
        generator = torch.Generator().manual_seed(5)
        inputs = loop.draw_step_inputs(batch, config, generator, torch.device("cpu"))
        draws.append((inputs, loop.draw_pose_inputs(batch, config, generator, torch.device("cpu"))))
    (with_pose, conditions), (without, none) = draws
    assert none == {} and all(torch.equal(a, b) for a, b in zip(with_pose[2:], without[2:]) if a is not None)
    assert conditions["pose"].shape == (3, 3, 8, 128, 128) and conditions["pose_mask"].dtype == torch.bool
    assert conditions["pose"].amax() > 0.5  # skeletons drawn


def test_pose_training_resumes_bitwise_and_trains_the_guider(pose_setup, capsys):
    cfg = pose_cfg(pose_setup)
    run = pose_setup[2] / "straight"
    result = train(cfg, pose_setup[1], run)
    final = ckpt.load_weights(run / "checkpoints/step-0000004" / "unet")
    assert final["pose_guider.conv_out.weight"].abs().sum() > 0  # it learnt something from the poses
    assert list((run / "samples").glob("step-0000004.mp4"))
    resumed = pose_setup[2] / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-0000004")
    torch.set_num_threads(1)
    second = train(cfg, pose_setup[1], resumed)
    assert {s: second.losses[s] for s in (3, 4)} == {s: result.losses[s] for s in (3, 4)}

    # --init from a checkpoint without a pose guider: loads, the guider starts at zero
    plain = load_config(TINY, [o for o in pose_setup[0] if o not in POSE])
    source = pose_setup[2] / "plain_init"
    unet, adapter = build_models(plain.model)
    for name, module in (("unet", unet), ("adapter", adapter)):
        module.save_pretrained(source / name)
    capsys.readouterr()
    started = train(pose_cfg(pose_setup, "train.max_steps=1", "train.sample_every=0"), pose_setup[1],
                    pose_setup[2] / "from_plain", init=source)
    assert started.final_step == 1
    assert "tensors of new conditions start at zero (pose_guider)" in capsys.readouterr().out


# ------------------------------------------------------------------------ pipeline and inference.py

@pytest.fixture(scope="module")
def pose_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pose_pipe")
    pipe, cfg = build_tiny_pipeline(folder, load_config(TINY, POSE))
    pipe.set_progress_bar_config(disable=True)
    return pipe, cfg, folder


def run(pipe, **kwargs):
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    return pipe(image, num_inference_steps=2, generator=[generator], output_type="np", **kwargs)


def test_pipeline_both_modes_and_frame_count_follows_the_poses(pose_pipeline):
    pipe = pose_pipeline[0]
    poses = motion_keypoints("catwalk", num_frames=5)
    free = run(pipe, num_frames=6)
    assert free.poses is None and free.frames.shape == (1, 6, 128, 128, 3)
    fresh = run(pipe, poses=poses, align=False)  # 5 poses -> 6 frames (a multiple of 2), resampled
    assert fresh.frames.shape[1] == 6 and fresh.poses[0].shape == (6, 18, 3)
    np.testing.assert_array_equal(fresh.frames, free.frames)  # a fresh guider: pose-driven = pose-free
    perturb_guider(pipe.unet)
    try:
        driven = run(pipe, poses=poses, align=False)
        other = run(pipe, poses=motion_keypoints("turn", num_frames=6), align=False)
        four = run(pipe, poses=poses, align=False, num_frames=4)
        mixed = pipe(torch.rand(2, 3, 128, 128), num_inference_steps=2, output_type="np",
                     generator=[torch.Generator().manual_seed(3)] * 2, poses=[None, poses], align=False)
    finally:
        torch.nn.init.zeros_(pipe.unet.pose_guider.conv_out.weight), torch.nn.init.zeros_(pipe.unet.pose_guider.conv_out.bias)
    assert not np.array_equal(driven.frames, free.frames) and not np.array_equal(driven.frames, other.frames)
    assert four.frames.shape[1] == 4 and four.poses[0].shape == (4, 18, 3)
    assert mixed.poses[0] is None and mixed.poses[1].shape == (6, 18, 3)


def test_pipeline_without_guider_refuses_poses(tmp_path):
    pipe, _ = build_tiny_pipeline(tmp_path)
    with pytest.raises(ValueError, match="no pose guider"):
        run(pipe, poses=motion_keypoints("turn", 4), align=False)


def inference_main(args):
    sys.path.insert(0, str(ROOT))
    import inference

    return inference.main(args)


@pytest.fixture(scope="module")
def checkpoints(pose_pipeline, tmp_path_factory):
    from fashionflow.pipeline import save_pipeline

    pipe, cfg, folder = pose_pipeline
    cfg.sample.num_inference_steps = 2
    plain_pipe, plain_cfg = build_tiny_pipeline(tmp_path_factory.mktemp("plain"))
    plain_cfg.sample.num_inference_steps = 2
    return save_pipeline(pipe, folder / "pose", cfg), save_pipeline(plain_pipe, folder / "plain", plain_cfg)


def test_inference_motion_writes_pose_strip_and_alignment_preview(checkpoints, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((120, 90, 3), 200, np.uint8)).save(tmp_path / "blank.png")
    out = tmp_path / "out"
    args = ["--checkpoint", str(checkpoints[0]), "--image", str(tmp_path / "blank.png"), "--motion", "sway",
            "--pose-guidance", "2", "--frames", "4", "--output-dir", str(out), "--device", "cpu"]
    assert inference_main(args) == 0
    captured = capsys.readouterr()
    assert "driven by motion sway (4 poses, aligned)" in captured.out
    assert "no person found, so the driving poses are used as they are" in captured.err  # a blank photo
    strip = np.asarray(Image.open(out / "blank_0_poses.png"))
    assert strip.shape == (256, 4 * 128, 3)  # skeletons above the 4 frames
    assert strip[:128].max() > 0 and (out / "blank_0_alignment.png").is_file()


def test_inference_pose_errors_are_one_line(checkpoints, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "a.png")
    common = ["--image", str(tmp_path / "a.png"), "--output-dir", str(tmp_path / "out"), "--device", "cpu"]
    assert inference_main(["--checkpoint", str(checkpoints[1]), "--motion", "turn", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no pose guider" in err[0] and "motion turn" in err[0]
    assert inference_main(["--checkpoint", str(checkpoints[0]), "--pose", str(tmp_path / "none.npy"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.npy: file not found" in err[0]
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert inference_main(["--checkpoint", str(checkpoints[0]), "--pose", str(tmp_path / "bad.npy"), *common]) == 2
    assert "bad.npy" in capsys.readouterr().err
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert inference_main(["--checkpoint", str(checkpoints[0]), "--pose-video", str(tmp_path / "bad.mp4"),
                           *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.mp4" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        inference_main(["--checkpoint", str(checkpoints[0]), "--motion", "moonwalk", *common])
    assert exit_info.value.code == 2 and "invalid choice: 'moonwalk'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inference_main(["--checkpoint", str(checkpoints[0]), "--pose-guidance", "2", *common])
    assert "--pose-guidance needs driving poses" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inference_main(["--checkpoint", str(checkpoints[0]), "--reference-guidance", "2", *common])
    assert "--reference-guidance needs references" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.mp4"))


def test_evaluate_pose_end_to_end_on_an_untrained_model(checkpoints, tmp_path, capsys):
    from fashionflow.demo import evaluate_pose
    from fashionflow.synthetic import generate_dataset

    generate_dataset(tmp_path / "synthetic", num_videos=2, num_frames=8, height=128, width=128, test_fraction=0.5,
                     log=lambda *_: None)
    output = tmp_path / "pose_quality.json"
    args = ["--checkpoint", str(checkpoints[0]), "--dataset", str(tmp_path / "synthetic"), "--steps", "2",
            "--threads", "1", "--output", str(output), "--strip", str(tmp_path / "strip.png"), "--sampler", "ddim"]
    assert evaluate_pose.main(args) == 0
    result = json.loads(output.read_text())
    assert result["sampler"] == "DDIMScheduler"  # --sampler overrides the checkpoint's (DDPM)
    assert result["clips"] == 1 and set(result["pose_driven"]) == {"ssim", "psnr", "psnr_pooled", "psnr_figure",
                                                                   "psnr_background", "psnr_by_frame"}
    for method in ("pose_driven", "pose_free", "repeat_input", "truth_through_vae", "repeat_input_through_vae"):
        by_frame = result[method]["psnr_by_frame"]
        assert len(by_frame) == 7 and np.mean(by_frame) == pytest.approx(result[method]["psnr"], abs=1e-2)
        # the PSNR of the mean squared error is at most the mean of the frames' PSNRs (Jensen), equal
        # only when every frame is missed by as much
        assert result[method]["psnr_pooled"] <= result[method]["psnr"] + 1e-6
        # the clip's error is the figure's and the background's, weighted by their pixels: between the two
        parts = sorted((result[method]["psnr_figure"], result[method]["psnr_background"]))
        assert parts[0] - 1e-6 <= result[method]["psnr_pooled"] <= parts[1] + 1e-6
    # untrained: the guider is zero, so pose-driven and pose-free are the same video
    assert result["pose_driven"] == result["pose_free"]
    out = capsys.readouterr().out
    assert "| PSNR vs ground truth" in out and "truth through the VAE |" in out and "| PSNR (dB) at frame |" in out
    assert (tmp_path / "strip.png").is_file()
    assert evaluate_pose.main(["--checkpoint", str(checkpoints[1]), "--dataset", str(tmp_path / "synthetic")]) == 1
