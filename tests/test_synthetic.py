"""The procedural fashion clips: deterministic, in the UBC layout, with the promised motion."""

import json
import math

import numpy as np
import pytest

from fashionflow import synthetic
from fashionflow.video_io import read_video


def _first_seed(condition, limit=200):
    for seed in range(limit):
        figure = synthetic.random_figure(np.random.default_rng(seed), 16)
        if condition(figure):
            return seed
    raise AssertionError("no seed satisfies the condition")


def test_same_seed_same_pixels_and_other_seed_differs():
    a = synthetic.render_clip(7, num_frames=6, height=64, width=48)
    b = synthetic.render_clip(7, num_frames=6, height=64, width=48)
    c = synthetic.render_clip(8, num_frames=6, height=64, width=48)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (6, 64, 48, 3)
    assert a.garment_mask.dtype == bool and a.garment_mask.shape == (6, 64, 48)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.garment_mask, b.garment_mask)
    assert not np.array_equal(a.frames, c.frames)


def test_clip_seeds_are_stable_and_distinct():
    assert synthetic.clip_seed(0, 3) == synthetic.clip_seed(0, 3)
    assert len({synthetic.clip_seed(s, i) for s in range(3) for i in range(20)}) == 60


def test_garment_mask_covers_garment_coloured_pixels_and_figure_moves():
    clip = synthetic.render_clip(3, num_frames=12, height=96, width=96)
    background = clip.frames[:, 2, 2].astype(int)  # top-left corner is studio background
    for frame, mask, bg in zip(clip.frames, clip.garment_mask, background):
        assert 0.02 < mask.mean() < 0.5
        assert np.abs(frame[mask].astype(int) - bg).sum(-1).mean() > 30  # garment stands out
    assert np.abs(np.diff(clip.frames.astype(int), axis=0)).mean() > 0.05  # not a still image


def _colours(garment):
    return [garment.base] if garment.pattern == "solid" else [garment.base, garment.accent]


def _direction(colours):
    colours = np.asarray(colours, float) + 1e-3
    return colours / np.linalg.norm(colours, axis=-1, keepdims=True)


def _distinct_sides(figure):
    """Front and back colours point in clearly different RGB directions (shading only scales them)."""
    front, back = _direction(_colours(figure.front)), _direction(_colours(figure.back))
    return (front @ back.T).max() < 0.97


def test_turn_narrows_the_body_and_shows_the_back():
    seed = _first_seed(lambda f: f.action == "turn" and abs(f.turn_amount) == math.pi and abs(f.start_angle) < 0.3
                       and _distinct_sides(f))
    clip = synthetic.render_clip(seed, num_frames=16, height=128, width=128)
    front, back = _direction(_colours(clip.figure.front)), _direction(_colours(clip.figure.back))

    def share_of_back(index):
        pixels = _direction(clip.frames[index][clip.garment_mask[index]] / 255)
        return ((pixels @ back.T).max(1) > (pixels @ front.T).max(1)).mean()

    widths = [np.ptp(np.flatnonzero(m.any(0))) for m in clip.garment_mask]
    assert min(widths) < 0.8 * widths[0]  # side-on somewhere in the turn
    assert share_of_back(0) < 0.2 and share_of_back(-1) > 0.8  # the turn ends facing away


