"""What `inference.py` does: conditioning images in, videos + stills out, bad inputs reported.

For every input (an image file, or a random frame of a test video as the released inference
does) and every one of `num_videos` samples it writes, into the output folder:
    NAME_K.mp4          the video, H.264 / yuv420p (plays in browsers)
    NAME_K_input.png    the conditioning image as the model sees it (resized), followed by the
                        reference images when there are any
    NAME_K_frames.png   a contact sheet: evenly spaced frames in one strip
and, for a pose-driven video (`Settings.poses`):
    NAME_K_poses.png     the driving skeletons above the generated frames
    NAME_K_alignment.png the input's own pose beside the first aligned driving pose, over the input
Existing files are never overwritten: K continues after the last video already there (use
`overwrite=True` to replace). A bad input is one line on stderr; the others still run.
Video j of the run (in input order) is seeded with `seed + j`, whatever the device or batch.
"""

from __future__ import annotations

import glob
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fashionflow.utils import atomic_write_text
from fashionflow.images import ImageLoadError, frame_to_tensor, list_images, load_image, random_video_frame, to_uint8
from fashionflow.video_io import VideoReadError, contact_sheet, list_videos, write_image, write_mp4


@dataclass
class Source:
    """One conditioning input: an image file, or a video whose random frame is used."""

    name: str
    path: Path
    is_video: bool = False


@dataclass
class Settings:
    num_videos: int = 1
    num_frames: Optional[int] = 70  # None: as many as the driving poses have
    steps: Optional[int] = None
    guidance: float = 1.0
    pose_guidance: float = 1.0  # towards the driving poses (needs poses)
    reference_guidance: float = 1.0  # towards the references (needs references)
    init_strength: float = 1.0
    routed_init_strength: Optional[float] = None  # when frames start from their routed views (None: init_strength)
    seed: int = 0
    fps: float = 25.0
    decode_chunk_size: int = 8
    resize: str = "stretch"
    precision: str = "auto"
    overwrite: bool = False
    references: tuple[str, ...] = ()  # reference image files, for every input
    num_references: int = 0  # for video inputs: references from other frames of the video
    reference_keypoints: tuple = ()  # the pose [18, 3] of each of `references` (model.reference_pose_routing)
    poses: Optional[np.ndarray] = None  # driving keypoints [f, 18, 3] for every input (pose-driven mode)
    pose_aspect: Optional[float] = None  # width / height of the frames the poses come from (None: the model's)
    align: bool = True  # fit the driving poses to the person in each input


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Keep the console to our own lines: no library loading bars or backend notices."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def collect_sources(images: list[str], dataset: Optional[str]) -> tuple[list[Source], int]:
    """Expand --image files/folders and --dataset; returns (sources, number of bad arguments reported)."""
    sources, failures = [], 0
    for item in images:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                warn(f"{path}: folder has no image files")
                failures += 1
            sources += [Source(p.stem, p) for p in found]
        else:
            sources.append(Source(path.stem, path))  # missing files are reported when loaded
    if dataset is not None:
        folder = Path(dataset)
        videos = list_videos(folder) if folder.is_dir() else []
        if not videos:
            warn(f"{folder}: {'no video files in the folder' if folder.is_dir() else 'folder not found'}")
            failures += 1
        sources += [Source(p.stem, p, is_video=True) for p in videos]
    return sources, failures


def conditioning_image(source: Source, height: int, width: int, resize: str, rng: random.Random
                       ) -> tuple[torch.Tensor, Optional[int]]:
    """(float [3, height, width] in [0, 1], index of the frame for a video source, else None);
    ImageLoadError / VideoReadError with one line when unusable."""
    if source.is_video:
        frame, index = random_video_frame(source.path, rng)
        return frame_to_tensor(frame, height, width, resize), index
    return load_image(source.path, height, width, resize), None


def video_references(path: Path, exclude: int, count: int, height: int, width: int, resize: str
                     ) -> list[torch.Tensor]:
    """`count` frames spread evenly over the whole video, never its conditioning frame `exclude`,
    as float [3, height, width] in [0, 1] (the projection's reference candidates, at inference)."""
    from fashionflow.video_io import read_video

    frames, _ = read_video(path)
    others = [i for i in range(len(frames)) if i != exclude]
    if not others:
        raise VideoReadError(f"{path}: has no frame besides the conditioning frame to use as a reference")
    index = np.linspace(0, len(others) - 1, min(count, len(others))).round().astype(int)
    return [frame_to_tensor(frames[others[i]], height, width, resize) for i in index]


def conditioning_sheet(image01: torch.Tensor, references: list[torch.Tensor]) -> np.ndarray:
    """The conditioning image, then its reference images, side by side: uint8 [H, (1 + r) W, 3]."""
    return np.concatenate([to_uint8(image) for image in (image01, *references)], axis=1)


def record_conditioning_frame(output_dir: Path, video_name: str, frame_index: int) -> None:
    """Add {NAME_K: frame index} to output_dir/conditioning_frames.json (what `evaluate.py
    --real-offsets` reads to line a generated video up with the real continuation)."""
    path = output_dir / "conditioning_frames.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    table[video_name] = frame_index
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")


