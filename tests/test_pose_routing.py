"""Pose-routed references (`model.reference_pose_routing`; pose/similarity.py, models/unet.py):
the pose distance, the per-frame attention it drives, the U-Net's equivalences with the option
off or the pose dropped, the training draws, projection of the candidates' poses, the pipeline."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fashionflow.config import ConfigError, load_config
from fashionflow.models import build_models
from fashionflow.models.attention import ImageCrossAttention, attend, attend_per_frame
from fashionflow.pose.keypoints import JOINT
from fashionflow.pose.motions import motion_keypoints
from fashionflow.pose.similarity import pose_distance, pose_routing_bias
from fashionflow.training import loop

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
ROUTED = ["model.pose_guider=true", "model.max_references=2", "model.reference_pose_routing=30"]


@pytest.fixture(autouse=True)
def _one_thread(_few_threads):
    torch.set_num_threads(1)


def turning_clip():
    """A synthetic clip's true keypoints [f, 18, 3] and yaw [f] (degrees, 0 = facing the camera)."""
    from fashionflow.synthetic import render_clip

    for seed in range(40):
        clip = render_clip(seed, num_frames=24, height=64, width=64)
        yaw = np.abs(clip.yaw)
        if (yaw < 30).any() and (yaw > 150).any():
            return torch.from_numpy(clip.keypoints), yaw
    raise AssertionError("no synthetic clip turns its back in 40 seeds")


# ------------------------------------------------------------------------ the distance

def test_pose_distance_ignores_framing_and_tells_front_from_back():
    keypoints, yaw = turning_clip()
    distance = pose_distance(keypoints[None], keypoints[None])[0]  # f f
    front, back = np.flatnonzero(yaw < 30), np.flatnonzero(yaw > 150)
    same_side = max(distance[np.ix_(front, front)].max(), distance[np.ix_(back, back)].max())
    assert distance[np.ix_(front, back)].min() > 2 * same_side  # every front-back pair farther than any same-side pair
    moved = keypoints.clone()
    moved[..., :2] = keypoints[..., :2] * 0.5 + 0.2  # a smaller person elsewhere in the frame
    torch.testing.assert_close(pose_distance(keypoints[None], moved[None])[0].diagonal(), torch.zeros(len(keypoints)),
                               atol=1e-6, rtol=0)
    unseen = keypoints[:1].clone()
    unseen[..., 2] = 0
    assert torch.isnan(pose_distance(keypoints[None, :2], unseen[None])).all()


def test_routing_bias_favours_the_nearest_and_keeps_unknown_poses_neutral():
    keypoints, yaw = turning_clip()
    front, back = int(np.argmin(yaw)), int(np.argmax(yaw))
    unknown = torch.zeros(18, 3)
    references = torch.stack([keypoints[front], keypoints[back], unknown])[None]  # 1 3 18 3
    bias = pose_routing_bias(keypoints[None, [front, back]], references, sharpness=30.0)[0]  # 2 frames x 3
    assert bias[0, 0] == 0 and bias[1, 1] == 0 and bias[0, 1] < -5 and bias[1, 0] < -5
    torch.testing.assert_close(bias[:, 2], bias[:, :2].mean(dim=1))  # unknown: the mean of the known
    assert torch.equal(pose_routing_bias(unknown[None, None], references, 30.0), torch.zeros(1, 1, 3))


# ------------------------------------------------------------------------ per-frame attention

def test_attend_per_frame_is_each_frame_alone_with_its_own_logits():
    g = torch.Generator().manual_seed(0)
    b, heads, f, l, s, d = 2, 2, 4, 6, 5, 8
    q, k, v = torch.randn(b, heads, f * l, d, generator=g), torch.randn(b, heads, s, d, generator=g), \
        torch.randn(b, heads, s, d, generator=g)
    bias = torch.randn(b, f, s, generator=g)
    out = attend_per_frame(q, k, v, bias, f)
    for frame in range(f):
        alone = attend(q[:, :, frame * l:(frame + 1) * l], k, v, bias[:, frame, None, None, :])
        torch.testing.assert_close(out[:, :, frame * l:(frame + 1) * l], alone)
    # a level that halved the frames pools the logits of frame pairs
    pooled = attend_per_frame(q, k, v, bias.repeat_interleave(2, dim=1), f)
    torch.testing.assert_close(pooled, out)
    # -inf on every token but one group: the frame sees exactly that group, as if it were the context
    layer = ImageCrossAttention(16, 2, 8).eval()
    x, image_tokens, view_tokens = torch.randn(1, 16, f, 4, 4, generator=g), torch.randn(1, 3, 8, generator=g), \
        torch.randn(1, 3, 8, generator=g)
    only_view = torch.zeros(1, f, 6)
    only_view[:, 1:, :3] = float("-inf")  # frames 1.. see the view's tokens, frame 0 both
    with torch.no_grad():
        routed = layer(x, torch.cat([image_tokens, view_tokens], dim=1), only_view)
        torch.testing.assert_close(routed[:, :, 1:], layer(x, view_tokens)[:, :, 1:])
        torch.testing.assert_close(routed[:, :, 0], layer(x, torch.cat([image_tokens, view_tokens], 1))[:, :, 0])


