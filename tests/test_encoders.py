"""Frozen encoders: loading (tiny models through the real path), preprocessings, scaling, errors,
and the offline-first lookup (local folder, Hugging Face cache, one bounded hub probe)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from fashionflow import encoders as E
from fashionflow.config import EncodersConfig
from fashionflow.testing import save_tiny_encoders, tiny_encoders_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    paths = save_tiny_encoders(tmp_path_factory.mktemp("encoders"))
    cfg = tiny_encoders_config(paths)
    vae = E.load_vae(cfg)
    clip, processor = E.load_image_encoder(cfg)
    return paths, cfg, vae, clip, processor


def images(b=2, h=64, w=48, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_tiny_encoders_load_frozen_with_the_expected_shapes(tiny):
    _, cfg, vae, clip, processor = tiny
    assert not any(p.requires_grad for p in vae.parameters()) and not vae.training
    mean, std = E.encode_latent_dist(vae, images(), cfg)
    assert mean.shape == std.shape == (2, 4, 8, 6)
    assert E.clip_hidden_states(clip, processor, images(), "released").shape == (2, 50, 32)


def test_vae_input_ranges():
    x = images()
    assert torch.equal(E.vae_input(x, "released"), x)
    torch.testing.assert_close(E.vae_input(x, "correct"), x * 2 - 1)
    with pytest.raises(ValueError, match="preprocessing"):
        E.vae_input(x, "other")


@pytest.mark.parametrize("preprocessing", ["released", "correct"])
def test_latents_are_scaled_and_sampled_as_released(tiny, preprocessing):
    _, cfg, vae, _, _ = tiny
    cfg = EncodersConfig(**{**cfg.__dict__, "preprocessing": preprocessing})
    x = images()
    dist = vae.encode(E.vae_input(x, preprocessing)).latent_dist
    mean, std = E.encode_latent_dist(vae, x, cfg, chunk_size=1)
    torch.testing.assert_close(mean, dist.mean * 0.18215)
    torch.testing.assert_close(std, dist.std * 0.18215)
    torch.testing.assert_close(E.encode_latents(vae, x, cfg, sample=False), mean)
    sampled = E.encode_latents(vae, x, cfg, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sampled, mean + std * noise)


def test_one_generator_per_image_makes_latents_batch_invariant(tiny):
    _, cfg, vae, _, _ = tiny
    x = images()
    both = E.encode_latents(vae, x, cfg, generator=[torch.Generator().manual_seed(s) for s in (1, 2)])
    second = E.encode_latents(vae, x[1:], cfg, generator=[torch.Generator().manual_seed(2)])
    torch.testing.assert_close(both[1:], second, rtol=1e-5, atol=1e-5)


def test_decode_in_chunks_matches_one_pass_and_both_output_ranges(tiny):
    _, cfg, vae, _, _ = tiny
    latents = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))  # b c f h w
    video = E.decode_latents(vae, latents, cfg, "clamp01", chunk_size=2)
    assert video.shape == (2, 3, 3, 32, 32)  # b f c H W
    torch.testing.assert_close(video, E.decode_latents(vae, latents, cfg, "clamp01", chunk_size=None))
    raw = vae.decode(latents[1, :, 2][None] / 0.18215).sample
    torch.testing.assert_close(video[1, 2], raw[0].clamp(0, 1))
    shifted = E.decode_latents(vae, latents[:, :, 0], cfg, "from_minus1")
    assert shifted.shape == (2, 3, 32, 32)
    torch.testing.assert_close(shifted[0], (vae.decode(latents[0:1, :, 0] / 0.18215).sample[0] / 2 + 0.5).clamp(0, 1))
    assert E.output_range_for("released") == "clamp01" and E.output_range_for("correct") == "from_minus1"


def test_released_clip_preprocessing_rescales_twice(tiny):
    *_, processor = tiny
    x = images(1, 40, 40)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    released = E.clip_pixel_values(processor, x, "released") * std + mean
    correct = E.clip_pixel_values(processor, x, "correct") * std + mean
    assert released.max() <= 1 / 255 + 1e-6  # a near-black image, as the released code fed CLIP
    torch.testing.assert_close(released, correct / 255, rtol=1e-4, atol=1e-6)
    assert correct.max() > 0.5


def test_vae_found_in_a_whole_repo_folder_or_as_the_folder_itself(tiny, tmp_path):
    paths, *_ = tiny
    shutil.copytree(paths["vae"], tmp_path / "sd" / "vae")
    for source in (str(tmp_path / "sd"), paths["vae"]):
        vae = E.load_vae(EncodersConfig(vae=source, vae_subfolder="vae"))
        assert vae.config.latent_channels == 4


def test_missing_weights_name_the_model_the_download_and_the_key(tmp_path):
    with pytest.raises(E.MissingWeightsError) as error:
        E.load_vae(EncodersConfig(vae=str(tmp_path / "nowhere")))
    message = str(error.value)
    assert "VAE" in message and "hf download CompVis/stable-diffusion-v1-4" in message
    assert "encoders.vae=" in message and "\n" not in message

    with pytest.raises(E.MissingWeightsError) as error:
        E.load_image_encoder(EncodersConfig(image_encoder="openai/clip-vit-base-patch32"))  # offline in tests
    message = str(error.value)
    assert "CLIP" in message and "hf download openai/clip-vit-base-patch32" in message
    assert "encoders.image_encoder=" in message and "\n" not in message


def test_hf_hub_offline_fails_at_once_naming_the_setting():
    assert os.environ["HF_HUB_OFFLINE"] == "1" and E.hub_offline()  # tests/conftest.py
    began = time.perf_counter()
    with pytest.raises(E.MissingWeightsError) as error:
        E.load_vae(EncodersConfig(vae="fashionflow-test/not-cached"))
    assert time.perf_counter() - began < 3
    assert ("not found at 'fashionflow-test/not-cached/vae': not a local folder nor in the Hugging Face cache"
            in str(error.value))
    assert "and HF_HUB_OFFLINE is set. Download it where there is network with `hf download" in str(error.value)


# --- without HF_HUB_OFFLINE: each scenario in a fresh process (huggingface_hub reads HF_ENDPOINT,
# HF_HOME and HF_HUB_OFFLINE on import); it times the loads, not its own start.

CHILD = """
import json, sys, time
import huggingface_hub
if any(name == "cached" for name, *_ in json.loads(sys.argv[1])):
    from diffusers import AutoencoderKL  # imported before the clock starts, as it is once a model loads
