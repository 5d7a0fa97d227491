"""Every benchmark script runs end to end at tiny sizes (`--tiny`), so they keep working for the
GPU runs they exist for (docs/benchmarks.md)."""

import re

import numpy as np
import pytest
import torch

from benchmarks import pipeline as pipeline_bench
from benchmarks import train as train_bench
from benchmarks import unet as unet_bench
from benchmarks.common import bf16_peak_tflops, count_flops, throughput_cell


@pytest.fixture(autouse=True)
def _one_thread(_few_threads):
    torch.set_num_threads(1)  # two OpenMP threads crawl when another process holds a core


def table_rows(text: str) -> list[list[str]]:
    """The data rows of the markdown table a benchmark prints."""
    rows = [line.strip("|").split("|") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header


def test_unet_benchmark_times_ours_and_the_released_network(capsys):
    unet_bench.main(["--tiny"])
    rows = table_rows(capsys.readouterr().out)
    assert [row[:2] for row in rows] == [["[1, 4, 2, 16, 16]", "fwd"], ["[1, 4, 2, 16, 16]", "fwd+bwd"]]
    for row in rows:
        assert float(row[2]) > 0 and float(row[3]) > 0 and row[4].endswith("x") and float(row[6]) > 0


def test_train_benchmark_runs_every_variant_of_ours(capsys):
    variants = ["fp32", "bf16", "fp16", "fp32+tf32", "bf16+ckpt", "bf16-sdpa", "fp32+det"]  # +compile: test_train
    train_bench.main(["--tiny", "--variants", *variants])
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [row[0] for row in rows] == variants and all(float(row[1]) > 0 for row in rows)
    assert "batch 1 x [4, 2, 16, 16]" in out


def test_pipeline_benchmark_sweeps_frames_and_decode_chunks(capsys):
    assert pipeline_bench.main(["--tiny", "--precision", "bf16", "--vae-dtype", "bf16", "--channels-last",
                                "--peak-tflops", "1"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        ("dpm", "2", "2", "1"), ("dpm", "2", "2", "8"), ("dpm", "2", "4", "1"), ("dpm", "2", "4", "8")]
    for row in rows:
        encode, denoise, decode, total = map(float, row[4:8])
        assert min(encode, denoise, decode) > 0 and total == pytest.approx(encode + denoise + decode, abs=2e-3)
        assert re.fullmatch(r"[0-9.e-]+ \(\d+%\)", row[10]) and re.fullmatch(r"[0-9.e-]+ \(\d+%\)", row[11])
    assert "precision bf16; VAE bf16, channels-last" in out


def test_flop_count_of_the_paper_unet_and_peak_lookup(monkeypatch):
    from fashionflow.models import SpaceTimeUNet

    meta = dict(device="meta")
    flops = count_flops(SpaceTimeUNet, lambda m: m(torch.randn(1, 4, 70, 80, 64, **meta), torch.ones(1, **meta),
                                                   torch.randn(1, 50, 768, **meta)))
    assert flops == pytest.approx(1.62e12, rel=0.01)  # FASHIONFLOW.md, "Cost of one video"
    assert throughput_cell(1.62e12, 2.0, 810.0) == "0.81 (0%)" and throughput_cell(2e12, 1.0, None) == "2"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert bf16_peak_tflops(torch.device("cuda")) == 756.0 and bf16_peak_tflops(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert bf16_peak_tflops(torch.device("cuda")) == 989.0 and bf16_peak_tflops(torch.device("cuda"), 500.0) == 500.0


def test_reference_view_share_recorder_measures_the_attention_on_the_second_view():
    from benchmarks.reference_view_share import ShareRecorder
    from fashionflow.models.attention import attend

    recorder = ShareRecorder()
    q = torch.zeros(1, 2, 6, 4)  # 3 frames x 2 tokens; zero queries: uniform attention
    k, v = torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4)
    assert torch.allclose(recorder(q, k, v), attend(q, k, v))  # attends exactly as before
    bias = torch.zeros(1, 1, 1, 10)
    bias[..., :5] = float("-inf")  # only the second view's keys
    recorder(q, k, v, bias)
    assert np.allclose(recorder.shares[0].numpy(), 0.5) and np.allclose(recorder.shares[1].numpy(), 1.0)
    assert np.allclose(recorder.per_frame(3), 0.75)  # two calls averaged, per frame


def test_reference_view_share_recorder_reads_per_frame_routing():
    from benchmarks.reference_view_share import ShareRecorder
    from fashionflow.models.attention import attend_per_frame

    recorder = ShareRecorder()
    q = torch.zeros(1, 2, 6, 4)  # 3 frames x 2 tokens, uniform attention but for the logits
    k, v = torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4)
    frame_bias = torch.zeros(1, 3, 10)
    frame_bias[0, 0, 5:] = float("-inf")  # frame 0: the first view only; frame 2: the second only
    frame_bias[0, 2, :5] = float("-inf")
    assert torch.allclose(recorder.per_frame_call(q, k, v, frame_bias, 3), attend_per_frame(q, k, v, frame_bias, 3))
    assert np.allclose(recorder.per_frame(3), [0.0, 0.5, 1.0])


def test_colour_drift_floor_scores_changed_truths_against_the_unchanged_input(tmp_path, capsys):
    import json

    from benchmarks import colour_drift_floor
    from fashionflow.demo import quality
    from fashionflow.synthetic import render_clip

    manifest = {"num_frames": 4, "clips": [{"seed": 3, "split": "test"}, {"seed": 4, "split": "test"},
                                           {"seed": 5, "split": "train"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    output = tmp_path / "floor.json"
    assert colour_drift_floor.main(["--dataset", str(tmp_path), "--size", "32", "32", "--optimise-latents", "10",
                                    "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["clips"] == 2 and result["num_frames"] == 4  # the test clips only, the manifest's length
    truths = [render_clip(seed, 4, 32, 32).frames for seed in (3, 4)]
    expected = np.mean([quality.mean_colour_drift(t, t[0]) for t in truths])
    variants = result["variants"]
    assert variants["truth"]["drift"] == pytest.approx(expected) and result["target_drift"] == pytest.approx(expected + 0.1)
    assert variants["noise_8"]["drift"] > variants["truth"]["drift"]  # every change is scored against the raw input
    assert variants["noise_8"]["distance"] > variants["noise_2"]["distance"]
    # the bundled VAE: its decoded clip against the raw input and against its own decoded frame 0
    assert {"vae", "vae_vs_decoded_input"} <= set(variants)
    # the decoder fed latents optimised for the first frames draws them closer than from the encoder's
    assert variants["vae_optimised_latents_frame0"]["psnr"] > variants["vae_frame0"]["psnr"]
    assert len(table_rows(capsys.readouterr().out)) == len(variants)
    assert colour_drift_floor.main(["--dataset", str(tmp_path / "missing")]) == 1
