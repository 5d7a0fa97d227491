"""The bundled demo: default inference end to end, the bundle's promises, the quality measures."""

import json
from pathlib import Path

import numpy as np
import pytest

from fashionflow.demo import quality
from fashionflow.demo.evaluate_demo import chance_colour_measures, clip_metrics, markdown_table, summarise, verdict
from fashionflow.synthetic import clip_seed, render_clip

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoint" / "demo"
DEMO_IMAGES = ROOT / "fashion_dataset" / "demo"


# --- quality measures ----------------------------------------------------------------------

def test_psnr_and_motion_match_their_formulas():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b) ** 2)
    assert quality.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert quality.psnr(a, a) == float("inf")
    assert quality.motion(a) == pytest.approx(np.abs(np.diff(a.astype(float), axis=0)).mean())
    assert quality.motion(np.repeat(a[:1], 5, axis=0)) == 0.0
    mask = np.zeros(a.shape[:3], dtype=bool)
    mask[:, 2:5, 1:6] = True
    masked_mse = np.mean((a[mask].astype(float) - b[mask]) ** 2)
    assert quality.masked_psnr(a, b, mask) == pytest.approx(10 * np.log10(255 ** 2 / masked_mse))
    assert quality.masked_psnr(a, b, np.ones_like(mask)) == pytest.approx(quality.psnr(a, b))
    c = a.copy()
    c[~mask] = b[~mask]  # differs only outside the mask
    assert quality.masked_psnr(c, a, mask) == float("inf") and np.isnan(quality.masked_psnr(a, b, mask & False))


def test_colour_histograms_see_the_figure_not_the_wall():
    frame = np.full((32, 32, 3), 230, np.uint8)
    frame[8:24, 12:20] = (200, 30, 30)  # a red figure on a light wall
    mask = quality.figure_mask(frame)
    assert mask.sum() == 16 * 8
    red = quality.colour_histogram(frame, mask)
    assert red.sum() == pytest.approx(1.0) and red.max() == pytest.approx(1.0)
    blue = frame.copy()
    blue[8:24, 12:20] = (30, 30, 200)
    assert quality.figure_colour_drift(np.stack([frame, frame])) == 0.0
    assert quality.figure_colour_drift(np.stack([frame, blue])) == pytest.approx(1.0)
    half = frame.copy()
    half[8:16, 12:20] = (30, 30, 200)
    assert quality.mean_colour_drift(np.stack([frame, half]), frame) == pytest.approx(0.25)


def test_colour_distance_grows_with_the_shift_where_the_histogram_flips():
    """A 4-level shift that crosses a histogram bin edge (128 = 4 x 32) reads as all new colours
    to the histogram distance, and as 4 levels to the colour distance (1-D Wasserstein per channel)."""
    assert quality.colour_distance(np.full((5, 3), 10), np.full((7, 3), 40)) == 30  # 30 in every channel
    frame = np.full((32, 32, 3), 230, np.uint8)
    frame[8:24, 12:20] = (126, 40, 40)
    shifted = frame.copy()
    shifted[8:24, 12:20] = (130, 40, 40)
    assert quality.mean_colour_drift(np.stack([shifted]), frame) == pytest.approx(1.0)
    assert quality.mean_colour_distance(np.stack([frame, shifted]), frame) == pytest.approx((0 + 4 / 3) / 2)
    blue = frame.copy()
    blue[8:24, 12:20] = (40, 40, 200)
    assert quality.mean_colour_distance(np.stack([blue]), frame) == pytest.approx((86 + 0 + 160) / 3)