from fashionflow.config import EncodersConfig
from fashionflow.encoders import MissingWeightsError, load_image_encoder, load_vae
for name, load, source, subfolder in json.loads(sys.argv[1]):
    began = time.perf_counter()
    try:
        loader = load_vae if load == "vae" else load_image_encoder
        loader(EncodersConfig(vae=source, vae_subfolder=subfolder, image_encoder=source))
        error = None
    except MissingWeightsError as caught:
        error = str(caught)
    print(json.dumps({"name": name, "seconds": time.perf_counter() - began, "error": error}), flush=True)
"""


def start_child(endpoint, hf_home, scenarios):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(scenarios)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def child_results(process):
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    return {r["name"]: r for r in map(json.loads, out.splitlines())}


def cache_vae(hf_home, repo_id):
    """A tiny VAE under `vae/` of `repo_id` in the Hugging Face cache layout, as `hf download` leaves it."""
    from fashionflow.testing import build_tiny_vae

    repo = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    build_tiny_vae().save_pretrained(repo / "snapshots" / commit / "vae")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def refused_endpoint():
    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class HubStandIn(BaseHTTPRequestHandler):
    """Answers 404 to everything, except that requests for fashionflow-test/silent get no answer."""

    release = threading.Event()

    def do_HEAD(self):
        if "/fashionflow-test/silent/" in self.path:
            self.release.wait(30)  # a firewall that drops the packets
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


def test_without_network_a_hub_id_fails_fast_and_a_cached_one_loads(tmp_path):
    cache_vae(tmp_path / "hf", "fashionflow-test/cached")
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        refused = start_child(refused_endpoint(), tmp_path / "hf", [
            ("vae", "vae", "CompVis/stable-diffusion-v1-4", "vae"),
            ("clip", "clip", "openai/clip-vit-base-patch32", None),
            ("cached", "vae", "fashionflow-test/cached", "vae")])
        silent = start_child(f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "hf_empty", [
            ("silent", "vae", "fashionflow-test/silent", None),
            ("absent", "vae", "fashionflow-test/absent", "vae")])
        offline, answering = child_results(refused), child_results(silent)
    finally:
        HubStandIn.release.set()
        server.shutdown()
    for result in (*offline.values(), *answering.values()):
        assert result["seconds"] < 3, result
    nowhere = f"not a local folder nor in the Hugging Face cache ({tmp_path / 'hf' / 'hub'}), and the hub"
    assert offline["vae"]["error"].startswith(
        "VAE (Stable Diffusion v1-4 AutoencoderKL) not found at 'CompVis/stable-diffusion-v1-4/vae': " + nowhere)
    assert "cannot be reached (ConnectError" in offline["vae"]["error"]
    assert offline["vae"]["error"].endswith("then set encoders.vae=weights/stable-diffusion-v1-4 "
                                            "(with encoders.vae_subfolder=vae).")
    assert "CLIP image encoder" in offline["clip"]["error"] and "cannot be reached" in offline["clip"]["error"]
    assert "encoders.image_encoder=weights/clip-vit-base-patch32" in offline["clip"]["error"]
    assert offline["cached"]["error"] is None  # from the cache, without the network
    assert "did not answer within 2 s. Download it" in answering["silent"]["error"], answering["silent"]["error"]
    assert "has no fashionflow-test/absent/vae/config.json (" in answering["absent"]["error"]
    assert all("\n" not in r["error"] for r in (offline["vae"], offline["clip"], *answering.values()))
