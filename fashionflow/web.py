"""The web page: upload a photo, get the video (`python app.py`; README section "Web page").

A Gradio page over the same pipeline and writer as `inference.py`
(`fashionflow.pipeline.load_pipeline`, `fashionflow.generate.generate_all`):

    photo + sampler, steps, guidance, init strength, frames, seed, resize
      (+ reference views, for models trained with model.max_references;
         + a driving motion or pose video, for models trained with model.pose_guider)
      -> Generate (queued: one request at a time; progress from the pipeline's tqdm bar)
      -> the H.264 mp4 in a <video>, the frame strip, the files to download.

Everything stays on the machine: analytics off, the page's scripts and fonts served by the app
itself, the model read from a folder. Bad input (no photo, not an image, corrupt, too small,
too many pixels, settings out of range) and a model folder that does not load are one-line
messages on the page (`gr.Error`), never a stack trace, and the page stays usable after them;
a file over the upload limit is refused by the server before it is stored.

The endpoint is `/generate`: the photo first, every other input defaulted, the video returned:
`gradio_client.Client(url).predict(handle_file("photo.jpg"), api_name="/generate")`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read by gradio when imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pipeline folders are local; never reach for the hub

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fashionflow.config import SampleConfig  # noqa: E402
from fashionflow.diffusion import SAMPLERS, default_steps, switch_sampler  # noqa: E402
from fashionflow.generate import Settings, Source, generate_all, quiet_libraries  # noqa: E402
from fashionflow.images import RESIZE_POLICIES, ImageLoadError, list_images, open_image  # noqa: E402

log = logging.getLogger("fashionflow.web")

MAX_FILE_SIZE = "20mb"  # uploads above this are refused by the server (gradio's max_file_size)
MAX_PIXELS = 40_000_000  # photos with more pixels are refused before they are decoded
MAX_STEPS = 1000  # the released DDPM runs all 1000 training steps
QUEUE_SIZE = 16  # requests waiting beyond this get "queue is full"
API_DESCRIPTION = "Animate one photo: returns the video (H.264 mp4). Only the photo is required."


@dataclass
class Model:
    """The pipeline the page runs, or the line saying why its folder did not load."""

    checkpoint: Path
    device: str = "cpu"
    pipe: Any = None  # FashionFlowPipeline
    cfg: Any = None  # FashionFlowConfig saved with the folder, or None
    error: Optional[str] = None
    schedulers: dict = field(default_factory=dict)  # sampler name -> scheduler, made on first use

    def scheduler(self, sampler: str):
        """The folder's noise schedule in the given sampler (`fashionflow.diffusion.switch_sampler`)."""
        if sampler not in self.schedulers:
            self.schedulers[sampler] = switch_sampler(self.pipe.scheduler, sampler)
        return self.schedulers[sampler]


def load_model(checkpoint: str | os.PathLike, device: str = "cpu") -> Model:
    """Load a pipeline folder; a folder that does not load gives a Model with `error` set."""
    from fashionflow.pipeline import load_pipeline

    checkpoint = Path(checkpoint)
    quiet_libraries()
    try:
        pipe, cfg = load_pipeline(checkpoint, device=device)
    except Exception as error:  # any failure (missing files, bad json, bad weights) is a message on the page
        log.debug("cannot load %s", checkpoint, exc_info=True)  # the caller shows and logs the message
        return Model(checkpoint, device, error=f"The model in {checkpoint} did not load: {_first_line(error)}")
    return Model(checkpoint, device, pipe, cfg)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


@dataclass
class Defaults:
    """What the page's controls start at: the folder's config.yaml `sample` section, else the
    released values with the folder's saved sampler; and the frame counts the model takes."""

    sample: SampleConfig = field(default_factory=SampleConfig)
    frame_multiple: int = 2  # temporal compression: frames must be a multiple of this
    max_frames: int = 140

    @classmethod
    def of(cls, model: Model) -> "Defaults":
        if model.pipe is None:
            return cls()
        if model.cfg is not None:
            sample = model.cfg.sample
        else:
            sampler = next(name for name in SAMPLERS if type(model.scheduler(name)) is type(model.pipe.scheduler))
            sample = SampleConfig(sampler=sampler, num_inference_steps=default_steps(model.pipe.scheduler))
        return cls(sample, model.pipe.unet.frame_multiple, max(140, 2 * sample.num_frames))


# --- one request ---------------------------------------------------------------------------


def upload_file(upload) -> tuple[Path, str]:
    """An upload (gradio's file payload, or a path) -> (file on disk, name the user gave it)."""
    if isinstance(upload, dict):
        path = Path(upload.get("path") or "")
        return path, Path(upload.get("orig_name") or path.name).name
    return Path(upload), Path(upload).name