def first_free_index(output_dir: Path, name: str) -> int:
    """The first K with no NAME_K.mp4 already in `output_dir` after all existing ones."""
    taken = [int(p.stem.rsplit("_", 1)[1]) for p in output_dir.glob(f"{glob.escape(name)}_*.mp4")
             if p.stem.rsplit("_", 1)[0] == name and p.stem.rsplit("_", 1)[1].isdigit()]
    return max(taken) + 1 if taken else 0


def pose_strip(keypoints: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The driving skeletons above the generated frames they drove: uint8 [2 H, n W, 3]."""
    from fashionflow.pose.render import render_poses

    skeletons = render_poses(keypoints, frames.shape[1], frames.shape[2])
    return np.concatenate([contact_sheet(skeletons), contact_sheet(frames)], axis=0)


def write_pose_outputs(stem: Path, output, image01: torch.Tensor) -> None:
    """NAME_K_poses.png (skeletons above frames) and NAME_K_alignment.png (the input's pose
    beside the first aligned driving pose, over the input) of a pose-driven video."""
    from fashionflow.pose.align import alignment_preview

    frames, keypoints, reference = output.frames[0], output.poses[0], output.reference_poses[0]
    write_image(stem.with_name(stem.name + "_poses.png"), pose_strip(keypoints, frames))
    image = to_uint8(image01)
    # the first *driving* pose (frame 1): frame 0's pose is the reference's own
    preview = alignment_preview(reference, keypoints[1:], image.shape[0], image.shape[1], image)
    write_image(stem.with_name(stem.name + "_alignment.png"), preview)


def generate_all(pipe, sources: list[Source], output_dir: str | Path, settings: Settings, device: torch.device
                 ) -> tuple[list[Path], int]:
    """Run the pipeline over every source; returns (videos written, number of failures)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    height, width = pipe.image_size
    rng = random.Random(settings.seed)  # released: random frame of each test video
    written, failures, video_index, seconds = [], 0, 0, 0.0
    frame_count = settings.num_frames
    try:
        shared_references = [load_image(path, height, width, settings.resize) for path in settings.references]
    except ImageLoadError as error:
        warn(f"{error} (--reference): no videos made")
        return [], len(sources)
    for source in sources:
        try:
            image, frame_index = conditioning_image(source, height, width, settings.resize, rng)
            references = shared_references
            if source.is_video and settings.num_references:
                references = video_references(source.path, frame_index, settings.num_references, height, width,
                                              settings.resize)
        except (ImageLoadError, VideoReadError) as error:
            warn(str(error))
            failures += 1
            video_index += settings.num_videos
            continue
        start = 0 if settings.overwrite else first_free_index(output_dir, source.name)
        for k in range(start, start + settings.num_videos):
            generator = torch.Generator(device=device).manual_seed(settings.seed + video_index)
            video_index += 1
            pipe.set_progress_bar_config(desc=f"{source.name}_{k}", leave=False)
            began = time.perf_counter()
            output = pipe(image, num_frames=settings.num_frames, num_inference_steps=settings.steps,
                          guidance_scale=settings.guidance, init_strength=settings.init_strength,
                          routed_init_strength=settings.routed_init_strength,
                          generator=[generator], output_type="np", reference_images=[references] if references else None,
                          decode_chunk_size=settings.decode_chunk_size, precision=settings.precision,
                          poses=settings.poses, align=settings.align, pose_aspect=settings.pose_aspect,
                          reference_keypoints=[list(settings.reference_keypoints)]
                          if settings.reference_keypoints and references is shared_references else None,
                          pose_guidance_scale=settings.pose_guidance if settings.poses is not None else 1.0,
                          reference_guidance_scale=settings.reference_guidance if references else 1.0)
            frames = output.frames[0]
            frame_count = len(frames)
            seconds += time.perf_counter() - began
            try:
                path = write_mp4(output_dir / f"{source.name}_{k}.mp4", frames, fps=settings.fps)
                write_image(output_dir / f"{source.name}_{k}_input.png", conditioning_sheet(image, references))
                write_image(output_dir / f"{source.name}_{k}_frames.png", contact_sheet(frames))
                if output.poses is not None:
                    write_pose_outputs(output_dir / f"{source.name}_{k}", output, image)
            except (OSError, RuntimeError, ValueError) as error:
                warn(f"{output_dir / source.name}_{k}.mp4: cannot write ({error})")
                failures += 1
                continue
            if frame_index is not None:
                record_conditioning_frame(output_dir, f"{source.name}_{k}", frame_index)
            written.append(path)
            print(f"wrote {path}", flush=True)
    per_video = f"{seconds / len(written):.1f} s per video" if written else "no videos"
    print(f"{len(written)} video(s) in {output_dir}/ ({per_video}, {frame_count} frames at "
          f"{height}x{width}); {failures} failed", flush=True)
    return written, failures
