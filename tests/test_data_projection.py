"""Clip policies and latent projection: real and odd videos, bad files, resume, two-rank sharding."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import project_latent_space
from fashionflow.config import config_hash, load_config
from fashionflow.data import LatentClipDataset, projection
from fashionflow.data.clips import ClipTooShortError, clip_starts, video_seed
from fashionflow.distributed import derive_seed
from fashionflow.testing import save_tiny_encoders
from fashionflow.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
UBC_VIDEO = "ubc_test_91BjuE6irxS.mp4"


# --- clip policies and resizing (no models) -------------------------------------------------

def data_cfg(**overrides):
    return load_config("configs/tiny.yaml", [f"data.{k}={v}" for k, v in overrides.items()]).data


def test_released_window_starts_in_the_first_241_frames_and_is_seeded_per_video():
    d = load_config(None).data  # released: 70 frames within the first 241
    starts = [clip_starts(d, 345, np.random.default_rng(video_seed(d, f"v{i}.mp4")))[0] for i in range(400)]
    assert min(starts) == 0 and max(starts) == 241 - 70
    again = clip_starts(d, 370, np.random.default_rng(video_seed(d, "v7.mp4")))  # any length >= 241: same start
    assert again == [starts[7]]
    assert video_seed(d, "v7.mp4") != video_seed(data_cfg(seed=1), "v7.mp4")


def test_other_policies_and_short_videos():
    rng = np.random.default_rng(0)
    assert clip_starts(data_cfg(clip_policy="all_windows"), 30, rng) == [0, 8, 16]
    k = clip_starts(data_cfg(clip_policy="k_random_windows", clips_per_video=3), 100, rng)
    assert len(set(k)) == 3 and k == sorted(k) and max(k) <= 64 - 8
    assert len(clip_starts(data_cfg(clip_policy="k_random_windows", clips_per_video=5), 10, rng)) == 3
    assert max(clip_starts(data_cfg(), 12, np.random.default_rng(s))[0] for s in range(50)) == 4
    with pytest.raises(ClipTooShortError, match="5 decodable frames, a clip needs 8"):
        clip_starts(data_cfg(), 5, rng)


def test_resize_stretch_is_torchvision_on_pil_and_crop_keeps_the_centre():
    frame = np.zeros((60, 100, 3), np.uint8)
    frame[:, 20:80] = 255  # the centred 60x60 square
    cropped = projection.resize_frame(frame, 32, 32, "crop")  # like resize-then-crop, the edge pixels see
    assert (cropped[:, 1:-1] == 255).all() and cropped[:, 0].min() > 200  # a little of their neighbours
    stretched = projection.resize_frame(frame, 32, 32, "stretch")
    reference = np.asarray(Image.fromarray(frame).resize((32, 32), Image.BILINEAR))  # what Resize does on PIL
    assert np.array_equal(stretched, reference) and stretched[:, 0].max() == 0
    assert projection.clip_key("A1P+0Zh-MAiS v2.mp4") == "A1P+0Zh-MAiS_v2"


# --- projection with tiny encoders -----------------------------------------------------------

def ramp_video(num_frames, height, width, shift=0):
    t = np.arange(num_frames)[:, None, None, None]
    base = np.indices((height, width)).sum(0)[None, :, :, None]
    return ((base * 3 + t * 11 + shift + np.array([0, 80, 160])) % 256).astype(np.uint8)


def write_video(path, frames, fps, **codec):
    writer = imageio.get_writer(str(path), format="ffmpeg", fps=fps, macro_block_size=1, **codec)
    for frame in frames:
        writer.append_data(frame)
    writer.close()
    return path


X264 = dict(codec="libx264", pixelformat="yuv420p")
GOOD = ["odd+size-1.mp4", "clip two.mov", "c.webm", "d.avi", "truncated_playable.mp4"]
BAD = {"empty.mp4": "empty file (0 bytes)", "notes.mp4": "cannot open as a video",
       "truncated.mp4": "cannot open as a video", "short.mp4": "5 decodable frames, a clip needs 8 (data.num_frames)",
       "gone.mp4": "broken symbolic link (its target "}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Odd sizes, frame rates and containers, plus every kind of bad file."""
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "odd+size-1.mp4", ramp_video(30, 61, 75), 7.0, codec="libx264", pixelformat="yuv444p")
    write_video(folder / "clip two.mov", ramp_video(20, 40, 66, 5), 23.976, **X264)
    write_video(folder / "c.webm", ramp_video(20, 37, 53, 9), 60.0, codec="libvpx-vp9")
    write_video(folder / "d.avi", ramp_video(20, 45, 31, 13), 12.5, codec="mjpeg", pixelformat="yuvj420p")
    write_video(folder / "short.mp4", ramp_video(5, 32, 32), 10.0, **X264)
    noise = np.random.default_rng(0).integers(0, 256, (30, 64, 48, 3), dtype=np.uint8)
    for name, flags in (("truncated.mp4", None), ("truncated_playable.mp4", ["-movflags", "+faststart"])):
        full = write_video(folder / f"full_{name}", noise, 10.0, ffmpeg_params=flags, **X264)
        data = full.read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])  # index at the end: unreadable; at the start: 12 frames
        full.unlink()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video, just text\n")
    (folder / ".partial.abc.tmp.mp4").write_bytes(b"a download in progress, not a video")
    os.symlink(folder / "deleted_original.mp4", folder / "gone.mp4")  # a dangling link
    return folder


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    paths = save_tiny_encoders(tmp_path_factory.mktemp("encoders"))
    return load_config("configs/tiny.yaml", [f"encoders.vae={paths['vae']}", "encoders.vae_subfolder=null",
                                             f"encoders.image_encoder={paths['image_encoder']}"])