def test_generate_dataset_layout_manifest_and_reproducible_videos(tmp_path):
    args = ["--num-videos", "4", "--frames", "5", "--height", "64", "--width", "48", "--seed", "11",
            "--test-fraction", "0.25"]
    assert synthetic.main(["--output-dir", str(tmp_path / "a"), *args]) == 0
    assert synthetic.main(["--output-dir", str(tmp_path / "b"), *args, "--workers", "2"]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 9  # 4 videos, 4 pose sidecars, the manifest
    for name in files:  # two processes write the very same dataset
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train = sorted(p.name for p in (tmp_path / "a" / "train").glob("*.mp4"))
    test = sorted(p.name for p in (tmp_path / "a" / "test").glob("*.mp4"))
    assert train == ["synthetic_00000.mp4", "synthetic_00001.mp4", "synthetic_00002.mp4"]
    assert test == ["synthetic_00003.mp4"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [c["split"] for c in manifest["clips"]] == ["train", "train", "train", "test"]
    assert manifest["clips"][3]["seed"] == synthetic.clip_seed(11, 3)
    frames, fps = read_video(tmp_path / "a" / "test" / "synthetic_00003.mp4")
    assert frames.shape == (5, 64, 48, 3) and fps == pytest.approx(25)
    again, _ = read_video(tmp_path / "b" / "test" / "synthetic_00003.mp4")
    np.testing.assert_array_equal(frames, again)
    # the video is the rendered clip, up to H.264 loss
    clip = synthetic.render_clip(manifest["clips"][3]["seed"], 5, 64, 48)
    assert np.abs(frames.astype(int) - clip.frames.astype(int)).mean() < 4


def test_prefix_names_clips_so_datasets_of_other_seeds_can_share_a_folder(tmp_path, capsys):
    args = ["--num-videos", "2", "--frames", "4", "--height", "32", "--width", "32", "--test-fraction", "0"]
    assert synthetic.main(["--output-dir", str(tmp_path / "a"), "--seed", "21", "--prefix", "s21", *args]) == 0
    assert synthetic.main(["--output-dir", str(tmp_path / "b"), "--seed", "22", "--prefix", "s22", *args]) == 0
    names_a = sorted(p.name for p in (tmp_path / "a" / "train").iterdir())
    assert names_a == ["s21_00000.mp4", "s21_00000.pose.npz", "s21_00001.mp4", "s21_00001.pose.npz"]
    assert not {p.stem for p in (tmp_path / "b" / "train").glob("*.mp4")} & {n[:-4] for n in names_a if n.endswith(".mp4")}
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["clips"][1]["file"] == "train/s22_00001.mp4"
    assert manifest["clips"][1]["seed"] == synthetic.clip_seed(22, 1)
    # the sidecar follows the video's name
    sidecar = synthetic.read_pose_sidecar(tmp_path / "b" / "train" / "s22_00001.mp4")
    np.testing.assert_array_equal(sidecar["keypoints"], synthetic.render_clip(synthetic.clip_seed(22, 1), 4, 32, 32).keypoints)
    with pytest.raises(SystemExit):
        synthetic.main(["--output-dir", str(tmp_path / "c"), "--prefix", "../x", *args])
    assert "--prefix '../x': letters, digits" in capsys.readouterr().err


def test_bad_arguments_fail_clearly(capsys):
    with pytest.raises(ValueError, match="at least 16x16"):
        synthetic.render_clip(0, num_frames=4, height=8, width=8)
    with pytest.raises(SystemExit):
        synthetic.main(["--output-dir", "unused", "--num-videos", "0"])
    assert "--num-videos must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic.main(["--output-dir", "unused", "--num-videos", "2", "--workers", "0"])
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_split_keeps_at_least_one_test_clip():
    assert [synthetic.split_of(i, 3, 0.1) for i in range(3)] == ["train", "train", "test"]
    assert [synthetic.split_of(i, 3, 0.0) for i in range(3)] == ["train"] * 3


def test_keypoints_and_yaw_shapes_order_and_geometry():
    clip = synthetic.render_clip(11, num_frames=8, height=96, width=80)
    assert clip.keypoints.dtype == np.float32 and clip.keypoints.shape == (8, 18, 3)
    assert clip.yaw.dtype == np.float32 and clip.yaw.shape == (8,)
    assert synthetic.KEYPOINT_NAMES[:2] == ("nose", "neck") and synthetic.KEYPOINT_NAMES[-1] == "l_ear"
    assert set(np.unique(clip.keypoints[..., 2])) <= {0.0, 1.0}
    assert np.all((-180 <= clip.yaw) & (clip.yaw < 180))
    index = {name: i for i, name in enumerate(synthetic.KEYPOINT_NAMES)}
    first = clip.keypoints[0]
    # neck is the shoulder midpoint; the head is above the neck, the ankles lowest
    np.testing.assert_allclose(first[index["neck"], :2], (first[index["r_shoulder"], :2] + first[index["l_shoulder"], :2]) / 2,
                               atol=1e-6)
    assert first[index["nose"], 1] < first[index["neck"], 1] < first[index["r_hip"], 1] < first[index["r_ankle"], 1]
    # every visible joint lies on the figure (differs from the studio wall)
    for frame, points in zip(clip.frames, clip.keypoints):
        wall = frame[1, 1].astype(int)
        for x, y, visible in points[[index[n] for n in ("neck", "r_hip", "l_hip", "r_knee", "l_knee")]]:
            if visible:
                pixel = frame[min(int(y * 96), 95), min(int(x * 80), 79)].astype(int)
                assert np.abs(pixel - wall).sum() > 30


def test_facing_camera_right_side_is_on_the_left_and_back_view_mirrors_it():
    seed = _first_seed(lambda f: f.action == "turn" and abs(f.turn_amount) == math.pi and abs(f.start_angle) < 0.3)
    clip = synthetic.render_clip(seed, num_frames=16, height=128, width=128)
    r, l = synthetic.KEYPOINT_NAMES.index("r_shoulder"), synthetic.KEYPOINT_NAMES.index("l_shoulder")
    nose = synthetic.KEYPOINT_NAMES.index("nose")
    assert abs(clip.yaw[0]) < 30 and abs(clip.yaw[-1]) > 150
    assert clip.keypoints[0, r, 0] < clip.keypoints[0, l, 0]  # facing us: the figure's right on our left
    assert clip.keypoints[-1, r, 0] > clip.keypoints[-1, l, 0]  # from the back: mirrored
    assert clip.keypoints[0, nose, 2] == 1 and clip.keypoints[-1, nose, 2] == 0  # the face turns away


def test_many_clips_show_other_views():
    yaws = [np.abs(synthetic.render_clip(synthetic.clip_seed(1, i), num_frames=12, height=32, width=32).yaw)
            for i in range(40)]
    assert np.mean([y.max() > 60 for y in yaws]) > 0.5  # most clips show a side or the back
    assert sum(y[0] > 60 for y in yaws) >= 3  # some start side-on or from the back
    assert np.mean(np.concatenate(yaws) > 60) > 0.25  # a good part of the frames


def test_dataset_writes_pose_sidecars(tmp_path):
    synthetic.main(["--output-dir", str(tmp_path), "--num-videos", "2", "--frames", "4", "--height", "32",
                    "--width", "32", "--test-fraction", "0.5"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    video = tmp_path / manifest["clips"][0]["file"]
    sidecar = synthetic.read_pose_sidecar(video)
    assert synthetic.pose_sidecar_path(video).name == video.stem + ".pose.npz"
    clip = synthetic.render_clip(manifest["clips"][0]["seed"], 4, 32, 32)
    np.testing.assert_array_equal(sidecar["keypoints"], clip.keypoints)
    np.testing.assert_array_equal(sidecar["yaw"], clip.yaw)
    assert "start_yaw" in manifest["clips"][0]
    assert synthetic.read_pose_sidecar(tmp_path / "missing.mp4") is None