def photo_file(photo) -> tuple[Path, str]:
    """The uploaded photo -> (file on disk, name the user gave it); gr.Error when there is none."""
    if photo is None:
        raise gr.Error("Upload a photo first (or click one of the examples).", print_exception=False)
    return upload_file(photo)


def check_photo(path: Path, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """gr.Error naming the photo and the reason when it cannot be used (`fashionflow.images.open_image`)."""
    try:
        with Image.open(path) as header:  # reads the size only; refuse huge photos before decoding them
            width, height = header.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        width = height = 0  # open_image below says what is wrong
    if width * height > max_pixels:
        raise gr.Error(f"{name}: the photo has too many pixels ({width}x{height}; at most "
                       f"{max_pixels / 1e6:.0f} megapixels)", print_exception=False)
    try:
        open_image(path)
    except ImageLoadError as error:
        raise gr.Error(str(error).replace(str(path), name, 1), print_exception=False) from None


def _whole(value, label: str, low: int, high: int, multiple: int = 1) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{label} must be a number, got {value!r}", print_exception=False) from None
    if number != int(number) or not low <= number <= high or int(number) % multiple:
        every = f", a multiple of {multiple}" if multiple > 1 else ""
        raise gr.Error(f"{label} must be a whole number from {low} to {high}{every}; got {value}",
                       print_exception=False)
    return int(number)


def _fraction(value, label: str, low: float, high: float, low_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{label} must be a number, got {value!r}", print_exception=False) from None
    if not (low < number if low_open else low <= number) or number > high:
        raise gr.Error(f"{label} must be in {'(' if low_open else '['}{low}, {high}]; got {value}",
                       print_exception=False)
    return number


def request_settings(defaults: Defaults, sampler, steps, guidance, init_strength, frames, seed, resize
                     ) -> tuple[str, Settings]:
    """The page's values (or an API caller's) checked -> (sampler, generate.Settings); gr.Error when out of range."""
    if sampler not in SAMPLERS:
        raise gr.Error(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}", print_exception=False)
    if resize not in RESIZE_POLICIES:
        raise gr.Error(f"resize must be one of {', '.join(RESIZE_POLICIES)}; got {resize!r}", print_exception=False)
    multiple = defaults.frame_multiple
    return sampler, Settings(
        num_videos=1, steps=_whole(steps, "steps", 1, MAX_STEPS),
        num_frames=_whole(frames, "frames", multiple, defaults.max_frames, multiple),
        guidance=_fraction(guidance, "guidance", 1.0, 30.0),
        init_strength=_fraction(init_strength, "init strength", 0.0, 1.0, low_open=True),
        routed_init_strength=defaults.sample.routed_init_strength,  # the slider of a routing model overrides it
        seed=_whole(seed, "seed", 0, 2 ** 63 - 1), fps=defaults.sample.fps,
        decode_chunk_size=defaults.sample.decode_chunk_size,
        resize=resize, overwrite=True)


def safe_stem(name: str) -> str:
    """An upload's name -> a file stem for the outputs (letters, digits, . _ -)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")[:60]
    return stem or "photo"


# --- optional inputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class OptionalInput:
    """An input only some models take (shared design: reference views, pose): on the page when
    `supported(model)`, as `component(model)`, and /generate's argument `name`; `convert(value,
    runner)` turns its raw value (gradio's payload: a file dict, a list of them, a number...)
    into `generate.Settings` fields {field: value} (gr.Error when unusable; `runner` gives the
    model and the upload limits)."""

    name: str
    supported: Callable[[Model], bool]
    component: Callable[[Model], gr.components.Component]
    convert: Callable[[Any, "Runner"], dict]


def max_references(model: Model) -> int:
    """How many reference views the loaded model takes (model.max_references; 0: none, as released)."""
    return model.pipe.unet.config.get("max_references", 0) if model.pipe is not None else 0


def reference_upload(model: Model) -> gr.File:
    return gr.File(label="Reference views (back, side...)", file_count="multiple", file_types=["image"],
                   height=140, elem_id="references")


def reference_files(uploads, runner: "Runner") -> dict:
    """Uploaded reference views -> {"references": their files} for `generate.Settings` (as `inference.py
    --reference`), each checked like the photo; gr.Error naming the file, or saying how many the model takes."""
    uploads = list(uploads) if isinstance(uploads, (list, tuple)) else [uploads]
    most = max_references(runner.model)
    if len(uploads) > most:
        raise gr.Error(f"{len(uploads)} reference views given; this model takes at most {most} "
                       "(model.max_references)", print_exception=False)
    files = []
    for upload in uploads:
        path, name = upload_file(upload)
        check_photo(path, name, runner.max_pixels)
        files.append(str(path))
    return {"references": tuple(files)}


def pose_guided(model: Model) -> bool:
    """Whether the loaded model follows driving poses (model.pose_guider; off as released)."""
    return model.pipe is not None and bool(model.pipe.unet.config.get("pose_guider_channels"))


NO_MOTION = "none"


def motion_menu(model: Model) -> gr.Dropdown:
    from fashionflow.pose import MOTIONS

    return gr.Dropdown([NO_MOTION, *MOTIONS], value=NO_MOTION, label="Driving motion",
                       info="a built-in motion the video follows (fitted to the person in the photo)", elem_id="motion")


def driving_motion(name, runner: "Runner") -> dict:
    """A built-in motion's name -> {"poses", "pose_aspect"} for `generate.Settings` (as `inference.py --motion`);
    the pipeline resamples it to the video's frames."""
    from fashionflow.pose import MOTION_ASPECT, MOTIONS, motion_keypoints

    if name == NO_MOTION:
        return {}
    if name not in MOTIONS:
        raise gr.Error(f"motion must be one of {', '.join((NO_MOTION, *MOTIONS))}; got {name!r}", print_exception=False)
    return {"poses": motion_keypoints(name), "pose_aspect": MOTION_ASPECT}


def pose_video_upload(model: Model) -> gr.File:
    return gr.File(label="Driving pose video (its poses drive the video)", file_types=["video"], height=100,
                   elem_id="pose-video")


def driving_video(upload, runner: "Runner") -> dict:
    """An uploaded driving video -> its poses (MediaPipe, `fashionflow.pose.extract_keypoints`) as
    {"poses", "pose_aspect"} (as `inference.py --pose-video`); gr.Error naming the file when unusable."""
    from fashionflow.pose import extract_keypoints
    from fashionflow.video_io import VideoReadError, read_video

    path, name = upload_file(upload)
    try:
        frames, _ = read_video(path)
        keypoints = extract_keypoints(frames)
    except (ValueError, OSError, ImportError, VideoReadError) as error:  # unreadable, no person, no mediapipe
        reason = _first_line(error)
        if reason.startswith((str(path), "frames array")):  # named by the server's copy or the frames' shape
            reason = reason.split(": ", 1)[-1]
        raise gr.Error(f"{name}: {reason}", print_exception=False) from None
    return {"poses": keypoints, "pose_aspect": frames.shape[2] / frames.shape[1]}


MAX_CONDITION_GUIDANCE = 10.0


def condition_guidance(field: str, towards: str, supported: Callable[[Model], bool]) -> OptionalInput:
    """A slider of guidance towards one optional input: /generate's argument and `generate.Settings`
    field `field`, starting at the folder's `sample.{field}_scale` (gr.Error when out of range)."""
    label = field.replace("_", " ")
    return OptionalInput(
        field, supported=supported,
        component=lambda model: gr.Slider(
            1.0, MAX_CONDITION_GUIDANCE, value=getattr(Defaults.of(model).sample, f"{field}_scale"), step=0.1,
            label=label.capitalize(), info=f"towards {towards}; 1 = off, each other value doubles the time",
            elem_id=field.replace("_", "-")),
        convert=lambda value, runner: {field: _fraction(value, label, 1.0, MAX_CONDITION_GUIDANCE)})


def pose_routed(model: Model) -> bool:
    """Whether the loaded model routes each frame to the reference views posed like it (model.reference_pose_routing)."""
    return pose_guided(model) and max_references(model) > 0 and model.pipe.unet.config.get("reference_pose_routing", 0) > 0


def routed_init_strength_slider(model: Model) -> gr.Slider:
    sample = Defaults.of(model).sample
    value = sample.init_strength if sample.routed_init_strength is None else sample.routed_init_strength
    return gr.Slider(0.05, 1.0, value=value, step=0.05, label="Init strength with a motion and reference views",
                     info="as Init strength, when each frame starts from the view it is posed like",
                     elem_id="routed-init-strength")


# Inputs the loaded model may take besides the photo. Each appears on the page (under the photo)
# only when the model supports it, and in /generate's arguments after the settings, so the first
# argument stays the photo and every other argument keeps a default (None or empty: as without
# it). The Settings fields an entry sets must reach the pipeline in `generate_all`.
OPTIONAL_INPUTS: tuple[OptionalInput, ...] = (
    OptionalInput("references", supported=lambda model: max_references(model) > 0, component=reference_upload,
                  convert=reference_files),
    OptionalInput("motion", supported=pose_guided, component=motion_menu, convert=driving_motion),
    OptionalInput("pose_video", supported=pose_guided, component=pose_video_upload, convert=driving_video),
    condition_guidance("reference_guidance", "the reference views", lambda model: max_references(model) > 0),
    condition_guidance("pose_guidance", "the driving motion", pose_guided),
    OptionalInput("routed_init_strength", supported=pose_routed, component=routed_init_strength_slider,
                  convert=lambda value, runner: {"routed_init_strength": _fraction(
                      value, "routed init strength", 0.0, 1.0, low_open=True)}),
)


def with_optional(settings: Settings, runner: "Runner", values: dict) -> Settings:
    """`settings` with the fields each of the runner's optional inputs sets from its value ({name: value};
    None or empty: left as they are)."""
    set_by = {}  # Settings field -> the input that set it
    for option in runner.optional:
        if values.get(option.name) in (None, "", []):
            continue
        fields = option.convert(values[option.name], runner)
        for name in fields:
            if name in set_by:
                raise gr.Error(f"give {set_by[name]} or {option.name}, not both", print_exception=False)
            set_by[name] = option.name
        settings = replace(settings, **fields)
    return settings


@dataclass
class Runner:
    """Runs requests one at a time; each writes into its own folder under `workdir`, the last few kept
    (gradio copies what it serves into its own cache, which `delete_cache` empties)."""

    model: Model
    defaults: Defaults
    workdir: Path
    max_pixels: int = MAX_PIXELS
    optional: Sequence[OptionalInput] = ()  # the optional inputs on the page, in order
    keep: int = 4
    requests: int = 0

    def __post_init__(self):
        # /generate's signature names each optional input, default None (so API callers may leave it out)
        signature = inspect.signature(self.__call__)
        fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        named = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=None) for o in self.optional]
        self.__signature__ = signature.replace(parameters=fixed + named)

    def __call__(self, photo, sampler=None, steps=None, guidance=None, init_strength=None, frames=None, seed=None,
                 resize="stretch", progress=gr.Progress(track_tqdm=True), **optional_values):
        """-> (video file, {"strip": frame strip png, "files": [mp4, strip, input png (, poses, alignment png)]})."""
        if self.model.pipe is None:
            raise gr.Error(self.model.error, print_exception=False)
        d = self.defaults.sample
        sampler, settings = request_settings(
            self.defaults, d.sampler if sampler is None else sampler, d.num_inference_steps if steps is None else steps,
            d.guidance_scale if guidance is None else guidance,
            d.init_strength if init_strength is None else init_strength,
            d.num_frames if frames is None else frames, d.seed if seed is None else seed, resize)
        path, name = photo_file(photo)
        progress(0, desc="reading the photo")
        check_photo(path, name, self.max_pixels)
        settings = with_optional(settings, self, optional_values)
        output_dir = self._new_folder()
        pipe = self.model.pipe
        pipe.scheduler = self.model.scheduler(sampler)
        try:
            written, failures = generate_all(pipe, [Source(safe_stem(name), path)], output_dir, settings,
                                             torch.device(self.model.device))
        except Exception as error:  # the page gets one line; the server log gets the traceback
            log.exception("generation failed for %s", name)
            raise gr.Error(f"{name}: generation failed ({type(error).__name__}: {_first_line(error)})",
                           print_exception=False) from None
        if failures or not written:
            raise gr.Error(f"{name}: the video could not be written (the server log says why)", print_exception=False)
        video = written[0]
        strip = video.with_name(f"{video.stem}_frames.png")
        files = [str(video), str(strip), str(video.with_name(f"{video.stem}_input.png"))]
        files += [str(path) for path in (video.with_name(f"{video.stem}_poses.png"),  # pose-driven videos
                                         video.with_name(f"{video.stem}_alignment.png")) if path.is_file()]
        return str(video), {"strip": str(strip), "files": files}

    def _new_folder(self) -> Path:
        self.requests += 1
        folder = self.workdir / f"request-{self.requests:06d}"
        folder.mkdir(parents=True)
        for old in sorted(self.workdir.glob("request-*"))[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return folder


def show_extras(result: Optional[dict]):
    """The second half of a request: the strip and the downloads from what /generate kept in the page's state."""
    if not result:
        return None, None
    return result["strip"], result["files"]


# --- the page ------------------------------------------------------------------------------


def shown_path(path: Path) -> Path:
    """`path` relative to the working folder when inside it (what the user typed, usually)."""
    path = Path(path).resolve()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def model_status(model: Model, is_demo: bool) -> str:
    if model.pipe is None:
        return f"**Error:** {model.error}. Start the page with `--checkpoint` set to a pipeline folder."
    height, width = model.pipe.image_size
    views = f", up to {max_references(model)} reference views" if max_references(model) else ""
    text = f"Model: `{shown_path(model.checkpoint)}` ({height}x{width} videos{views}, device {model.device})."
    if is_demo:
        text += (" This is the bundled demo model, trained briefly on a CPU on synthetic figures: "
                 "its videos will not look real.")
    return text


def build_page(model: Model, workdir: str | os.PathLike, examples: Sequence[Path] = (), is_demo: bool = False,
               max_pixels: int = MAX_PIXELS, optional: Sequence[OptionalInput] = OPTIONAL_INPUTS) -> gr.Blocks:
    """The page's layout and events (not yet launched)."""
    defaults = Defaults.of(model)
    shown = [option for option in optional if option.supported(model)]
    runner = Runner(model, defaults, Path(workdir), max_pixels, shown)
    with gr.Blocks(title="FashionFlow", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
        gr.Markdown("# FashionFlow\nOne photo of a person in a garment in, a short video of them turning and "
                    "posing out.")
        gr.Markdown(model_status(model, is_demo), elem_id="model-status")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(label="Photo", type="filepath", sources=["upload", "clipboard"], height=320,
                                 elem_id="photo")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[photo], label="Examples (click one)")
                extra = [option.component(model) for option in shown]
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Accordion("Settings", open=True):
                    sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sample.sampler, label="Sampler",
                                          info="ddpm: released; ddim, dpm: fast with 25 to 50 steps", elem_id="sampler")
                    steps = gr.Slider(1, MAX_STEPS, value=defaults.sample.num_inference_steps, step=1, label="Steps",
                                      elem_id="steps")
                    guidance = gr.Slider(1.0, 30.0, value=defaults.sample.guidance_scale, step=0.1, label="Guidance",
                                         info="1 = off; above 1 only for models trained with cond_dropout",
                                         elem_id="guidance")
                    init_strength = gr.Slider(0.05, 1.0, value=defaults.sample.init_strength, step=0.05,
                                              label="Init strength",
                                              info="1 = from pure noise (released); below 1 from the photo, noised",
                                              elem_id="init-strength")
                    frames = gr.Slider(defaults.frame_multiple, defaults.max_frames, value=defaults.sample.num_frames,
                                       step=defaults.frame_multiple, label="Frames", elem_id="frames")
                    seed = gr.Number(value=defaults.sample.seed, precision=0, minimum=0, label="Seed", elem_id="seed")
                    resize = gr.Radio(list(RESIZE_POLICIES), value="stretch", label="Other aspect ratios",
                                      info="stretch (released), centre-crop, or pad with white", elem_id="resize")
            with gr.Column():
                video = gr.Video(label="Video (H.264 mp4)", autoplay=True, loop=True, height=400, elem_id="video")
                strip = gr.Image(label="Frames", interactive=False, elem_id="strip")
                files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="download")
        result = gr.State()
        # preprocess=False: the photo reaches check_photo as the uploaded file, so a file that is not
        # an image gets our message instead of gradio's decoding error
        button.click(runner, inputs=[photo, sampler, steps, guidance, init_strength, frames, seed, resize],
                     inputs_kwargs={option.name: component for option, component in zip(shown, extra)},
                     outputs=[video, result], api_name="generate", api_description=API_DESCRIPTION,
                     preprocess=False, concurrency_limit=1, concurrency_id="generate",
                     ).then(show_extras, inputs=result, outputs=[strip, files], api_visibility="private")
    return page


def serve(checkpoint: str | os.PathLike, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu",
          examples_dir: Optional[str | os.PathLike] = None, is_demo: bool = False,
          max_file_size: str | int = MAX_FILE_SIZE, max_pixels: int = MAX_PIXELS) -> None:
    """Load the model, build the page and serve it until interrupted (a model that does not load
    is reported on the page, which still starts)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model = load_model(checkpoint, device)
    if model.error:
        log.error(model.error)
    examples = list_images(examples_dir) if examples_dir and Path(examples_dir).is_dir() else []
    with tempfile.TemporaryDirectory(prefix="fashionflow-web-") as workdir:
        page = build_page(model, workdir, examples, is_demo, max_pixels)
        page.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
        page.launch(server_name=host, server_port=port, max_file_size=max_file_size, share=False,
                    allowed_paths=[str(Path(examples_dir).resolve())] if examples else None,
                    footer_links=["api"], ssr_mode=False, mcp_server=False)
