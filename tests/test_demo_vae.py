"""The bundled demo VAE keeps colours (issue 11): flat saturated colours and held-out synthetic
frames survive its round trip (encode -> latent mean -> decode), as the pipeline uses it."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENCODERS_VAE = ROOT / "checkpoint" / "demo_encoders" / "vae"  # what configs/demo.yaml trains on
BUNDLED_VAE = ROOT / "checkpoint" / "demo" / "vae"  # what `python inference.py` uses


@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(ENCODERS_VAE).eval()


def test_the_bundled_demo_uses_this_vae():
    from safetensors.torch import load_file

    name = "diffusion_pytorch_model.safetensors"
    ours, bundled = load_file(ENCODERS_VAE / name), load_file(BUNDLED_VAE / name)
    assert ours.keys() == bundled.keys() and all(ours[k].equal(bundled[k]) for k in ours)


def test_flat_saturated_colours_come_back_within_6_levels(vae):
    from fashionflow.demo.quality import colour_grid, colour_grid_errors
    from fashionflow.demo.train_vae import round_trip

    errors = colour_grid_errors(lambda images: round_trip(vae, images), 128, 128)  # [24 colours, 3]
    _, colours, _ = colour_grid(128, 128)
    worst = errors.max(1).argmax()
    assert errors.mean() <= 6, f"mean error {errors.mean():.1f} of 255"
    assert errors.max() <= 6, f"colour {tuple(colours[worst])} comes back {errors[worst].round(1)} levels off"


def test_held_out_synthetic_frames_come_back_at_30_db(vae):
    from fashionflow.demo.train_vae import round_trip
    from fashionflow.synthetic import clip_seed, render_clip

    # seeds the VAE never saw (it trained on the clips of --seed 0), every 6th frame
    frames = np.concatenate([render_clip(clip_seed(7, i), 24).frames[::6] for i in range(4)])
    output = round_trip(vae, frames).astype(np.float64)
    mse = ((output - frames) ** 2).reshape(len(frames), -1).mean(1)
    psnr = 10 * np.log10(255 ** 2 / mse)
    assert psnr.mean() >= 30, f"held-out PSNR {psnr.mean():.2f} dB (per frame {psnr.round(1)})"