@pytest.fixture(autouse=True)
def _load_encoders_once(monkeypatch):
    """In-process runs share one loaded copy of the tiny encoders (the loading path runs once)."""
    real_load = projection.load_encoders

    def cached(cfg, device, dtype="float32", batch_size=8):
        key = (cfg.encoders.vae, cfg.encoders.image_encoder, str(device), dtype)
        if key not in _ENCODERS:
            _ENCODERS[key] = real_load(cfg, device, dtype, batch_size)
        return dataclasses.replace(_ENCODERS[key], batch_size=batch_size)

    monkeypatch.setattr(projection, "load_encoders", cached)


_ENCODERS = {}


def encoder_overrides(cfg):
    return [f"encoders.vae={cfg.encoders.vae}", "encoders.vae_subfolder=null",
            f"encoders.image_encoder={cfg.encoders.image_encoder}"]


def script_args(cfg, dataset, out, *extra):
    return ["--config", "configs/tiny.yaml", "--dataset", str(dataset), "--output-dir", str(out), "--batch-size", "3",
            "--no-progress", *extra, *encoder_overrides(cfg)]


@pytest.fixture(scope="module")
def projected(videos, cfg, tmp_path_factory):
    """One run of the real script over every test video: (output folder, exit code)."""
    out = tmp_path_factory.mktemp("latents")
    return out, project_latent_space.main(script_args(cfg, videos, out))


def clip_files(folder):
    return sorted(p.name for p in folder.glob("*.safetensors"))


def read_meta(path):
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_good_videos_are_projected_bad_ones_skipped_and_exit_1(projected, capsys):
    out, code = projected
    assert code == 1  # something was skipped
    files = clip_files(out)
    assert {read_meta(out / f)["source"] for f in files} == set(GOOD)
    assert any(f.startswith("odd+size-1__000") for f in files) and any(f.startswith("clip_two__000") for f in files)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["file"] for r in manifest] == files
    assert (out / "projection_config.yaml").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    truncated = next(r for r in manifest if r["source"] == "truncated_playable.mp4")
    assert truncated["start_frame"] <= 12 - 8  # only the decodable part of the truncated file is used
    assert len(LatentClipDataset(out, load_config("configs/tiny.yaml", encoder_overrides_for_dataset(out)))) == 5


def encoder_overrides_for_dataset(out):
    meta = read_meta(next(out.glob("*.safetensors")))
    return [f"encoders.vae={meta['vae']}", "encoders.vae_subfolder=null", f"encoders.image_encoder={meta['image_encoder']}"]


def test_skip_reasons_are_given_by_name_and_a_rerun_skips_finished_clips(projected, videos, cfg):
    out, _ = projected
    before = {f: (out / f).stat().st_mtime_ns for f in clip_files(out)}
    summary = projection.run_projection(cfg, videos, out, show_progress=False)
    assert set(summary.skipped) == set(BAD)
    for name, reason in BAD.items():
        assert reason in summary.skipped[name], summary.skipped[name]
    assert f"  skipped short.mp4: {BAD['short.mp4']}" in summary.text()
    assert summary.projected == {} and sorted(summary.already_done) == sorted(GOOD)
    assert {f: (out / f).stat().st_mtime_ns for f in clip_files(out)} == before  # nothing rewritten