def test_baseline_and_truth_numbers_on_a_synthetic_clip():
    truth = render_clip(5, num_frames=6, height=64, width=64).frames
    baseline = np.repeat(truth[:1], 6, axis=0)
    b, t = clip_metrics(baseline, truth), clip_metrics(truth, truth)
    assert b["motion"] == 0.0 and b["colour_drift_vs_input"] == 0.0 and b["first_frame_psnr"] == float("inf")
    assert t["motion"] > 0 and t["psnr_vs_truth"] == float("inf")
    assert not verdict(b, t)["moves_closer_to_truth_than_baseline"]
    perfect = verdict(t, t)
    assert all(perfect.values()) and {"moves_closer_to_truth_than_baseline", "keeps_colours"} <= set(perfect)
    table = markdown_table({"model": summarise([t]), "baseline": summarise([b]), "truth": summarise([t])})
    rows = table.splitlines()
    assert len(rows) == 8 and all(row.count("|") == 6 for row in rows)
    assert rows[2].startswith("| first-frame PSNR") and rows[2].endswith("| inf | - | - |")


def test_colour_verdict_is_measured_against_the_chance_level_of_two_clips():
    wall = np.full((6, 32, 32, 3), 230, np.uint8)
    red, blue = wall.copy(), wall.copy()
    red[:, 8:24, 12:20], blue[:, 8:24, 12:20] = (200, 30, 30), (30, 30, 200)
    assert chance_colour_measures([red, red]) == {"drift": 0.0, "distance": 0.0}
    assert chance_colour_measures([red, blue]) == pytest.approx({"drift": 1.0, "distance": 340 / 3})
    assert chance_colour_measures([red]) is None
    truth = {"motion": 2.0, "colour_drift_vs_input": 0.1, "colour_drift_first_last": 0.1}
    kept = dict(truth, colour_drift_first_last=0.3)
    lost = dict(truth, colour_drift_first_last=0.8)  # nearer to another clip's colours than to the truth's
    assert verdict(kept, truth, chance=0.9)["keeps_colours"]
    assert not verdict(lost, truth, chance=0.9)["keeps_colours"]
    assert verdict(lost, truth)["keeps_colours"]  # without a chance level only the drift from the input counts


def test_demo_targets_of_issue_11():
    from fashionflow.demo.evaluate_demo import demo_targets

    truth = {"motion": 2.0, "colour_drift_vs_input": 0.05}
    good = {"motion": 1.6, "colour_drift_vs_input": 0.14, "first_frame_psnr": 30.0}
    assert all(demo_targets(good, truth).values()) and len(demo_targets(good, truth)) == 3
    for change, target in ((dict(motion=1.4), "motion_within_25_percent"), (dict(motion=2.6), "motion_within_25_percent"),
                           (dict(colour_drift_vs_input=0.16), "colour_drift_within_0.1_of_truth"),
                           (dict(first_frame_psnr=27.0), "first_frame_psnr_at_least_28_db")):
        checks = demo_targets(dict(good, **change), truth)
        assert [name for name, ok in checks.items() if not ok] == [target]


# --- the bundled demo ------------------------------------------------------------------------

def test_bundle_is_small_complete_and_matches_the_preset():
    from fashionflow.config import config_to_dict, load_config

    assert (DEMO / "model_index.json").is_file(), "checkpoint/demo is missing: see README, section Demo"
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) / 2 ** 20
    assert size <= 25
    index = json.loads((DEMO / "model_index.json").read_text())
    assert {"vae", "image_encoder", "feature_extractor", "unet", "adapter", "scheduler"} <= set(index)
    bundled, preset = load_config(DEMO / "config.yaml"), load_config(ROOT / "configs" / "demo.yaml")
    for section in ("model", "diffusion", "data", "sample"):
        assert config_to_dict(bundled)[section] == config_to_dict(preset)[section]
    unet_config = json.loads((DEMO / "unet" / "config.json").read_text())  # what the pipeline builds from
    assert unet_config["reference_pose_routing"] == preset.model.reference_pose_routing > 0
    images = sorted(DEMO_IMAGES.glob("*.png"))
    assert images and all(p.stat().st_size > 0 for p in images)


