"""fashionflow.pose: keypoint maps, readers, restricted unpickling, rendering, alignment, motions, extraction."""

import importlib.util
import json

import numpy as np
import pytest

from fashionflow.pose import (
    BLAZEPOSE_TO_OPENPOSE, COLOURS, JOINT_NAMES, LIMBS, MOTION_ASPECT, MOTIONS, NoPersonError, PoseFormatError,
    align_poses, alignment_preview, blazepose_to_openpose, load_keypoints, motion_keypoints, pose_tensor,
    render_pose, resample_keypoints, save_keypoints,
)
from fashionflow.pose.evaluate import pck
from fashionflow.pose.keypoints import JOINT, PARENT, ROOT

DWPOSE = "ubc_test_91BjuE6irxS.dwpose.npy"
needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason="mediapipe not installed (pip install --no-deps -r requirements-nodeps.txt)")


def standing_pose(shift=(0.0, 0.0), scale=1.0):
    """A front-facing OpenPose-18 pose in [0, 1] coordinates, all joints visible."""
    points = {"nose": (0.5, 0.12), "neck": (0.5, 0.22), "right_shoulder": (0.4, 0.22), "right_elbow": (0.38, 0.36),
              "right_wrist": (0.37, 0.48), "left_shoulder": (0.6, 0.22), "left_elbow": (0.62, 0.36),
              "left_wrist": (0.63, 0.48), "right_hip": (0.45, 0.5), "right_knee": (0.45, 0.68),
              "right_ankle": (0.46, 0.86), "left_hip": (0.55, 0.5), "left_knee": (0.55, 0.68),
              "left_ankle": (0.54, 0.86), "right_eye": (0.48, 0.1), "left_eye": (0.52, 0.1),
              "right_ear": (0.46, 0.11), "left_ear": (0.54, 0.11)}
    pose = np.ones((18, 3), np.float32)
    for name, (x, y) in points.items():
        pose[JOINT[name], :2] = (np.array([x, y]) - 0.5) * scale + 0.5 + np.array(shift)
    return pose


def limb_lengths(pose, aspect=1.0):
    xy = pose[:, :2] * np.array([aspect, 1.0])
    return np.array([np.linalg.norm(xy[b] - xy[a]) for a, b in LIMBS])


# --- keypoint maps -------------------------------------------------------------------------

def test_limbs_are_a_tree_rooted_at_the_neck():
    children = [b for _, b in LIMBS]
    assert sorted(children + [ROOT]) == list(range(18))  # every joint but the neck has one parent
    for joint in children:  # walking up always reaches the neck
        seen = 0
        while joint != ROOT:
            joint, seen = PARENT[joint], seen + 1
            assert seen < 18


def test_blazepose_map_takes_the_named_landmarks():
    landmarks = np.zeros((33, 3), np.float32)
    landmarks[:, 0] = np.arange(33) / 40  # x encodes the landmark index
    landmarks[:, 1] = 0.5
    landmarks[:, 2] = np.linspace(0.4, 1.0, 33)
    keypoints = blazepose_to_openpose(landmarks)
    expected = {"nose": 0, "right_shoulder": 12, "left_shoulder": 11, "right_elbow": 14, "left_wrist": 15,
                "right_hip": 24, "left_knee": 25, "right_ankle": 28, "right_eye": 5, "left_eye": 2,
                "right_ear": 8, "left_ear": 7}
    for name, index in expected.items():
        assert keypoints[JOINT[name], 0] == pytest.approx(index / 40), name
    neck = keypoints[JOINT["neck"]]
    assert neck[0] == pytest.approx((11 + 12) / 80) and neck[2] == pytest.approx(landmarks[11, 2])  # midpoint, min
    assert len(BLAZEPOSE_TO_OPENPOSE) == len(JOINT_NAMES)

    landmarks[28, 1] = 1.2  # right ankle predicted below the frame: reported as missing
    assert blazepose_to_openpose(landmarks)[JOINT["right_ankle"], 2] == 0.0


def test_resample_interpolates_visible_joints_and_never_slides_from_missing_ones():
    a, b = standing_pose(), standing_pose(shift=(0.1, 0.0))
    b[JOINT["nose"], 2] = 0.0
    out = resample_keypoints(np.stack([a, b]), 3)
    assert out.shape == (3, 18, 3)
    np.testing.assert_allclose(out[1, JOINT["neck"], 0], a[JOINT["neck"], 0] + 0.05, atol=1e-6)
    assert out[1, JOINT["nose"], 0] in (a[JOINT["nose"], 0], b[JOINT["nose"], 0])
    np.testing.assert_array_equal(resample_keypoints(a[None], 4), np.repeat(a[None], 4, 0))


# --- readers -------------------------------------------------------------------------------

