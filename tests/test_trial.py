"""The README's smallest training trial (configs/trial.yaml) runs offline, end to end, through the
real scripts: synthetic clips -> project_latent_space.py -> train.py -> inference.py from the
checkpoint. Here at the smallest size (2 clips, 2 steps); README section Training, "A first run"."""

import json
import sys
from pathlib import Path

import pytest

from fashionflow import synthetic
from fashionflow.config import load_config
from fashionflow.encoders import hub_offline
from fashionflow.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
PRESET = "configs/trial.yaml"
sys.path.insert(0, str(ROOT))
import inference  # noqa: E402
import project_latent_space  # noqa: E402
import train  # noqa: E402


def test_trial_preset_matches_the_encoders_that_ship_in_the_repository():
    cfg = load_config(ROOT / PRESET)
    vae = json.loads((ROOT / cfg.encoders.vae / "config.json").read_text())
    clip = json.loads((ROOT / cfg.encoders.image_encoder / "config.json").read_text())
    assert cfg.encoders.vae_subfolder is None
    assert cfg.encoders.vae_scaling_factor == vae["scaling_factor"]  # train_vae writes it there
    assert vae["latent_channels"] == cfg.model.in_channels
    assert cfg.data.height // 2 ** (len(vae["block_out_channels"]) - 1) == cfg.model.latent_height  # 8x down
    assert clip["hidden_size"] == cfg.model.context_dim


@pytest.mark.usefixtures("restore_library_logging")
def test_trial_runs_offline_from_clips_to_videos(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the preset names the encoders relative to the repository, as the README runs it
    assert hub_offline()  # tests/conftest.py: anything reaching for the hub would fail
    clips, latents, run, result = (tmp_path / name for name in ("clips", "latents", "run", "result"))
    assert synthetic.main(["--output-dir", str(clips), "--num-videos", "2", "--frames", "8", "--fps", "8",
                           "--test-fraction", "0"]) == 0
    assert project_latent_space.main(["--config", PRESET, "--dataset", str(clips / "train"),
                                      "--output-dir", str(latents), "--no-progress"]) == 0
    assert len(list(latents.glob("*.safetensors"))) == 2
    assert train.main(["--config", PRESET, "--latents", str(latents), "--output-dir", str(run), "--device", "cpu",
                       "train.max_steps=2", "train.checkpoint_every=2", "train.log_every=1"]) == 0
    checkpoint = run / "checkpoints" / "step-0000002"
    assert (checkpoint / "model_index.json").is_file() and (checkpoint / "vae").is_dir()  # a whole pipeline
    image = sorted((ROOT / "fashion_dataset" / "demo").glob("*.png"))[0]
    assert inference.main(["--checkpoint", str(checkpoint), "--image", str(image), "--steps", "2",
                           "--output-dir", str(result)]) == 0
    frames, fps = read_video(result / f"{image.stem}_0.mp4")
    assert frames.shape == (8, 128, 128, 3) and fps == pytest.approx(8)  # the preset's sample section
    assert "0 failed" in capsys.readouterr().out