# ------------------------------------------------------------------------ the U-Net

def routed_inputs(cfg, reference_pose):
    """Inputs of a pose-driven video (the 'turn' motion) with two references of the given poses."""
    g = torch.Generator().manual_seed(1)
    m, d = cfg.model, cfg.data
    keypoints = torch.from_numpy(motion_keypoints("turn", d.num_frames))[None].repeat(2, 1, 1, 1)
    return dict(latents=torch.randn(2, 4, d.num_frames, m.latent_height, m.latent_width, generator=g),
                timesteps=torch.tensor([10, 900]), context=torch.randn(2, m.num_context_tokens, m.context_dim, generator=g),
                references=torch.randn(2, 2, m.num_context_tokens, m.context_dim, generator=g),
                pose=torch.rand(2, 3, d.num_frames, d.height, d.width, generator=g), pose_keypoints=keypoints,
                reference_keypoints=reference_pose[None].repeat(2, 1, 1, 1))


def far_pose(keypoints: torch.Tensor) -> torch.Tensor:
    """keypoints [18, 3] with every left and right label swapped: the joints where they were, the body
    seen from the other side (its right now on the right of the image)."""
    swapped = keypoints.clone()
    for name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear"):
        swapped[[JOINT[f"right_{name}"], JOINT[f"left_{name}"]]] = keypoints[[JOINT[f"left_{name}"], JOINT[f"right_{name}"]]]
    return swapped


@pytest.fixture(scope="module")
def routed_unet():
    cfg = load_config(TINY, ROUTED)
    torch.manual_seed(0)
    unet, _ = build_models(cfg.model)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # as training would leave them: the guider and the reference attention act
        for p in [*unet.pose_guider.conv_out.parameters(),
                  *(layer.to_out.weight for layer in [*unet.references.down, *unet.references.up])]:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return cfg, unet.eval()