def test_dwpose_fixture_reads_as_musepose_wrote_it(fixtures_dir):
    keypoints = load_keypoints(fixtures_dir / DWPOSE)
    assert keypoints.shape == (345, 18, 3) and keypoints.dtype == np.float32
    raw = np.load(fixtures_dir / DWPOSE, allow_pickle=True)  # the trusted fixture, to compare against
    bodies = raw[10]["bodies"]
    np.testing.assert_array_equal(keypoints[10, :, :2], bodies["candidate"][bodies["subset"][0].astype(int)])
    assert (keypoints[..., 2] == 1).all()


def test_dwpose_several_people_and_missing_joints(tmp_path):
    small, large = standing_pose(scale=0.3), standing_pose()
    candidate = np.concatenate([small[:, :2], large[:, :2]]).astype(np.float32)
    subset = np.stack([np.arange(18), np.arange(18, 36)]).astype(np.float32)
    subset[1, JOINT["left_ankle"]] = -1
    frames = np.empty(2, dtype=object)
    frames[0] = {"bodies": {"candidate": candidate, "subset": subset}, "hands": np.zeros((2, 21, 2))}
    frames[1] = {"bodies": {"candidate": np.zeros((0, 2), np.float32), "subset": np.zeros((0, 18), np.float32)}}
    np.save(tmp_path / "two.npy", frames, allow_pickle=True)
    keypoints = load_keypoints(tmp_path / "two.npy")
    np.testing.assert_allclose(keypoints[0, JOINT["neck"], :2], large[JOINT["neck"], :2])  # the larger person
    assert keypoints[0, JOINT["left_ankle"], 2] == 0 and keypoints[0, JOINT["right_ankle"], 2] == 1
    assert (keypoints[1, :, 2] == 0).all()  # nobody in frame 1


def test_restricted_unpickler_refuses_a_malicious_keypoint_file(tmp_path):
    from test_metrics import _Exploit  # a pickle that opens (creates) a file when loaded

    touched = tmp_path / "touched"
    frames = np.empty(1, dtype=object)
    frames[0] = {"bodies": {"candidate": _Exploit(touched), "subset": np.zeros((1, 18))}}
    np.save(tmp_path / "evil.npy", frames, allow_pickle=True)
    with pytest.raises(PoseFormatError, match="evil.npy: refusing to load .io.open."):
        load_keypoints(tmp_path / "evil.npy")
    assert not touched.exists()


