"""Several reference images (models/references.py) and the conditioning ablation switches:
shapes for R = 0..R_max, the base model at step 0, batch and order invariance, initialising
from a single-image checkpoint, the training draws, the pipeline and inference.py."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashionflow.config import ConfigError, config_hash, load_config
from fashionflow.diffusion import Guidance, diffusion_loss, make_scheduler, sample_video_latents
from fashionflow.models import build_models, load_base_weights
from fashionflow.training import loop

ROOT = Path(__file__).resolve().parents[1]
R_MAX = 3


def tiny_cfg(*overrides):
    return load_config(ROOT / "configs/tiny.yaml", list(overrides))


@pytest.fixture(scope="module")
def models():
    """(base U-Net, the same U-Net with references (fresh), the latter with non-zero reference outputs)."""
    torch.manual_seed(0)
    base, _ = build_models(tiny_cfg().model)
    torch.manual_seed(0)
    fresh, _ = build_models(tiny_cfg(f"model.max_references={R_MAX}").model)
    torch.manual_seed(0)
    trained, _ = build_models(tiny_cfg(f"model.max_references={R_MAX}").model)
    with torch.no_grad():
        for block in (*trained.references.down, *trained.references.up):
            torch.nn.init.normal_(block.to_out.weight, std=0.2)
    return base.eval(), fresh.eval(), trained.eval()


def inputs(b=2, r=R_MAX, seed=0, frames=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, frames, 16, 16, generator=g), torch.tensor([10, 700][:b]), torch.randn(b, 50, 32, generator=g),
            torch.randn(b, r, 50, 32, generator=g))


# ------------------------------------------------------------------------ the model

@torch.no_grad()
def test_shapes_for_every_r_and_a_fresh_module_is_exactly_the_base_model(models):
    base, fresh, trained = models
    x, t, context, refs = inputs()
    expected = base(x, t, context)
    assert fresh.references is not None and base.references is None
    for r in range(R_MAX + 1):
        assert torch.equal(fresh(x, t, context, references=refs[:, :r]), expected)  # zero init: step-0 model
        out = trained(x, t, context, references=refs[:, :r])
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.equal(out, expected) == (r == 0)  # R = 0 is the base model; references change the output
    masked = trained(x, t, context, references=refs, reference_mask=torch.zeros(2, R_MAX, dtype=torch.bool))
    assert torch.equal(masked, expected)  # all masked: exactly the base model


@torch.no_grad()
def test_batch_with_different_r_equals_each_video_alone_and_order_does_not_matter(models):
    _, _, trained = models
    x, t, context, refs = inputs()
    mask = torch.tensor([[True, True, False], [True, False, False]])
    together = trained(x, t, context, references=refs, reference_mask=mask)
    for i, r in enumerate((2, 1)):
        alone = trained(x[i:i + 1], t[i:i + 1], context[i:i + 1], references=refs[i:i + 1, :r])
        torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-5, atol=1e-5)
    flipped = trained(x[:1], t[:1], context[:1], references=refs[:1, [2, 0, 1]])
    torch.testing.assert_close(flipped, trained(x[:1], t[:1], context[:1], references=refs[:1]), rtol=1e-5, atol=1e-5)


def test_reference_errors_say_what_is_wrong(models):
    base, fresh, _ = models
    x, t, context, refs = inputs()
    with pytest.raises(ValueError, match="no reference conditioning"):
        base(x, t, context, references=refs)
    with pytest.raises(ValueError, match=r"at most 3 \(model.max_references\)"):
        fresh(x, t, context, references=torch.randn(2, 4, 50, 32))
    with pytest.raises(ValueError, match="reference_mask must be"):
        fresh(x, t, context, references=refs, reference_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ConfigError, match="max_references"):
        tiny_cfg("model.max_references=-1")


def test_init_from_a_single_image_checkpoint_is_that_checkpoint_at_step_0(models, tmp_path):
    base, _, _ = models
    _, adapter = build_models(tiny_cfg().model)
    base.save_pretrained(tmp_path / "unet")
    adapter.save_pretrained(tmp_path / "adapter")
    cfg = tiny_cfg(f"model.max_references={R_MAX}")
    torch.manual_seed(1)  # other random weights than the checkpoint
    unet, new_adapter = build_models(cfg.model)
    missing = loop.load_initial_weights(tmp_path, unet, new_adapter, cfg)
    assert missing and all(k.startswith("references.") for k in missing)
    x, t, context, refs = inputs()
    with torch.no_grad():
        assert torch.equal(unet.eval()(x, t, context, references=refs), base(x, t, context))
    state = base.state_dict()
    state.pop("conv_out.spatial.weight")
    with pytest.raises(RuntimeError, match="conv_out.spatial.weight"):  # only the new modules may be missing
        load_base_weights(unet, state)


def test_gradient_checkpointing_gives_the_same_gradients_with_references(models):
    _, _, trained = models
    x, t, context, refs = inputs(b=1, frames=2)
    grads = []
    for checkpointing in (False, True):
        trained.enable_gradient_checkpointing() if checkpointing else trained.disable_gradient_checkpointing()
        trained.zero_grad()
        trained(x, t, context, references=refs).square().mean().backward()
        grads.append([p.grad.clone() for p in trained.references.parameters()])
    trained.disable_gradient_checkpointing()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------ ablation switches

def test_adapter_inputs_switch():
    m = tiny_cfg().model
    clip, latent = torch.randn(2, 50, 32), torch.randn(2, 4, 16, 16)
    adapters = {}
    for inputs_ in ("clip_and_vae", "clip", "vae", "disabled"):
        torch.manual_seed(0)
        adapters[inputs_] = build_models(tiny_cfg(f"model.global_conditioning={inputs_}").model)[1]
    with torch.no_grad():
        full = adapters["clip_and_vae"](clip, latent)
        for a in adapters.values():  # make the VAE tokens count (they start with zero mixing weights)
            a.token_mixer.weight[:, 50:] = 0.5
        full = adapters["clip_and_vae"](clip, latent)
        clip_only, vae_only = adapters["clip"], adapters["vae"]
        assert torch.equal(clip_only(clip, latent), clip_only(clip, torch.randn(2, 4, 16, 16)))  # latent unused
        assert torch.equal(vae_only(clip, latent), vae_only(torch.randn(2, 50, 32), latent))  # CLIP unused
        assert not torch.allclose(clip_only(clip, latent), full) and not torch.allclose(vae_only(clip, latent), full)
        assert torch.equal(adapters["disabled"](clip, latent), torch.zeros(2, 50, 32))
    assert m.global_conditioning == "clip_and_vae" and tiny_cfg().diffusion.local_conditioning


@pytest.mark.parametrize("name, key, value", [("global_only", "local_conditioning", False),
                                              ("local_only", "global_conditioning", "disabled"),
                                              ("clip_tokens", "global_conditioning", "clip"),
                                              ("vae_tokens", "global_conditioning", "vae")])
def test_ablation_presets_change_one_switch_of_the_released_config(name, key, value):
    preset, released = load_config(ROOT / f"configs/ablation_{name}.yaml"), load_config(ROOT / "configs/fashionflow.yaml")
    section = "diffusion" if key == "local_conditioning" else "model"
    assert getattr(getattr(preset, section), key) == value
    setattr(getattr(preset, section), key, getattr(getattr(released, section), key))
    assert preset == released


def test_local_conditioning_off_noises_and_predicts_frame_0():
    seen = {}

    def unet(noisy, timesteps, context, **conditions):
        seen.update(noisy=noisy, conditions=conditions)
        return torch.zeros_like(noisy)

    cfg = tiny_cfg()
    scheduler = make_scheduler(cfg.diffusion)
    latents, noise = torch.randn(1, 4, 4, 16, 16), torch.randn(1, 4, 4, 16, 16)
    t = torch.tensor([999])
    on = diffusion_loss(unet, latents, None, scheduler, cfg.diffusion, timesteps=t, noise=noise)
    assert torch.equal(seen["noisy"][:, :, 0], latents[:, :, 0])
    cfg.diffusion.local_conditioning = False
    off = diffusion_loss(unet, latents, None, scheduler, cfg.diffusion, timesteps=t, noise=noise,
                         conditions={"references": "R"})
    assert not torch.allclose(seen["noisy"][:, :, 0], latents[:, :, 0]) and seen["conditions"] == {"references": "R"}
    frame_mse = noise.square().mean(dim=(0, 1, 3, 4))
    torch.testing.assert_close(on, frame_mse[1:].sum())  # frame 0's target is zero, prediction zero
    torch.testing.assert_close(off, frame_mse.sum())  # frame 0's target is its noise
    image_latent = torch.randn(1, 4, 16, 16)
    for local in (True, False):
        video = sample_video_latents(lambda x, t, c: torch.zeros_like(x), make_scheduler(cfg.diffusion, "ddim"),
                                     torch.zeros(1, 50, 32), image_latent, 2, 2, local_conditioning=local,
                                     generator=torch.Generator().manual_seed(0))
        assert torch.equal(video[:, :, 0], image_latent) == local


def test_guidance_null_half_has_no_references():
    refs, mask = torch.randn(2, 3, 50, 32), torch.tensor([[True, True, False], [True, False, False]])
    names, context, doubled = Guidance(image=3.0).branches(torch.ones(2, 50, 32), {"references": refs,
                                                                                     "reference_mask": mask})
    assert names == ["image", "cond"] and context.shape == (4, 50, 32) and not context[:2].any()
    assert doubled["references"].shape == (4, 3, 50, 32)
    assert not doubled["reference_mask"][:2].any() and torch.equal(doubled["reference_mask"][2:], mask)
    assert Guidance(image=3.0).branches(torch.ones(2, 50, 32), {"references": refs})[2]["reference_mask"][2:].all()


# ------------------------------------------------------------------------ training draws

def reference_batch(b=4, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"reference_latent_mean": torch.randn(b, k, 4, 16, 16, generator=g),
            "reference_latent_std": torch.rand(b, k, 4, 16, 16, generator=g) * 0.1,
            "reference_clip_hidden_states": torch.randn(b, k, 50, 32, generator=g),
            "reference_valid": torch.tensor([[False, True, True, True], [True, True, True, True],
                                             [True, False, False, False], [False, False, False, False]][:b])}


def test_reference_draws_are_deterministic_in_range_and_skip_the_conditioning_frame():
    cfg = tiny_cfg("model.max_references=2", "train.reference_dropout=0.0")
    batch = reference_batch()
    draw = lambda seed: loop.draw_references(batch, cfg, torch.Generator().manual_seed(seed), torch.device("cpu"))
    clip, latent, mask = draw(5)
    assert clip.shape == (4, 2, 50, 32) and latent.shape == (4, 2, 4, 16, 16) and mask.shape == (4, 2)
    assert all(torch.equal(a, b) for a, b in zip(draw(5), (clip, latent, mask)))  # same (seed, rank, step): same draw
    assert mask[0].any() and mask[1].any() and mask[2].tolist() == [True, False] and not mask[3].any()
    for i in range(4):
        for slot in range(2):
            if mask[i, slot]:  # a valid candidate, not the clip's own conditioning frame
                index = next(j for j in range(4) if torch.equal(batch["reference_clip_hidden_states"][i, j], clip[i, slot]))
                assert batch["reference_valid"][i, index]
    counts = {int(m.sum()) for s in range(40) for m in draw(s)[2][:2]}
    assert counts == {1, 2}  # 1..R references, all values drawn
    assert not loop.draw_references(batch, tiny_cfg("model.max_references=2", "train.reference_dropout=1.0"),
                                    torch.Generator().manual_seed(0), torch.device("cpu"))[2].any()
    wide = loop.draw_references(reference_batch(k=4), tiny_cfg("model.max_references=6"),
                                torch.Generator().manual_seed(0), torch.device("cpu"))
    assert wide[0].shape[1] == 6 and not wide[2][:, 4:].any()  # fewer candidates than R: masked padding


def test_dissimilar_reference_draw_always_trains_with_the_farthest_candidate():
    batch = reference_batch(b=3)
    batch["image_latent_mean"] = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    distance = (batch["reference_latent_mean"] - batch["image_latent_mean"][:, None]).flatten(2).norm(dim=2)
    farthest = distance.masked_fill(~batch["reference_valid"][:3], -1).argmax(dim=1)
    cfg = lambda draw: tiny_cfg("model.max_references=2", "train.reference_dropout=0.0",  # noqa: E731
                                f"train.reference_draw={draw}")
    firsts = set()
    for seed in range(20):
        uniform = loop.draw_references(batch, cfg("uniform"), torch.Generator().manual_seed(seed), torch.device("cpu"))
        clip, latent, mask = loop.draw_references(batch, cfg("dissimilar"), torch.Generator().manual_seed(seed),
                                                  torch.device("cpu"))
        assert torch.equal(mask, uniform[2])  # the same counts: only which candidates fill the slots changes
        for i in range(3):
            assert torch.equal(clip[i, 0], batch["reference_clip_hidden_states"][i, farthest[i]])
            if mask[i, 1]:  # a second slot: another valid candidate
                index = next(j for j in range(4) if torch.equal(batch["reference_clip_hidden_states"][i, j], clip[i, 1]))
                assert index != farthest[i] and batch["reference_valid"][i, index]
        firsts.add(int(uniform[0][1, 0].sum() * 1000))
    assert len(firsts) > 1  # the uniform draw does not always lead with the same candidate
    with pytest.raises(Exception, match="reference_draw"):
        tiny_cfg("train.reference_draw=closest")


def test_config_hash_of_folders_projected_before_reference_candidates_is_kept():
    assert config_hash(tiny_cfg()) == "0e21ce7f199e1931"  # the hash before data.reference_candidates existed
    assert config_hash(tiny_cfg("data.reference_candidates=2")) != config_hash(tiny_cfg())


# ------------------------------------------------------------------------ pipeline and CLI

@pytest.fixture(scope="module")
def ref_pipeline(tmp_path_factory):
    """A tiny pipeline with references (fresh, zero-initialised), saved as a folder; (pipe, folder)."""
    from fashionflow.pipeline import save_pipeline
    from fashionflow.testing import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("refs")
    cfg = tiny_cfg("model.max_references=2", "sample.num_inference_steps=2", "sample.num_frames=2")
    pipe, cfg = build_tiny_pipeline(folder, cfg)
    pipe.set_progress_bar_config(disable=True)
    return pipe, save_pipeline(pipe, folder / "pipeline", cfg)


def frames_of(pipe, images, seeds, **kwargs):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(images, num_frames=2, num_inference_steps=2, generator=generators, output_type="pt", **kwargs).frames


def test_pipeline_reference_images(ref_pipeline):
    pipe, _ = ref_pipeline
    g = torch.Generator().manual_seed(0)
    front, back, side, other = (torch.rand(3, 64, 48, generator=g) for _ in range(4))
    single = frames_of(pipe, [front], [0])
    assert torch.equal(frames_of(pipe, [front], [0], reference_images=[[back, side]]), single)  # zero init
    assert torch.equal(frames_of(pipe, [front], [0], reference_images=[None]), single)
    blocks = (*pipe.unet.references.down, *pipe.unet.references.up)
    saved = [b.to_out.weight.clone() for b in blocks]
    try:
        with torch.no_grad():
            for block in blocks:
                torch.nn.init.normal_(block.to_out.weight, std=0.3)
        with_refs = frames_of(pipe, [front], [0], reference_images=[[back, side]])
        assert with_refs.shape == single.shape and not torch.equal(with_refs, frames_of(pipe, [front], [0]))
        batch = frames_of(pipe, [front, other], [0, 1], reference_images=[[back, side], [side]])
        torch.testing.assert_close(batch[:1], with_refs, rtol=1e-4, atol=1e-4)  # a video does not depend on its batch
        torch.testing.assert_close(batch[1:], frames_of(pipe, [other], [1], reference_images=[[side]]),
                                   rtol=1e-4, atol=1e-4)
    finally:
        with torch.no_grad():
            for block, weight in zip(blocks, saved):
                block.to_out.weight.copy_(weight)
    with pytest.raises(ValueError, match="one entry .* per input image"):
        frames_of(pipe, [front, other], [0, 1], reference_images=[[back]])


def test_a_single_image_pipeline_refuses_references(tmp_path):
    from fashionflow.testing import build_tiny_pipeline

    pipe, _ = build_tiny_pipeline(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="takes no reference images"):
        frames_of(pipe, [torch.rand(3, 32, 32)], [0], reference_images=[[torch.rand(3, 32, 32)]])


def test_inference_cli_references(ref_pipeline, tmp_path, capsys):
    from fashionflow.synthetic import render_clip
    from fashionflow.video_io import write_mp4

    sys.path.insert(0, str(ROOT))
    import inference

    _, folder = ref_pipeline
    paths = []
    for name, seed in (("front", 0), ("back", 1), ("side", 2)):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(render_clip(seed, 1, 96, 80).frames[0]).save(paths[-1])
    out = tmp_path / "result"
    common = ["--checkpoint", str(folder), "--frames", "2", "--output-dir", str(out), "--device", "cpu"]
    assert inference.main(common + ["--image", str(paths[0]), "--reference", str(paths[1]), str(paths[2])]) == 0
    sheet = np.asarray(Image.open(out / "front_0_input.png"))
    assert sheet.shape == (128, 3 * 128, 3)  # the input, then its two references
    videos = tmp_path / "videos"
    write_mp4(videos / "turn.mp4", render_clip(3, 12, 64, 64).frames, fps=8)
    assert inference.main(common + ["--dataset", str(videos), "--num-references", "2"]) == 0
    assert np.asarray(Image.open(out / "turn_0_input.png")).shape == (128, 3 * 128, 3)
    capsys.readouterr()
    assert inference.main(common + ["--image", str(paths[0]), "--reference", *map(str, paths)]) == 2
    assert "takes at most 2 (model.max_references)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inference.parse_args(["--image", str(paths[0]), "--num-references", "2"])  # needs --dataset


# ------------------------------------------------------------------------ measuring what a back view adds

def test_reference_evaluation_on_a_turning_clip():
    from types import SimpleNamespace

    from fashionflow.demo import evaluate_references as ev
    from fashionflow.synthetic import render_clip

    back, front = ev.facing(np.array([0, 30, 90, 170, 190, 350, -170, 540]))
    assert back.tolist() == [False, False, False, True, True, False, True, True]
    assert front.tolist() == [True, True, False, False, False, True, False, False]
    seed = next(s for s in range(50) if render_clip(s, 1, 32, 32).figure.action == "turn")
    rendered = render_clip(seed, 12, 64, 64)
    yaw = np.linspace(0, 270, 12)  # three quarters of a turn: back-facing frames 6..9, squarely at 7
    clip = SimpleNamespace(frames=rendered.frames, garment_mask=rendered.garment_mask, yaw=yaw,
                           keypoints=rendered.keypoints)
    assert ev.back_view_index(yaw) == 7

    class Stub:
        """The truth when given the back view, the input repeated (no back) otherwise."""

        poses = []

        def __call__(self, image, reference_images=None, poses=None, align=True, **kwargs):
            self.poses.append(poses if poses is None or not align else "aligned")
            video = rendered.frames if reference_images else np.repeat(image[None], 12, axis=0)
            return SimpleNamespace(frames=video[None])

    result = ev.evaluate(Stub(), [({"file": "turn.mp4"}, clip, yaw)], steps=2, seed=0, init_strength=1.0,
                         log=lambda *_: None)
    assert result["front_and_back"]["back_colour"] == 0 and result["front_only"]["back_colour"] > 5
    assert result["verdict"]["back_errors_30_percent_lower"] and result["verdict"]["front_no_worse"]
    assert "| back-facing frames: garment colour error (0-255) |" in ev.markdown_table(result)
    assert result["front_only"]["motion"] == 0 and result["front_and_back"]["motion"] > 1  # the input held still
    *shown, scored = result["videos"][0]
    assert scored  # back-facing frames were left to score: the clip the strip shows
    strip = ev.frame_strip(*shown)
    assert strip.shape == (3 * 64, 10 * 64, 3)
    assert Stub.poses == [None, None]  # pose-free by default
    ev.evaluate(Stub(), [({"file": "turn.mp4"}, clip, yaw)], steps=2, seed=0, init_strength=1.0,
                log=lambda *_: None, drive_with_poses=True)
    assert all(p is rendered.keypoints for p in Stub.poses[2:]) and len(Stub.poses) == 4  # both, as they are


def test_evaluate_references_command(ref_pipeline, tmp_path, monkeypatch, capsys):
    import json
    from types import SimpleNamespace

    from fashionflow.demo import evaluate_references as ev
    from fashionflow.synthetic import render_clip

    _, folder = ref_pipeline
    (tmp_path / "manifest.json").write_text(json.dumps({"num_frames": 8, "clips": [
        {"file": "test/a.mp4", "split": "test", "seed": 4}, {"file": "train/b.mp4", "split": "train", "seed": 5}]}))
    yaw = np.array([0, 10, 20, 170, 175, 180, 185, 190.0])

    def render_v2(seed, num_frames, height, width):  # a clip with the renderer's yaw (synthetic v2)
        clip = render_clip(seed, 8, height, width)
        return SimpleNamespace(frames=clip.frames, garment_mask=clip.garment_mask, yaw=yaw)

    monkeypatch.setattr(ev, "render_clip", render_v2)
    args = ["--checkpoint", str(folder), "--dataset", str(tmp_path), "--threads", "1",
            "--output", str(tmp_path / "r.json"), "--strip", str(tmp_path / "strip.png")]
    assert ev.main(args) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["clips"] == 1 and set(result["front_only"]) == {"back_colour", "back_pattern", "front_colour",
                                                                  "front_pattern", "ssim", "psnr", "motion"}
    assert set(result["truth_through_vae"]) == set(result["front_only"])
    assert np.asarray(Image.open(tmp_path / "strip.png")).shape == (3 * 128, 10 * 128, 3)
    assert "front + back view" in capsys.readouterr().out
    assert ev.main([*args, "--drive-with-poses"]) == 1  # this model has no pose guider
    assert "--drive-with-poses" in capsys.readouterr().err
    assert ev.main([*args, "--pose-routing", "30"]) == 1  # nor poses to route by
    assert "--pose-routing has nothing to route by" in capsys.readouterr().err