@torch.no_grad()
def test_routing_off_or_pose_dropped_is_the_unrouted_model(routed_unet):
    cfg, unet = routed_unet
    front = torch.from_numpy(motion_keypoints("turn", cfg.data.num_frames))[0]
    inputs = routed_inputs(cfg, torch.stack([front, far_pose(front)]))
    unrouted = {k: v for k, v in inputs.items() if not k.endswith("keypoints")}
    plain = unet(**unrouted)
    routed = unet(**inputs)
    assert routed.shape == plain.shape and not torch.allclose(routed, plain, atol=1e-4)
    unet.register_to_config(reference_pose_routing=0.0)
    try:
        assert torch.equal(unet(**inputs), plain)  # option off: keypoints are ignored
    finally:
        unet.register_to_config(reference_pose_routing=30.0)
    dropped = torch.tensor([False, True])
    mixed = unet(**inputs, pose_mask=dropped)
    torch.testing.assert_close(mixed[:1], unet(**unrouted, pose_mask=dropped)[:1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed[1:], routed[1:], atol=1e-5, rtol=1e-4)  # batch items stay independent
    alone = unet(**{k: v[1:] if torch.is_tensor(v) and v.ndim else v for k, v in inputs.items()
                    if k != "timesteps"}, timesteps=inputs["timesteps"][1:])
    torch.testing.assert_close(alone, routed[1:], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_a_reference_posed_unlike_every_frame_is_left_out(routed_unet):
    """A reference of no frame's pose gets a -inf-like logit in the image context and a gate of
    about 0 on the reference attention (here trained: non-zero), so the video is the one made
    without it; one posed like the frames enters and changes the video."""
    cfg, unet = routed_unet
    keypoints = torch.from_numpy(motion_keypoints("turn", cfg.data.num_frames))
    unseen = keypoints[0].clone()
    unseen[:, :2] = torch.rand(18, 2, generator=torch.Generator().manual_seed(0))  # a scrambled pose
    inputs = routed_inputs(cfg, torch.stack([unseen, unseen]))
    without = unet(**{k: v for k, v in inputs.items() if k not in ("references", "reference_keypoints")})
    torch.testing.assert_close(unet(**inputs), without, atol=1e-5, rtol=1e-4)
    unrouted = unet(**{k: v for k, v in inputs.items() if not k.endswith("keypoints")})
    assert not torch.allclose(unrouted, without, atol=1e-4)  # unrouted, the reference attention adds it
    like_frames = routed_inputs(cfg, keypoints[[3, 5]])
    assert not torch.allclose(unet(**like_frames), without, atol=1e-4)
    with pytest.raises(ValueError, match=r"reference_keypoints must be \[b, r, 18, 3\]"):
        unet(**{**inputs, "reference_keypoints": inputs["reference_keypoints"][:, :1]})


def test_reference_attention_gate_scales_each_frame():
    from fashionflow.models.references import ReferenceAttention

    layer = ReferenceAttention(16, 2, 8).eval()
    torch.nn.init.normal_(layer.to_out.weight)
    g = torch.Generator().manual_seed(0)
    x, references = torch.randn(1, 16, 4, 3, 3, generator=g), torch.randn(1, 2, 5, 8, generator=g)
    mask, routing = torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 4, 2)
    with torch.no_grad():
        full = layer(x, references, mask, routing)
        gated = layer(x, references, mask, routing, torch.tensor([[0.0, 1.0, 0.5, 0.0]]))
        halved = layer(x, references, mask, routing, torch.full((1, 2), 0.5))  # other frame counts are resampled
    assert torch.equal(gated[:, :, [0, 3]], x[:, :, [0, 3]]) and torch.allclose(gated[:, :, 1], full[:, :, 1])
    torch.testing.assert_close(gated[:, :, 2] - x[:, :, 2], 0.5 * (full[:, :, 2] - x[:, :, 2]))
    torch.testing.assert_close(halved - x, 0.5 * (full - x))


def test_config_needs_references_and_poses_for_routing():
    with pytest.raises(ConfigError, match="reference_pose_routing .* needs"):
        load_config(TINY, ["model.max_references=2", "model.reference_pose_routing=30"])
    with pytest.raises(ConfigError, match="must be >= 0"):
        load_config(TINY, [*ROUTED[:2], "model.reference_pose_routing=-1"])
    assert load_config(ROOT / "configs" / "fashionflow.yaml").model.reference_pose_routing == 0


# ------------------------------------------------------------------------ data and training

def test_candidate_poses_stored_or_taken_from_the_clip_window():
    from fashionflow.data.latent_dataset import candidate_keypoints

    clip = torch.from_numpy(motion_keypoints("turn", 8))
    tensors = {"reference_frames": torch.tensor([2, 9, 12]), "keypoints": clip}
    poses = candidate_keypoints(tensors, start=5)  # the clip is frames 5..12
    assert torch.equal(poses[1], clip[4]) and torch.equal(poses[2], clip[7]) and (poses[0, :, 2] == 0).all()
    stored = torch.rand(3, 18, 3)
    assert torch.equal(candidate_keypoints({**tensors, "reference_keypoints": stored}, 5), stored)


def test_reference_draw_returns_the_chosen_candidates_poses_with_the_same_draws():
    g = torch.Generator().manual_seed(0)
    batch = {"reference_latent_mean": torch.randn(3, 4, 4, 16, 16, generator=g),
             "reference_latent_std": torch.rand(3, 4, 4, 16, 16, generator=g) * 0.1,
             "reference_clip_hidden_states": torch.randn(3, 4, 50, 32, generator=g),
             "reference_keypoints": torch.rand(3, 4, 18, 3, generator=g),
             "reference_valid": torch.tensor([[False, True, True, True], [True] * 4, [True, False, False, False]])}
    plain = loop.draw_references(batch, load_config(TINY, ROUTED[:2]), torch.Generator().manual_seed(4),
                                 torch.device("cpu"))
    clip, latent, mask, poses = loop.draw_references(batch, load_config(TINY, ROUTED), torch.Generator().manual_seed(4),
                                                     torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(plain, (clip, latent, mask)))  # resume-exact: same draws
    for i in range(3):
        for slot in range(2):
            j = next(j for j in range(4) if torch.equal(batch["reference_clip_hidden_states"][i, j], clip[i, slot]))
            assert torch.equal(poses[i, slot], batch["reference_keypoints"][i, j])


def test_projection_stores_the_candidates_poses_and_training_routes_with_them(tmp_path):
    from fashionflow.data.latent_dataset import LatentClipDataset
    from fashionflow.data.projection import run_projection
    from fashionflow.synthetic import generate_dataset, read_pose_sidecar
    from fashionflow.testing import save_tiny_encoders, tiny_encoders_config

    generate_dataset(tmp_path / "videos", num_videos=1, num_frames=12, height=64, width=64, test_fraction=0,
                     log=lambda *_: None)
    enc = tiny_encoders_config(save_tiny_encoders(tmp_path / "encoders", 32))
    overrides = ["data.height=64", "data.width=64", "model.latent_height=8", "model.latent_width=8",
                 "model.dim_mults=[1,2,2]", "model.resnet_depths=[1,1,1]", "model.self_attention=[false,false,true]",
                 "model.temporal_compression=[false,false,true]", "model.cross_attention_heads=[1,1,2]",
                 f"encoders.vae={enc.vae}", "encoders.vae_subfolder=null", f"encoders.image_encoder={enc.image_encoder}",
                 "data.poses=true", "data.reference_candidates=3"]
    summary = run_projection(load_config(TINY, overrides), tmp_path / "videos" / "train", tmp_path / "latents",
                             device="cpu", show_progress=False)
    assert not summary.skipped
    cfg = load_config(TINY, overrides + ROUTED)
    dataset = LatentClipDataset(tmp_path / "latents", cfg)
    item = dataset[0]
    sidecar = read_pose_sidecar(tmp_path / "videos" / "train" / dataset.metadata(0)["source"])["keypoints"]
    np.testing.assert_array_equal(item["reference_keypoints"].numpy(), sidecar[item["reference_frames"].numpy()])

    # one training step's loss and gradients with routing, from the dataset's batch
    unet, adapter = build_models(cfg.model)
    model = loop.DenoisingLoss(unet, adapter, __import__("fashionflow.diffusion", fromlist=["x"]).make_scheduler(
        cfg.diffusion), cfg.diffusion)
    batch = torch.utils.data.default_collate([item, item])
    generator = torch.Generator().manual_seed(0)
    inputs = loop.draw_step_inputs(batch, cfg, generator, torch.device("cpu"))
    conditions = loop.draw_pose_inputs(batch, cfg, generator, torch.device("cpu"))
    assert len(inputs) == 10 and inputs[-1].shape == (2, 2, 18, 3) and conditions["pose_keypoints"].shape == (2, 8, 18, 3)
    loss = model(*inputs, **conditions)
    loss.backward()
    assert torch.isfinite(loss) and unet.references.down[0].to_out.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------ pipeline

def test_pipeline_routes_with_given_or_found_reference_poses(tmp_path, capsys):
    from fashionflow.testing import build_tiny_pipeline

    pipe, cfg = build_tiny_pipeline(tmp_path, load_config(TINY, ROUTED))
    pipe.set_progress_bar_config(disable=True)
    poses = motion_keypoints("turn", 4)
    image, back = torch.rand(3, 128, 128), torch.rand(3, 128, 128)

    def run(**kwargs):
        return pipe(image, num_inference_steps=2, generator=[torch.Generator().manual_seed(0)], output_type="np",
                    poses=poses, align=False, reference_images=[[back]], **kwargs).frames

    given = run(reference_keypoints=[[poses[2]]])
    assert given.shape == (1, 4, 128, 128, 3)
    found = run()  # no pose given: MediaPipe looks for one in the noise image, finds nobody, says so
    assert "reference image 0 of input 0: no person found, so no frame is routed to it" in capsys.readouterr().out
    assert found.shape == given.shape
    with pytest.raises(ValueError, match="reference_keypoints\\[0\\] has 2 poses for 1 reference images"):
        run(reference_keypoints=[[poses[0], poses[1]]])


def test_inference_cli_reference_poses(tmp_path, capsys, monkeypatch):
    import sys

    from PIL import Image

    from fashionflow.pipeline import save_pipeline
    from fashionflow.pose import save_keypoints
    from fashionflow.testing import build_tiny_pipeline

    pipe, cfg = build_tiny_pipeline(tmp_path / "pipe", load_config(TINY, ROUTED))
    cfg.sample.num_inference_steps = 2
    cfg.sample.init_strength, cfg.sample.routed_init_strength = 0.9, 0.4
    checkpoint = save_pipeline(pipe, tmp_path / "routed", cfg)
    for name in ("front", "back"):
        Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / f"{name}.png")
    save_keypoints(tmp_path / "back.npy", motion_keypoints("turn", 4)[2:3])
    sys.path.insert(0, str(ROOT))
    import inference

    common = ["--checkpoint", str(checkpoint), "--image", str(tmp_path / "front.png"), "--motion", "turn",
              "--no-align", "--frames", "4", "--reference", str(tmp_path / "back.png"), "--device", "cpu"]
    capsys.readouterr()
    assert inference.main(common + ["--output-dir", str(tmp_path / "given"), "--reference-pose",
                                    str(tmp_path / "back.npy")]) == 0
    assert "no person found" not in capsys.readouterr().out  # the given pose is used, nothing is searched
    assert inference.main(common + ["--output-dir", str(tmp_path / "found")]) == 0
    assert "reference image 0 of input 0: no person found, so no frame is routed to it" in capsys.readouterr().out  # a flat grey image
    assert (tmp_path / "given" / "front_0.mp4").is_file() and (tmp_path / "found" / "front_0.mp4").is_file()
    with pytest.raises(SystemExit):
        inference.main(common + ["--reference-pose", str(tmp_path / "back.npy"), str(tmp_path / "back.npy")])
    assert "one keypoint file per --reference image: 2 for 1" in capsys.readouterr().err
    assert inference.main(common + ["--reference-pose", str(tmp_path / "missing.npy")]) == 2
    assert "error: reference poses:" in capsys.readouterr().err
    # the routed start's strength, three runs: the config's; --init-strength alone (it sets both);
    # --routed-init-strength beside it
    seen, original = [], type(pipe).__call__

    def spy(self, *args, **kwargs):
        seen.append((kwargs["init_strength"], kwargs["routed_init_strength"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", spy)
    for extra in ([], ["--init-strength", "0.5"], ["--init-strength", "0.5", "--routed-init-strength", "0.3"]):
        assert inference.main(common + ["--output-dir", str(tmp_path / "strength"), *extra]) == 0
    assert seen == [(0.9, 0.4), (0.5, 0.5), (0.5, 0.3)]
    with pytest.raises(SystemExit):
        inference.main([*common[:common.index("--reference")], "--routed-init-strength", "0.3"])
    assert "--routed-init-strength needs driving poses" in capsys.readouterr().err


def test_bundling_takes_the_routing_from_the_preset(tmp_path):
    from fashionflow.config import save_config
    from fashionflow.demo.bundle import bundle_pipeline
    from fashionflow.pipeline import load_pipeline, save_pipeline
    from fashionflow.testing import build_tiny_pipeline

    pipe, cfg = build_tiny_pipeline(tmp_path / "pipe", load_config(TINY, ROUTED[:2]))  # trained without routing
    run = save_pipeline(pipe, tmp_path / "run", cfg)
    preset = load_config(TINY, [*ROUTED[:2], "model.reference_pose_routing=12", "sample.num_frames=4"])
    save_config(preset, tmp_path / "preset.yaml")
    bundle_pipeline(run, tmp_path / "bundle", max_mb=50, preset=tmp_path / "preset.yaml")
    bundled, bundled_cfg = load_pipeline(tmp_path / "bundle")
    assert bundled.unet.config.reference_pose_routing == 12 == bundled_cfg.model.reference_pose_routing
    assert bundled_cfg.sample.num_frames == 4
    weights = lambda p: p.unet.state_dict()  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(weights(pipe).values(), weights(bundled).values()))


def test_routed_start_begins_each_frame_from_the_view_it_is_posed_like(tmp_path):
    from fashionflow.diffusion import first_frame_start, make_scheduler
    from fashionflow.testing import build_tiny_pipeline

    pipe, cfg = build_tiny_pipeline(tmp_path, load_config(TINY, ROUTED))
    front = torch.from_numpy(motion_keypoints("turn", 4))[0]
    back = far_pose(front)
    g = torch.Generator().manual_seed(0)
    image_latent, back_latent = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 1, 4, 16, 16, generator=g)
    conditions = {"reference_mask": torch.tensor([[True]]), "pose_mask": torch.tensor([True]),
                  "pose_keypoints": torch.stack([front, front, back, back])[None], "reference_keypoints": back[None, None]}
    start = pipe.routed_start(image_latent, back_latent, conditions)  # b c f h w
    for frame, view in ((0, image_latent[0]), (1, image_latent[0]), (2, back_latent[0, 0]), (3, back_latent[0, 0])):
        torch.testing.assert_close(start[0, :, frame], view, atol=1e-4, rtol=0)
    # pose dropped, or the reference's pose unknown: no frame has a view of its own, frame 0 repeated (None)
    assert pipe.routed_start(image_latent, back_latent, {**conditions, "pose_mask": torch.tensor([False])}) is None
    assert pipe.routed_start(image_latent, back_latent, {**conditions, "reference_keypoints": torch.zeros(1, 1, 18, 3)}) is None
    assert pipe.routed_start(image_latent, None, conditions) is None
    # the sampler noises these starts where it would noise frame 0 repeated
    scheduler = make_scheduler(cfg.diffusion)
    scheduler.set_timesteps(10)
    noise = torch.randn(start.shape, generator=g)
    timesteps, latents = first_frame_start(scheduler, image_latent, noise, 0.5, start)
    torch.testing.assert_close(latents, scheduler.add_noise(start, noise, timesteps[:1]))


def test_routed_init_strength_applies_only_where_frames_start_from_their_views(tmp_path):
    """routed_init_strength replaces init_strength exactly when the routed start is used (poses,
    references, routing): the same video as init_strength set to it; without references it changes nothing."""
    from fashionflow.testing import build_tiny_pipeline

    pipe, _ = build_tiny_pipeline(tmp_path, load_config(TINY, ROUTED))
    pipe.set_progress_bar_config(disable=True)
    poses = motion_keypoints("turn", 4)
    image, back = torch.rand(3, 128, 128), torch.rand(3, 128, 128)

    def run(references, reference_pose=poses[2], **kwargs):
        return pipe(image, num_inference_steps=10, generator=[torch.Generator().manual_seed(0)], output_type="latent",
                    poses=poses, align=False, reference_images=references,
                    reference_keypoints=[[reference_pose]] if references else None, **kwargs).frames

    routed = run([[back]], init_strength=0.9, routed_init_strength=0.3)
    torch.testing.assert_close(routed, run([[back]], init_strength=0.3), rtol=0, atol=0)
    assert not torch.equal(routed, run([[back]], init_strength=0.9))
    torch.testing.assert_close(run(None, init_strength=0.9, routed_init_strength=0.3), run(None, init_strength=0.9),
                               rtol=0, atol=0)
    # a reference of unknown pose: no frame starts from it, so the routed strength does not apply
    unknown = np.zeros_like(poses[2])
    torch.testing.assert_close(run([[back]], unknown, init_strength=0.9, routed_init_strength=0.3),
                               run([[back]], unknown, init_strength=0.9), rtol=0, atol=0)
    assert not torch.equal(run([[back]], unknown, init_strength=0.9), run([[back]], unknown, init_strength=0.3))
    # routed_init=False: frames start from frame 0, so the routed strength does not apply either
    torch.testing.assert_close(run([[back]], init_strength=0.9, routed_init_strength=0.3, routed_init=False),
                               run([[back]], init_strength=0.9, routed_init=False), rtol=0, atol=0)


def test_on_a_real_turn_mediapipe_poses_route_frames_to_the_view_dwpose_says_they_show(fixtures_dir):
    """UBC test video 91BjuE6irxS turns its back to the camera (DWPose's shoulders swap sides from
    about frame 170 to 245). With MediaPipe's poses of a front frame and a back frame as the
    references, the frames well inside each phase route to the matching view."""
    pytest.importorskip("mediapipe")
    from fashionflow.pose import extract_keypoints, load_keypoints
    from fashionflow.video_io import read_video

    frames, _ = read_video(fixtures_dir / "ubc_test_91BjuE6irxS.mp4")
    dwpose = load_keypoints(fixtures_dir / "ubc_test_91BjuE6irxS.dwpose.npy")
    shoulders = dwpose[:, JOINT["left_shoulder"], 0] - dwpose[:, JOINT["right_shoulder"], 0]
    front_frames, back_frames = [30, 90, 290], [185, 195, 225]
    assert (shoulders[front_frames] > 0.1).all() and (shoulders[back_frames] < -0.1).all()  # DWPose: front, back
    pose = lambda i: extract_keypoints(frames[i], video=False)[0]  # noqa: E731
    references = torch.from_numpy(np.stack([pose(120), pose(200)]))[None]  # front view, back view
    video = torch.from_numpy(np.stack([pose(i) for i in front_frames + back_frames]))[None]
    nearest = pose_distance(video, references)[0].argmin(dim=1)
    assert nearest.tolist() == [0, 0, 0, 1, 1, 1]