def test_openpose_json_coco_body25_pixels_and_folders(tmp_path):
    pose = standing_pose()
    pixels = pose.copy()
    pixels[:, :2] *= np.array([200, 400])
    body25 = np.zeros((25, 3), np.float32)
    body25[[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]] = pixels
    body25[8] = (100, 200, 0.9)  # MidHip: not an OpenPose-18 joint
    folder = tmp_path / "json"
    folder.mkdir()
    (folder / "f_000_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": pixels.ravel().tolist()}]}))
    (folder / "f_001_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": body25.ravel().tolist()}]}))
    (folder / "f_002_keypoints.json").write_text(json.dumps({"people": []}))
    keypoints = load_keypoints(folder, height=400, width=200)
    assert keypoints.shape == (3, 18, 3)
    np.testing.assert_allclose(keypoints[0], pose, atol=1e-6)
    np.testing.assert_allclose(keypoints[1], pose, atol=1e-6)
    assert (keypoints[2, :, 2] == 0).all()
    with pytest.raises(PoseFormatError, match="in pixels; give the frame size"):
        load_keypoints(folder / "f_000_keypoints.json")
    (tmp_path / "bad.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1, 2, 3]}]}))
    with pytest.raises(PoseFormatError, match="bad.json: pose_keypoints_2d has 3 values"):
        load_keypoints(tmp_path / "bad.json")


def test_synthetic_clip_sidecar_loads_as_driving_poses(tmp_path):
    from fashionflow.synthetic import render_clip, write_pose_sidecar

    clip = render_clip(seed=4, num_frames=4, height=64, width=64)
    sidecar = write_pose_sidecar(tmp_path / "clip.mp4", clip.keypoints, clip.yaw)
    np.testing.assert_array_equal(load_keypoints(sidecar), clip.keypoints)


def test_our_npy_round_trips_and_bad_files_are_named(tmp_path):
    keypoints = np.stack([standing_pose(), standing_pose(shift=(0.01, 0))])
    save_keypoints(tmp_path / "ours.npy", keypoints)
    np.testing.assert_array_equal(load_keypoints(tmp_path / "ours.npy"), keypoints)
    np.save(tmp_path / "wrong.npy", np.zeros((2, 17, 3)))
    with pytest.raises(PoseFormatError, match=r"wrong.npy: keypoints must be \[f, 18, 3\]"):
        load_keypoints(tmp_path / "wrong.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy: file not found"):
        load_keypoints(tmp_path / "missing.npy")


# --- rendering -----------------------------------------------------------------------------

def test_render_draws_openpose_colours_and_skips_hidden_joints():
    pose = np.zeros((18, 3), np.float32)
    pose[JOINT["neck"]] = (0.3, 0.5, 1.0)
    pose[JOINT["right_shoulder"]] = (0.7, 0.5, 1.0)  # limb 0: neck -> right shoulder
    pose[JOINT["nose"]] = (0.5, 0.2, 0.1)  # below the threshold: not drawn
    image = render_pose(pose, 512, 512)
    assert image[256, 256].tolist() == (COLOURS[0] * 0.6).astype(np.uint8).tolist()  # the limb, dimmed
    assert image[256, 154].tolist() == COLOURS[1].tolist()  # the neck's disc
    assert image[256, 358].tolist() == COLOURS[2].tolist()
    assert image[:200].max() == 0  # nothing from the hidden nose
    tensor = pose_tensor(np.stack([pose, pose]), 64, 48)
    assert tuple(tensor.shape) == (2, 3, 64, 48) and 0 <= tensor.min() and tensor.max() <= 1 and tensor.max() > 0


def test_render_matches_musepose_skeleton_video(fixtures_dir):
    from fashionflow.video_io import read_video

    keypoints = load_keypoints(fixtures_dir / DWPOSE)
    video, _ = read_video(fixtures_dir / "ubc_test_91BjuE6irxS.dwpose_skeleton.mp4", 0, 1)
    ours = render_pose(keypoints[0], video.shape[1], video.shape[2]).astype(int)
    theirs = video[0, ..., ::-1].astype(int)  # MusePose's video has red and blue swapped (written as BGR)
    drawn_ours, drawn_theirs = ours.max(-1) > 30, theirs.max(-1) > 30
    body = drawn_ours & drawn_theirs
    assert body.sum() / drawn_ours.sum() > 0.85  # the same skeleton where ours draws (theirs adds hands)
    assert np.abs(ours - theirs)[body].mean() < 20  # in the same colours (H.264 changes them a little)


# --- alignment -----------------------------------------------------------------------------

def driving_sequence():
    frames = [standing_pose(shift=(0.02 * t, 0.01 * t), scale=1.3) for t in range(4)]
    frames[2][JOINT["right_elbow"], 2] = 0.0  # a hidden elbow: its wrist is placed from the shoulder
    frames[3][JOINT["right_wrist"], :2] += 0.05
    return np.stack(frames)


def test_aligned_first_frame_has_the_reference_limb_lengths():
    reference = standing_pose(shift=(0.05, 0.02), scale=0.7)
    reference[JOINT["right_elbow"], 1] += 0.03  # other proportions than the driver
    reference[JOINT["left_knee"], 1] -= 0.02
    aligned = align_poses(driving_sequence(), reference)
    np.testing.assert_allclose(limb_lengths(aligned[0]), limb_lengths(reference), atol=1e-6)
    np.testing.assert_allclose(aligned[0, ROOT, :2], reference[ROOT, :2], atol=1e-6)
    np.testing.assert_array_equal(aligned[..., 2], driving_sequence()[..., 2])  # confidences unchanged


def test_aligned_with_other_aspect_ratios_keeps_pixel_lengths():
    reference = standing_pose(scale=0.8)
    aligned = align_poses(driving_sequence(), reference, driving_aspect=1.5, reference_aspect=0.75)
    np.testing.assert_allclose(limb_lengths(aligned[0], 0.75), limb_lengths(reference, 0.75), atol=1e-6)


def test_aligning_a_sequence_to_its_own_first_frame_is_the_identity():
    driving = driving_sequence()
    np.testing.assert_allclose(align_poses(driving, driving[0]), driving, atol=1e-6)


def test_alignment_is_equivariant_to_moving_the_reference_and_invariant_to_moving_the_driver():
    reference = standing_pose(shift=(0.03, 0.0), scale=0.8)
    driving = driving_sequence()
    aligned = align_poses(driving, reference)

    def move(pose, shift, scale):
        moved = pose.copy()
        moved[..., :2] = pose[..., :2] * scale + np.array(shift)
        return moved

    np.testing.assert_allclose(align_poses(driving, move(reference, (0.1, -0.05), 1.2)),
                               move(aligned, (0.1, -0.05), 1.2), atol=1e-5)
    np.testing.assert_allclose(align_poses(move(driving, (-0.2, 0.1), 0.6), reference), aligned, atol=1e-5)


def test_reference_without_a_person_is_said_once_and_poses_pass_unchanged():
    lines = []
    nobody = np.zeros((18, 3), np.float32)
    driving = driving_sequence()
    out = align_poses(driving, nobody, name="photo.jpg", log=lines.append)
    np.testing.assert_array_equal(out, driving)
    assert lines == ["photo.jpg: no person found, so the driving poses are used as they are (not aligned)"]


def test_alignment_preview_is_reference_beside_aligned():
    reference = standing_pose(scale=0.8)
    aligned = align_poses(driving_sequence(), reference)
    preview = alignment_preview(reference, aligned, 64, 48)
    assert preview.shape == (64, 96, 3)
    np.testing.assert_array_equal(preview[:, :48], render_pose(reference, 64, 48))
    np.testing.assert_array_equal(preview[:, 48:], render_pose(aligned[0], 64, 48))


# --- motions -------------------------------------------------------------------------------

def test_builtin_motions_are_deterministic_and_any_length():
    for name in MOTIONS:
        keypoints = motion_keypoints(name)
        assert keypoints.shape[1:] == (18, 3) and keypoints.dtype == np.float32
        np.testing.assert_array_equal(keypoints, motion_keypoints(name))
        assert ((keypoints[..., :2] > 0) & (keypoints[..., :2] < 1)).all()
        assert motion_keypoints(name, 7).shape == (7, 18, 3)
        np.testing.assert_array_equal(motion_keypoints(name, 96)[::2], motion_keypoints(name, 48))  # same path
    with pytest.raises(ValueError, match="unknown motion 'spin'; built-in motions: turn, sway, catwalk"):
        motion_keypoints("spin")


def test_turn_shows_the_back_halfway():
    turn = motion_keypoints("turn", 8)
    front, back = turn[0], turn[4]  # yaw 0 and 180 degrees
    right, left = JOINT["right_shoulder"], JOINT["left_shoulder"]
    assert front[right, 0] < front[left, 0] and back[right, 0] > back[left, 0]  # sides swap
    assert front[JOINT["nose"], 2] == 1 and back[JOINT["nose"], 2] == 0  # face away
    assert back[JOINT["right_ear"], 2] == 1
    widths = [abs(p[right, 0] - p[left, 0]) * MOTION_ASPECT for p in motion_keypoints("turn", 48)]
    assert min(widths) < 0.2 * max(widths)  # side-on, the shoulders nearly coincide


# --- PCK -----------------------------------------------------------------------------------

def test_pck_counts_within_a_share_of_the_height_and_misses_as_wrong():
    reference = np.stack([standing_pose()] * 4)  # skeleton height: eyes (0.1) to ankles (0.86) = 0.76 x 100 px
    predicted = reference.copy()
    predicted[1, JOINT["nose"], 0] += 0.06  # 6 px off: within 0.1 x 76, not within 0.05 x 76
    predicted[2, JOINT["nose"], 2] = 0.0  # missed
    scores = pck(predicted, reference, height=100, width=100)
    assert scores[0.1][JOINT["nose"]] == pytest.approx(3 / 4) and scores[0.05][JOINT["nose"]] == pytest.approx(2 / 4)
    assert scores[0.05][JOINT["neck"]] == 1.0


# --- extraction (needs mediapipe) ----------------------------------------------------------

@needs_mediapipe
def test_extract_from_an_image_gives_a_plausible_standing_pose(fixtures_dir):
    from fashionflow.pose import extract_keypoints

    keypoints = extract_keypoints(fixtures_dir / "ubc_frame_green.jpg")
    assert keypoints.shape == (1, 18, 3)
    pose = keypoints[0]
    assert (pose[:, 2] > 0.5).all()
    y = {name: pose[JOINT[name], 1] for name in JOINT_NAMES}
    assert y["nose"] < y["neck"] < y["right_hip"] < y["right_knee"] < y["right_ankle"]
    assert pose[JOINT["right_shoulder"], 0] < pose[JOINT["left_shoulder"], 0]  # facing the camera


@needs_mediapipe
def test_extract_from_video_matches_dwpose_and_survives_empty_frames(fixtures_dir):
    from fashionflow.pose import extract_keypoints
    from fashionflow.video_io import read_video

    frames, _ = read_video(fixtures_dir / "ubc_test_91BjuE6irxS.mp4", 0, 12)
    frames[5] = 255  # a blank white frame in the middle: no person there, no crash
    keypoints = extract_keypoints(frames)
    assert keypoints.shape == (12, 18, 3) and (keypoints[5, :, 2] == 0).all()
    reference = load_keypoints(fixtures_dir / DWPOSE)[:12]
    keep = np.arange(12) != 5
    scores = pck(keypoints[keep], reference[keep], frames.shape[1], frames.shape[2])
    assert np.nanmean(scores[0.1]) > 0.9
    with pytest.raises(NoPersonError, match=r"frames array \[3, 64, 64, 3\]: no person found in any of its 3"):
        extract_keypoints(np.zeros((3, 64, 64, 3), np.uint8))