def test_default_inference_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """`python inference.py` with no arguments (here: few steps, a temporary output folder)."""
    import inference
    from fashionflow.video_io import read_video

    monkeypatch.chdir(ROOT)  # the defaults are paths relative to the repository
    assert inference.main(["--steps", "2", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo model" in out and str(tmp_path) in out
    names = sorted(p.stem for p in DEMO_IMAGES.glob("*.png"))
    for name in names:
        for suffix in (".mp4", "_input.png", "_frames.png"):
            assert (tmp_path / f"{name}_0{suffix}").is_file()
        frames, _ = read_video(tmp_path / f"{name}_0.mp4")
        assert len(frames) >= 24 and min(frames.shape[1:3]) >= 128
        assert frames.std() > 1  # a picture, not a blank


def test_bundled_demo_keeps_the_input_from_pure_noise_with_its_preset_sampling():
    """The bundle samples from pure noise (v-prediction, zero terminal SNR): on a held-out clip its
    video moves, keeps the input's colours and stays near the truth. The same weights read as an
    epsilon model (a scheduler config lost in bundling) give noise: about 2 dB, drift 0.9."""
    import torch

    from fashionflow.pipeline import load_pipeline

    pipe, cfg = load_pipeline(DEMO)
    pipe.set_progress_bar_config(disable=True)
    assert cfg.sample.init_strength == 1.0 and pipe.scheduler.config.prediction_type == "v_prediction"
    # held-out clip 200 of the README's training set (`python -m fashionflow.synthetic --seed 1`),
    # whose frame 0 is fashion_dataset/demo/synthetic_00200.png
    truth = render_clip(clip_seed(1, 200), cfg.sample.num_frames, *pipe.image_size).frames
    video = pipe(truth[0], num_frames=len(truth), num_inference_steps=cfg.sample.num_inference_steps,
                 init_strength=cfg.sample.init_strength, generator=[torch.Generator().manual_seed(0)],
                 output_type="np").frames[0]
    scores = clip_metrics(video, truth)
    assert scores["psnr_vs_truth"] > 17 and scores["colour_drift_vs_input"] < 0.5 and scores["motion"] > 0.5, scores


def test_colour_grid_measures_the_error_inside_the_patch():
    from fashionflow.demo.quality import PATCH_MARGIN, STUDIO_WALL, colour_grid, colour_grid_errors

    images, colours, inside = colour_grid(64, 64)
    assert images.shape == (24, 64, 64, 3) and len({tuple(c) for c in colours}) == 24
    assert (images[:, 0, 0] == STUDIO_WALL).all() and (images[:, inside] == colours[:, None]).all()
    assert colours.max(1).min() >= 80 and (colours.max(1) - colours.min(1)).min() >= 60  # saturated
    assert colour_grid_errors(lambda x: x, 64, 64).max() == 0

    def shift_patch_red(x):
        out = x.copy()
        out[:, inside, 0] = np.clip(out[:, inside, 0].astype(int) + 10, 0, 255)
        out[:, :PATCH_MARGIN] = 0  # outside the patch: not measured
        return out

    errors = colour_grid_errors(shift_patch_red, 64, 64)
    assert errors.shape == (24, 3) and (errors[:, 1:] == 0).all()
    np.testing.assert_allclose(errors[:, 0], np.minimum(10, 255 - colours[:, 0]))


def test_colour_cards_and_round_trip_shapes():
    from fashionflow.demo.train_vae import build_demo_vae, colour_cards, round_trip

    cards = colour_cards(3, 32, np.random.default_rng(0))
    assert cards.shape == (3, 3, 32, 32) and cards.min() >= -1 and cards.max() <= 1
    assert all(card.flatten(1).std(1).max() > 0 for card in cards)  # a shape on the wall
    out = round_trip(build_demo_vae(sample_size=32).eval(), np.zeros((2, 32, 32, 3), np.uint8))
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8


def test_vae_lr_is_constant_then_decays_over_the_last_fraction():
    from fashionflow.demo.train_vae import lr_factor

    factors = np.array([lr_factor(step, 1000, 0.4) for step in range(1000)])
    assert factors[0] == pytest.approx(1 / 50) and (np.diff(factors[:50]) > 0).all()  # warmup
    assert (factors[50:600] == 1).all()  # constant until 60 % of the run
    assert (np.diff(factors[600:]) < 0).all() and factors[-1] < 1e-4  # cosine to 0
    assert lr_factor(700, 1000, 0.4) == pytest.approx(0.5 * (1 + np.cos(np.pi * 100 / 400)))
    whole = [lr_factor(step, 1000, 1.0) for step in range(50, 1000)]
    assert (np.diff(whole) < 0).all()  # --schedule cosine: decays from the first step after warmup
    assert lr_factor(999, 1000, 0.0) == 1  # no decay


def test_saturated_cards_draw_strongly_saturated_shapes():
    import cv2

    from fashionflow.demo.train_vae import colour_cards

    def shape_saturation(cards):
        pixels = ((cards.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
        hsv = cv2.cvtColor(pixels.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).reshape(-1, 3)
        value_ok = hsv[:, 2] > 60  # hue and saturation are ill-defined for near-black pixels
        wall = (pixels.reshape(-1, 3).astype(int).min(1) > 190) & (hsv[:, 1] < 30)
        return hsv[value_ok & ~wall, 1]

    saturated = shape_saturation(colour_cards(24, 32, np.random.default_rng(0), saturated_share=1.0))
    uniform = shape_saturation(colour_cards(24, 32, np.random.default_rng(0), saturated_share=0.0))
    assert len(saturated) > 1000 and np.percentile(saturated, 5) >= 200
    assert np.median(uniform) < np.median(saturated) - 60


def test_decoder_only_training_keeps_the_latent_space(tmp_path, vae_training_args):
    """--decoder-only (sd-vae-ft-mse's recipe): encoder, latents and scaling factor stay; the decoder learns."""
    import torch
    from diffusers import AutoencoderKL

    from fashionflow.demo import train_vae

    common = [*vae_training_args, "--crop", "16"]
    assert train_vae.main([*common, "--output-dir", str(tmp_path / "first"), "--steps", "2"]) == 0
    assert train_vae.main([*common, "--output-dir", str(tmp_path / "second"), "--steps", "3", "--lr", "1e-2",
                           "--init-from", str(tmp_path / "first"), "--decoder-only"]) == 0
    first, second = (AutoencoderKL.from_pretrained(tmp_path / name) for name in ("first", "second"))
    assert second.config.scaling_factor == first.config.scaling_factor
    for name, weight in first.state_dict().items():
        same = torch.equal(weight, second.state_dict()[name])
        assert same == (not name.startswith(("decoder.", "post_quant_conv."))), name
    with pytest.raises(SystemExit):
        train_vae.main([*common, "--output-dir", str(tmp_path / "x"), "--decoder-only"])  # nothing to keep


def test_readme_strip_puts_each_input_beside_its_frames(tmp_path):
    from PIL import Image

    from fashionflow.demo import readme_strip
    from fashionflow.video_io import write_mp4

    rng = np.random.default_rng(0)
    for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        photo = np.full((32, 32, 3), colour, np.uint8)
        references = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # NAME_0_input.png: the input, then references
        Image.fromarray(np.concatenate([photo, references], axis=1)).save(tmp_path / f"{name}_0_input.png")
        write_mp4(tmp_path / f"{name}_0.mp4", np.repeat(photo[None], 12, 0), fps=8)
    out = tmp_path / "strip.png"
    assert readme_strip.main(["a", "b", "--results", str(tmp_path), "--output", str(out), "--frames", "4"]) == 0
    strip = np.asarray(Image.open(out))
    gap = readme_strip.GAP
    assert strip.shape == (2 * 32 + gap, 32 + gap + 4 * 32, 3)
    assert (strip[:32, :32] == (200, 30, 30)).all() and (strip[-32:, :32] == (30, 30, 200)).all()
    assert (strip[32:32 + gap] == 255).all() and (strip[:, 32:32 + gap] == 255).all()
    assert np.abs(strip[:32, -32:].astype(int) - (200, 30, 30)).max() < 12  # the video's frames, H.264-coded
    assert readme_strip.main(["missing", "--results", str(tmp_path), "--output", str(out)]) == 2
