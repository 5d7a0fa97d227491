"""Keypoint files: ours (.npy float [f, 18, 3]), DWPose as MusePose writes it, OpenPose JSON.

- ours: `np.save` of the float32 [f, 18, 3] array `extract_keypoints` returns; the synthetic
  clips' sidecar `NAME.pose.npz` (key `keypoints`) is read too.
- DWPose (IDEA-Research/DWPose as used by MusePose's `pose_align.py` / `extract_dwpose_from_vid.py`):
  `np.save` of an object array with one dict per frame, `bodies.candidate` float [18 n, 2]
  (x, y in [0, 1]) and `bodies.subset` [n, 18] (the candidate row of each joint of person n, or
  -1 where DWPose scored the joint below 0.3), plus `hands` and `faces`, which we ignore.
  It is a pickle, so it is read with the restricted unpickler of
  `fashionflow.metrics.safe_pickle` (numpy arrays, dicts, lists and plain values only): a
  file that names any other class is refused before anything in it runs.
- OpenPose JSON (`--write_json`): one file per frame, `people[i].pose_keypoints_2d` = 18 (COCO)
  or 25 (BODY_25) triples x, y, confidence, in pixels unless OpenPose ran with
  `--keypoint_scale 3`; a folder of them is a sequence, in file-name order.

Where a frame shows several people, the largest is kept (`select_person`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fashionflow.metrics.safe_pickle import UnsafePickleError, load_object_npy
from fashionflow.pose.keypoints import NUM_JOINTS, PoseFormatError, check_keypoints, select_person

# BODY_25 -> COCO-18: drop MidHip (8) and the six foot points (19-24).
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)


def _dwpose_frame(entry, source: str, index: int) -> np.ndarray:
    try:
        bodies = entry["bodies"]
        candidate = np.asarray(bodies["candidate"], np.float32).reshape(-1, 2)
        subset = np.asarray(bodies["subset"], np.float32).reshape(-1, NUM_JOINTS)
        scores = bodies.get("score")
        scores = None if scores is None else np.asarray(scores, np.float32).reshape(subset.shape)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise PoseFormatError(f"{source}: frame {index} is not a DWPose dict with bodies.candidate [18 n, 2] "
                              f"and bodies.subset [n, 18] ({type(error).__name__}: {error})") from None
    people = np.zeros((len(subset), NUM_JOINTS, 3), np.float32)
    for person, rows in enumerate(subset):
        for joint, row in enumerate(rows.astype(int)):
            if 0 <= row < len(candidate):
                people[person, joint, :2] = candidate[row]
                people[person, joint, 2] = 1.0 if scores is None else scores[person, joint]
    return select_person(people)


def read_dwpose(path: str | os.PathLike) -> np.ndarray:
    """A DWPose keypoint file (MusePose's .npy) -> float32 [f, 18, 3]; confidence 1 for detected joints."""
    try:
        frames = load_object_npy(path)
    except (UnsafePickleError, ValueError) as error:
        raise PoseFormatError(str(error)) from None
    return _dwpose_sequence(frames, str(path))


def _dwpose_sequence(frames: np.ndarray, source: str) -> np.ndarray:
    if frames.dtype != object:
        raise PoseFormatError(f"{source}: a numeric array {frames.shape}, not DWPose's object array of per-frame dicts")
    frames = list(frames.reshape(-1))
    return check_keypoints([_dwpose_frame(entry, source, i) for i, entry in enumerate(frames)], source)


def _openpose_people(document, source: str, height: int | None, width: int | None) -> np.ndarray:
    if not isinstance(document, dict) or not isinstance(document.get("people"), list):
        raise PoseFormatError(f"{source}: not an OpenPose JSON file (no 'people' list)")
    people = []
    for person in document["people"]:
        values = np.asarray(person.get("pose_keypoints_2d", []), np.float32)
        if values.size == 25 * 3:
            values = values.reshape(25, 3)[list(BODY25_TO_COCO18)]
        elif values.size == NUM_JOINTS * 3:
            values = values.reshape(NUM_JOINTS, 3)
        else:
            raise PoseFormatError(f"{source}: pose_keypoints_2d has {values.size} values; expected 54 (COCO-18) "
                                  "or 75 (BODY_25)")
        people.append(values.copy())
    people = np.stack(people) if people else np.zeros((0, NUM_JOINTS, 3), np.float32)
    if height is not None and width is not None:
        people[..., :2] /= np.array([width, height], np.float32)
    elif (people[..., :2] > 1.0 + 1e-6).any():
        raise PoseFormatError(f"{source}: keypoints are in pixels; give the frame size (height, width) to normalise them")
    people[people[..., 2] <= 0] = 0.0  # OpenPose writes (0, 0, 0) for a missing joint
    return select_person(people)


def read_openpose_json(path: str | os.PathLike, height: int | None = None, width: int | None = None) -> np.ndarray:
    """An OpenPose JSON file or a folder of them (one per frame) -> float32 [f, 18, 3].

    Pixel coordinates need the frame's `height` and `width`; coordinates already in [0, 1]
    (OpenPose's `--keypoint_scale 3`) do not.
    """
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise PoseFormatError(f"{path}: no .json files in this folder")
    frames = []
    for file in files:
        try:
            document = json.loads(file.read_text())
        except FileNotFoundError:
            raise PoseFormatError(f"{file}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PoseFormatError(f"{file}: not valid JSON ({error})") from None
        frames.append(_openpose_people(document, str(file), height, width))
    return check_keypoints(frames, str(path))


def load_keypoints(path: str | os.PathLike, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Any supported keypoint file -> float32 [f, 18, 3] (see the module docstring).

    `.npy`: ours (numeric) or DWPose (object array); `.npz`: a `keypoints` array (the synthetic
    clips' sidecar); `.json` or a folder: OpenPose. Raises PoseFormatError (or
    FileNotFoundError) naming the file and the reason.
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".json":
        return read_openpose_json(path, height, width)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return check_keypoints(archive["keypoints"], str(path))
        except KeyError:
            raise PoseFormatError(f"{path}: no 'keypoints' array in this .npz") from None
        except ValueError as error:
            raise PoseFormatError(f"{path}: cannot read ({error})") from None
    if suffix != ".npy":
        raise PoseFormatError(f"{path}: unknown keypoint file type '{suffix}' (expected .npy, .npz or .json)")
    try:
        array = load_object_npy(path)
    except (UnsafePickleError, ValueError) as error:
        raise PoseFormatError(str(error)) from None
    if array.dtype == object:
        return _dwpose_sequence(array, str(path))
    return check_keypoints(array, str(path))


def save_keypoints(path: str | os.PathLike, keypoints) -> Path:
    """Write keypoints [f, 18, 3] as a plain float32 .npy (no pickle), atomically."""
    from fashionflow.utils import atomic_path

    keypoints = check_keypoints(keypoints)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, keypoints, allow_pickle=False)
    return Path(path)