def test_clip_contents_follow_the_released_formula(projected, videos, cfg):
    from diffusers import AutoencoderKL
    from transformers import CLIPImageProcessor, CLIPVisionModel

    out, _ = projected
    path = next(out.glob("odd+size-1__*.safetensors"))
    meta, tensors = read_meta(path), load_file(str(path))
    start, f = int(meta["start_frame"]), cfg.data.num_frames
    assert path.name == f"odd+size-1__{start:05d}.safetensors" and 0 <= start <= 30 - f
    assert (meta["original_height"], meta["original_width"], float(meta["fps"])) == ("61", "75", 7.0)
    assert meta["config_hash"] == config_hash(cfg) and meta["vae"] == cfg.encoders.vae
    assert json.loads(meta["config"])["data"]["num_frames"] == f

    video, _ = read_video(videos / "odd+size-1.mp4")
    frames = np.stack([np.asarray(Image.fromarray(frame).resize((cfg.data.width, cfg.data.height), Image.BILINEAR))
                       for frame in video[start:start + f]])
    assert torch.equal(tensors["image"], torch.from_numpy(frames[0]).permute(2, 0, 1))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        dist = AutoencoderKL.from_pretrained(cfg.encoders.vae).encode(x * 2 - 1).latent_dist  # tiny: [-1, 1] input
    noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(
        derive_seed(video_seed(cfg.data, "odd+size-1.mp4"), start)))
    scale = cfg.encoders.vae_scaling_factor
    close = dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tensors["latents"], (dist.mean + dist.std * noise) * scale, **close)  # sampled
    torch.testing.assert_close(tensors["image_latent_mean"], dist.mean[0] * scale, **close)
    torch.testing.assert_close(tensors["image_latent_std"], dist.std[0] * scale, **close)
    clip = CLIPVisionModel.from_pretrained(cfg.encoders.image_encoder)
    processor = CLIPImageProcessor.from_pretrained(cfg.encoders.image_encoder)
    pixels = processor(images=list(x[:1]), do_rescale=False, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(tensors["clip_hidden_states"], clip(pixel_values=pixels).last_hidden_state[0])


def test_real_ubc_video(fixtures_dir, cfg, tmp_path):
    (tmp_path / "videos").mkdir()
    os.symlink(fixtures_dir / UBC_VIDEO, tmp_path / "videos" / UBC_VIDEO)
    summary = projection.run_projection(cfg, tmp_path / "videos", tmp_path / "out", show_progress=False)
    assert summary.projected == {UBC_VIDEO: 1} and not summary.skipped
    (path,) = (tmp_path / "out").glob("*.safetensors")
    meta = read_meta(path)
    assert (meta["original_height"], meta["original_width"]) == ("540", "414")
    assert abs(float(meta["fps"]) - 29.97) < 0.01 and 0 <= int(meta["start_frame"]) <= 64 - 8
    image = load_file(str(path))["image"]
    assert image.shape == (3, 128, 128) and image.float().std() > 10  # a real picture, not a constant


def subset_folder(videos, folder, names):
    folder.mkdir()
    for name in names:
        os.symlink(videos / name, folder / name)
    return folder


def test_options_all_windows_crop_fp16(videos, cfg, tmp_path):
    options = load_config("configs/tiny.yaml", encoder_overrides(cfg) + [
        "data.clip_policy=all_windows", "data.resize=crop", "data.latent_dtype=float16"])
    dataset = subset_folder(videos, tmp_path / "v", ["clip two.mov"])
    summary = projection.run_projection(options, dataset, tmp_path / "out", batch_size=16, show_progress=False)
    assert summary.projected == {"clip two.mov": 2}  # 20 frames: windows at 0 and 8
    assert clip_files(tmp_path / "out") == ["clip_two__00000.safetensors", "clip_two__00008.safetensors"]
    tensors = load_file(str(tmp_path / "out" / "clip_two__00008.safetensors"))
    assert tensors["latents"].dtype == torch.float16 and tensors["image_latent_mean"].dtype == torch.float32
    video, _ = read_video(videos / "clip two.mov")
    expected = projection.resize_frame(video[8], 128, 128, "crop")  # 40x66 -> centred 40x40 -> 128x128
    assert torch.equal(tensors["image"], torch.from_numpy(expected.copy()).permute(2, 0, 1))
    centre = np.asarray(Image.fromarray(video[8][:, 13:53]).resize((128, 128), Image.BILINEAR))  # 66 - 40 = 2 x 13
    assert np.abs(expected[:, 4:-4].astype(int) - centre[:, 4:-4]).max() <= 1


def test_killed_run_resumes_to_the_same_result(projected, videos, cfg, tmp_path, monkeypatch):
    reference, _ = projected
    out, dataset = tmp_path / "out", subset_folder(videos, tmp_path / "v", ["odd+size-1.mp4", "d.avi", "short.mp4"])
    real_write, calls = projection.write_clip, []

    def write_then_die(path, tensors, metadata):
        if len(calls) == 1:
            raise KeyboardInterrupt  # the run is killed after one clip
        calls.append(path.name)
        real_write(path, tensors, metadata)

    monkeypatch.setattr(projection, "write_clip", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        projection.run_projection(cfg, dataset, out, batch_size=3, show_progress=False)
    monkeypatch.undo()
    assert clip_files(out) == sorted(calls)
    (out / ".d__00004.k2j3.tmp.safetensors").write_bytes(b"half a file")  # a write killed mid-way
    (out / "manifest.jsonl").write_text('{"file": "lost.safetensors"}\n')  # a stale manifest

    summary = projection.run_projection(cfg, dataset, out, batch_size=3, show_progress=False)
    assert summary.already_done == ["d.avi"] and summary.projected == {"odd+size-1.mp4": 1}
    assert list(summary.skipped) == ["short.mp4"]
    assert clip_files(out) == [f for f in clip_files(reference) if f.startswith(("d__", "odd+size-1__"))]
    for name in clip_files(out):  # same seeds per video: identical to the uninterrupted run
        got, want = load_file(str(out / name)), load_file(str(reference / name))
        assert all(torch.equal(got[k], want[k]) for k in want), name
    reference_lines = (reference / "manifest.jsonl").read_text().splitlines()
    assert (out / "manifest.jsonl").read_text().splitlines() == [
        line for line in reference_lines if json.loads(line)["file"] in clip_files(out)]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_output_of_another_config_is_refused(projected, videos, cfg, capsys):
    out, _ = projected
    code = project_latent_space.main(script_args(cfg, videos, out, "data.seed=1"))
    assert code == 2
    assert "holds clips projected with another data/encoders config" in capsys.readouterr().err


def test_torchrun_two_ranks_cover_every_video_once(projected, videos, cfg, tmp_path):
    reference, _ = projected
    out = tmp_path / "out"
    good, bad = ["c.webm", "clip two.mov", "d.avi"], ["empty.mp4"]
    dataset = subset_folder(videos, tmp_path / "v", good + bad)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "project_latent_space.py", *script_args(cfg, dataset, out, "--device", "cpu")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0  # bad videos were skipped: every rank exits 1
    assert "ranks handled 2 + 2 videos" in run.stderr, run.stderr[-3000:]
    assert "3 projected (3 clips written), 0 already done, 1 skipped" in run.stderr
    assert "skipped empty.mp4: empty file (0 bytes)" in run.stderr
    assert clip_files(out) == [f for f in clip_files(reference) if f.startswith(("c__", "clip_two__", "d__"))]
    for name in clip_files(out):  # the rank that did a video does not change its clip (1 thread vs 2: float noise)
        got, want = load_file(str(out / name)), load_file(str(reference / name))
        assert torch.equal(got["image"], want["image"])
        for key in ("latents", "image_latent_mean", "image_latent_std", "clip_hidden_states"):
            torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)
    manifest = [json.loads(line)["file"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert manifest == clip_files(out)  # each clip once


def test_reference_candidates_come_from_the_whole_video_and_old_folders_still_load(projected, videos, cfg, tmp_path):
    from fashionflow.data.latent_dataset import LatentDatasetError

    options = load_config("configs/tiny.yaml", encoder_overrides(cfg) + ["data.reference_candidates=3",
                                                                         "data.start_window=10"])
    dataset = subset_folder(videos, tmp_path / "v", ["odd+size-1.mp4"])
    projection.run_projection(options, dataset, tmp_path / "out", show_progress=False)
    path, = (tmp_path / "out").glob("*.safetensors")
    tensors, meta = load_file(str(path)), read_meta(path)
    assert int(meta["start_frame"]) <= 10 - 8 and meta["reference_candidates"] == "3"
    assert tensors["reference_frames"].tolist() == [0, 14, 29]  # spread over all 30 frames, beyond the window
    video, _ = read_video(videos / "odd+size-1.mp4")
    for slot, index in enumerate((0, 14, 29)):
        expected = projection.resize_frame(video[index], 128, 128, "stretch")
        assert torch.equal(tensors["reference_images"][slot], torch.from_numpy(expected.copy()).permute(2, 0, 1))
    assert tensors["reference_latent_mean"].shape == (3, 4, 16, 16) and tensors["reference_clip_hidden_states"].shape == (3, 50, 32)
    start = int(meta["start_frame"])  # the conditioning frame's latent distribution, when it is a candidate too
    for slot in [i for i, index in enumerate((0, 14, 29)) if index == start]:
        torch.testing.assert_close(tensors["reference_latent_mean"][slot], tensors["image_latent_mean"],
                                   rtol=1e-4, atol=1e-5)
    options.model = dataclasses.replace(options.model, max_references=2)
    item = LatentClipDataset(tmp_path / "out", options)[0]
    assert item["reference_valid"].tolist() == [i != start for i in (0, 14, 29)]
    old, _ = projected  # projected without candidates: single-image training reads it, references refuse it
    old_cfg = load_config("configs/tiny.yaml", encoder_overrides_for_dataset(old))
    assert "reference_valid" not in LatentClipDataset(old, old_cfg)[0]
    old_cfg.model.max_references = 2
    with pytest.raises(LatentDatasetError, match="no reference candidates"):
        LatentClipDataset(old, old_cfg)
