"""inference.py end to end on a tiny pipeline folder: outputs, bad inputs, no silent overwrites, defaults."""

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from fashionflow.pipeline import save_pipeline
from fashionflow.testing import build_tiny_pipeline
from fashionflow.video_io import read_video

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import inference  # noqa: E402


pytestmark = pytest.mark.usefixtures("restore_library_logging")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    pipe, cfg = build_tiny_pipeline(folder)
    cfg.sample.num_inference_steps = 2
    return save_pipeline(pipe, folder / "pipeline", cfg)


def photo(path, size=(90, 120)):
    y, x = np.mgrid[0:size[1], 0:size[0]]
    Image.fromarray(np.stack([x % 255, y % 255, (x + y) % 255], -1).astype(np.uint8)).save(path)
    return path


def test_images_in_videos_out_and_bad_inputs_reported(checkpoint, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    photo(inputs / "dress.png")
    (inputs / "broken.jpg").write_text("not an image")
    photo(inputs / "speck.png", size=(8, 8))
    (inputs / "empty.png").write_bytes(b"")
    (inputs / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")  # a dangling link
    out = tmp_path / "result"
    args = ["--checkpoint", str(checkpoint), "--image", str(inputs), str(tmp_path / "missing.jpg"),
            "--frames", "2", "--fps", "8", "--output-dir", str(out)]
    assert inference.main(args) == 1  # some inputs failed
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert any(line.startswith(str(inputs / "broken.jpg")) and "not an image" in line for line in errors)
    assert any(line.startswith(str(inputs / "speck.png")) and "too small" in line for line in errors)
    assert any(line.startswith(str(tmp_path / "missing.jpg")) and "not found" in line for line in errors)
    assert f"{inputs / 'empty.png'}: empty file (0 bytes)" in errors
    assert f"{inputs / 'gone.jpg'}: broken symbolic link (its target {tmp_path / 'deleted.jpg'} does not exist)" in errors
    assert captured.out.startswith("6 input(s)")  # 5 entries of the folder (the link among them) + missing.jpg
    assert f"in {out}/" in captured.out and "s per video" in captured.out and "5 failed" in captured.out

    frames, fps = read_video(out / "dress_0.mp4")
    assert frames.shape == (2, 128, 128, 3) and fps == pytest.approx(8)
    assert np.asarray(Image.open(out / "dress_0_frames.png")).shape == (128, 2 * 128, 3)
    assert np.asarray(Image.open(out / "dress_0_input.png")).shape == (128, 128, 3)

    before = (out / "dress_0.mp4").read_bytes()
    assert inference.main(["--checkpoint", str(checkpoint), "--image", str(inputs / "dress.png"), "--frames", "2",
                           "--output-dir", str(out)]) == 0
    assert (out / "dress_0.mp4").read_bytes() == before  # never overwritten: the rerun became dress_1
    assert read_video(out / "dress_1.mp4")[0].shape[0] == 2


def test_dataset_mode_uses_a_frame_of_each_video(checkpoint, tmp_path, fixtures_dir):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(fixtures_dir / "ubc_test_91BjuE6irxS.mp4", videos)
    (videos / "corrupt.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "result"
    code = inference.main(["--checkpoint", str(checkpoint), "--dataset", str(videos), "--frames", "2",
                           "--output-dir", str(out)])
    assert code == 1 and sorted(p.name for p in out.glob("*.mp4")) == ["ubc_test_91BjuE6irxS_0.mp4"]
    # the conditioning frame is recorded for evaluate.py --real-offsets, and it is that frame
    offsets = json.loads((out / "conditioning_frames.json").read_text())
    assert list(offsets) == ["ubc_test_91BjuE6irxS_0"] and 0 <= offsets["ubc_test_91BjuE6irxS_0"] <= 171
    frame = read_video(videos / "ubc_test_91BjuE6irxS.mp4", offsets["ubc_test_91BjuE6irxS_0"], 1)[0][0]
    written = np.asarray(Image.open(out / "ubc_test_91BjuE6irxS_0_input.png").convert("RGB"), dtype=np.float32)
    expected = np.asarray(Image.fromarray(frame).resize(written.shape[1::-1], Image.BILINEAR), dtype=np.float32)
    assert np.abs(written - expected).mean() < 3


def test_defaults_use_the_demo_checkpoint_and_images(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert inference.main([]) == 1
    assert "no FashionFlow pipeline at checkpoint/demo" in capsys.readouterr().err

    shutil.copytree(checkpoint, tmp_path / "checkpoint" / "demo")
    (tmp_path / "fashion_dataset" / "demo").mkdir(parents=True)
    photo(tmp_path / "fashion_dataset" / "demo" / "model.png")
    assert inference.main(["--frames", "2"]) == 0
    printed = capsys.readouterr().out
    assert "tiny demo model" in printed and "result/" in printed
    assert (tmp_path / "result" / "model_0.mp4").is_file()


def test_init_strength_comes_from_the_config_or_the_command_line(checkpoint, tmp_path, capsys, monkeypatch):
    """--init-strength (else sample.init_strength) reaches the pipeline; values outside (0, 1] are refused."""
    from fashionflow.pipeline import FashionFlowPipeline

    seen, original = [], FashionFlowPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["init_strength"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FashionFlowPipeline, "__call__", spy)
    image = str(photo(tmp_path / "dress.png"))
    common = ["--checkpoint", str(checkpoint), "--image", image, "--frames", "2", "--overwrite"]
    assert inference.main(common + ["--output-dir", str(tmp_path / "a")]) == 0
    assert inference.main(common + ["--output-dir", str(tmp_path / "b"), "--init-strength", "0.5"]) == 0
    assert seen == [1.0, 0.5]
    with pytest.raises(SystemExit) as bad:
        inference.main(common + ["--init-strength", "1.5"])
    assert bad.value.code == 2 and "--init-strength must be in (0, 1]" in capsys.readouterr().err
