"""Typed configuration: YAML presets in `configs/` + dotted command-line overrides.

A preset only lists what differs from the dataclass defaults, and the defaults are the
released code's settings (`configs/fashionflow.yaml` is therefore nearly empty). Usage:

    cfg = load_config("configs/tiny.yaml", ["train.lr=2e-4", "data.num_frames=8"])
    print(config_to_yaml(cfg))          # what --dry-run prints and every run saves
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ConfigError(ValueError):
    """A preset or an override names an unknown key or gives a bad value."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: plain YAML keeps
    the last silently, so a section or setting written twice would lose the first without a word."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(problem=f"{', '.join(repeated)} given twice",
                                                    problem_mark=node.start_mark)
        return super().construct_mapping(node, deep=deep)


@dataclass
class ModelConfig:
    """Space-time U-Net and conditioning adapter (FASHIONFLOW.md, "Latent U-Net")."""

    in_channels: int = 4  # latent channels of the VAE
    base_dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    resnet_depths: tuple[int, ...] = (2, 2, 2, 2)  # extra residual blocks per level
    self_attention: tuple[bool, ...] = (False, False, False, True)  # spatio-temporal attention per level
    temporal_compression: tuple[bool, ...] = (False, False, False, True)  # halve frames at that level
    cross_attention_heads: tuple[int, ...] = (1, 1, 2, 4)  # heads of the image cross-attention per level
    attention_heads: int = 8  # spatio-temporal attention (levels and middle)
    attention_head_dim: int = 64
    groups: int = 8  # GroupNorm groups
    context_dim: int = 768  # width of the image context tokens (CLIP ViT-B/32 hidden size)
    num_context_tokens: int = 50  # CLIP tokens; the adapter adds one token per latent channel
    latent_height: int = 80  # the adapter's Linear(1280, 768) depends on the latent size
    latent_width: int = 64
    gradient_checkpointing: bool = False
    # pose-driven mode (models/pose_guider.py; off = released): a small conv encoder of the
    # rendered OpenPose skeletons, its zero-initialised output added after conv_in (Animate Anyone)
    pose_guider: bool = False
    pose_guider_channels: tuple[int, ...] = (16, 32, 64, 128)  # 2^(len - 1) must be the VAE factor 8
    # several reference images (models/references.py; off = 0, released): the U-Net attends, per
    # level and per frame, to the adapter tokens of up to this many extra views of the garment
    max_references: int = 0
    # with both of the above: route each frame to the views (image, references) whose pose is like
    # the frame's (pose/similarity.py; ProFashion's pose-aware aggregation), in the image
    # cross-attention, the reference attention and the SDEdit start: logits -sharpness x pose
    # distance, per frame and view; 0 = off (the reference attention alone decides)
    reference_pose_routing: float = 0.0
    # every frame attends to frame 0's features at each level's full resolution (models/first_frame.py;
    # Tune-A-Video / Animate Anyone's ReferenceNet; off = released), zero-initialised: so the garment's
    # pattern has a path to later frames where temporal convolutions and the deep attention blur it
    first_frame_attention: bool = False
    # what the adapter feeds the image cross-attention (paper Table 2 ablation): CLIP and VAE
    # tokens (released), CLIP tokens only, VAE tokens only, or nothing ("disabled": global conditioning off)
    global_conditioning: Literal["clip_and_vae", "clip", "vae", "disabled"] = "clip_and_vae"


@dataclass
class EncodersConfig:
    """Frozen VAE and CLIP image encoder: hub ids or local folders."""

    vae: str = "CompVis/stable-diffusion-v1-4"
    vae_subfolder: Optional[str] = "vae"
    vae_scaling_factor: float = 0.18215
    image_encoder: str = "openai/clip-vit-base-patch32"
    # released: [0, 1] images into the VAE, CLIP sees the image rescaled by 1/255 twice.
    # correct:  [-1, 1] images into the VAE, CLIP sees the image as its processor expects.
    preprocessing: Literal["released", "correct"] = "released"


@dataclass
class DiffusionConfig:
    """Noise schedule and training objective (FASHIONFLOW.md, "Diffusion")."""

    num_train_timesteps: int = 1000
    # released: the authors' "cosine" betas; others are diffusers' named schedules.
    beta_schedule: Literal["released", "linear", "scaled_linear", "squaredcos_cap_v2"] = "released"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # released: epsilon. v_prediction (Salimans & Ho 2022) and zero terminal SNR (Lin et al. 2024,
    # "Common diffusion noise schedules and sample steps are flawed") are training-side remedies for
    # the 0.6 % of signal left at t = T - 1; zero terminal SNR needs v_prediction.
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    rescale_betas_zero_snr: bool = False
    # where the sampling timesteps sit: "default" = each sampler's own (DDPM leading, as released;
    # DDIM and DPM-Solver++ trailing, so the first step starts at t = T - 1)
    timestep_spacing: Literal["default", "leading", "trailing", "linspace"] = "default"
    loss_on_first_frame: bool = True  # released: frame 0 (clean, zero target) is in the loss
    loss_reduction: Literal["sum_frames", "mean"] = "sum_frames"  # released: per-frame MSE summed
    # released: frame 0 is the clean image latent in training and sampling; False (paper Table 2,
    # "global conditioning only"): frame 0 is noised and predicted like the others
    local_conditioning: bool = True


@dataclass
class DataConfig:
    """Clip extraction and latent projection (FASHIONFLOW.md, "Data")."""

    num_frames: int = 70
    height: int = 640
    width: int = 512
    clip_policy: Literal["random_window", "k_random_windows", "all_windows"] = "random_window"
    clips_per_video: int = 1  # for k_random_windows
    start_window: int = 241  # released: a clip lies within the first 241 frames
    resize: Literal["stretch", "crop"] = "stretch"  # released: bilinear resize ignoring aspect
    latent_dtype: Literal["float32", "float16"] = "float32"
    sample_latent: bool = True  # released: a sampled VAE latent, not the mean
    seed: int = 0
    # store each clip's OpenPose-18 keypoints [f, 18, 3] with its latents (for model.pose_guider):
    # a video's NAME.pose.npz sidecar when there is one (synthetic clips), else extracted (MediaPipe)
    poses: bool = False
    # frames spread over the whole video stored with every clip as reference candidates (VAE
    # latent distribution, CLIP tokens, image, frame index) for model.max_references; 0 = none
    reference_candidates: int = 0


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (FASHIONFLOW.md, "Training")."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 2  # per GPU
    grad_accum_steps: int = 1
    epochs: int = 2500
    max_steps: Optional[int] = None  # overrides epochs when set
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"  # after warmup; released: constant
    grad_clip: Optional[float] = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast on the device (CPU too); fp16 adds a GradScaler
    # CUDA: fp32 matmuls and convolutions on TF32 tensor cores. false = PyTorch's defaults (convs TF32,
    # matmuls full fp32), as the released code ran.
    tf32: bool = False
    deterministic: bool = False  # deterministic kernels (for bitwise resume on CUDA; README "Training")
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the U-Net
    compile_backend: str = "inductor"  # "eager" / "aot_eager": trace only, no code generation (tests)
    compile_mode: Optional[Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]] = None
    ema_decay: Optional[float] = None  # e.g. 0.9999; None = no EMA (released)
    cond_dropout: float = 0.0  # probability of dropping the image context (for guidance)
    # with model.pose_guider: probability that a clip trains without its poses, so one model
    # does both pose-driven and spontaneous motion
    pose_dropout: float = 0.1
    # with model.max_references: probability that a clip trains without references; otherwise it
    # gets 1..max_references of its video's candidates (other frames than its conditioning frame)
    reference_dropout: float = 0.1
    # which candidates fill those slots: "uniform" (any valid one, equally likely) or "dissimilar"
    # (the first slot always holds the candidate whose VAE latent is farthest from the conditioning
    # image's, usually the other side of the garment; the others uniform): trains the "use the
    # back view" case on every clip whose video shows its back, not on a random share of them
    reference_draw: Literal["uniform", "dissimilar"] = "uniform"
    # what trains: "all" (released) or "new_conditions": only the optional condition modules
    # (reference attention, pose guider); the base U-Net and adapter stay frozen, as ControlNet
    # and IP-Adapter fine-tune a frozen Stable Diffusion
    trainable: Literal["all", "new_conditions"] = "all"
    seed: int = 0
    num_workers: int = 2
    log_every: int = 40  # steps
    sample_every: int = 5000  # steps; 0 disables
    checkpoint_every: int = 5000  # steps
    keep_last: int = 3
    validation_image: Optional[str] = None  # preview conditioning image; None = the first training clip's
    sample_sampler: Literal["ddpm", "ddim", "dpm"] = "ddim"  # training-time previews (released: 1000-step DDPM)
    sample_steps: int = 25
    # held-out loss (`train.py --val-latents DIR`): every `val_every` steps, the EMA weights'
    # denoising loss on the first `val_clips` clips at `val_timesteps` fixed timesteps, fixed draws
    val_every: int = 1000  # steps; 0 disables
    val_clips: int = 16
    val_timesteps: int = 5


@dataclass
class SampleConfig:
    """Sampling defaults for inference and training-time previews."""

    sampler: Literal["ddpm", "ddim", "dpm"] = "ddpm"
    num_inference_steps: int = 1000
    guidance_scale: float = 1.0
    # guidance towards the driving poses / the reference views, against the same inputs without
    # them (fashionflow.diffusion.Guidance); 1.0 = off
    pose_guidance_scale: float = 1.0
    reference_guidance_scale: float = 1.0
    # 1.0 = start from pure noise (released); s < 1 = start s of the way down from frame 0
    # repeated and noised (SDEdit / ConsistI2V FrameInit; fashionflow.diffusion.first_frame_start)
    init_strength: float = 1.0
    # the same for videos whose frames each start from the view they are posed like (pose routing
    # with references, `routed_start`; null: init_strength): every frame's start then already
    # looks like it, so less of it needs noising away (docs/differences.md)
    routed_init_strength: Optional[float] = None
    num_frames: int = 70
    fps: int = 25
    decode_chunk_size: int = 8
    seed: int = 0
    # decoder output -> [0, 1]: auto follows encoders.preprocessing (released: clamp to [0, 1],
    # as the released inference; correct: x / 2 + 0.5). The released training-time sampler's
    # x / 2 + 0.5 on [0, 1]-trained models is available as from_minus1.
    output_range: Literal["auto", "clamp01", "from_minus1"] = "auto"


def routed_init_strength(given: Optional[float], init_strength: Optional[float],
                         sample: Optional[SampleConfig]) -> Optional[float]:
    """The routed start's strength from command-line values: `given` (--routed-init-strength),
    else a given `init_strength` (--init-strength alone sets both), else the config's
    sample.routed_init_strength (None: the pipeline uses init_strength)."""
    if given is not None:
        return given
    if init_strength is not None:
        return init_strength
    return sample.routed_init_strength if sample is not None else None


@dataclass
class FashionFlowConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> "FashionFlowConfig":
        m, d = self.model, self.data
        n = len(m.dim_mults)
        for name in ("resnet_depths", "self_attention", "temporal_compression", "cross_attention_heads"):
            if len(getattr(m, name)) != n:
                raise ConfigError(f"model.{name} has {len(getattr(m, name))} entries but model.dim_mults has {n}")
        for level, (mult, heads) in enumerate(zip(m.dim_mults, m.cross_attention_heads)):
            width = m.base_dim * mult
            if width % m.groups:
                raise ConfigError(f"level {level + 1} width {width} is not divisible by model.groups={m.groups}")
        space, time = 2 ** n, 2 ** sum(m.temporal_compression)
        if d.height % (8 * space) or d.width % (8 * space):
            raise ConfigError(f"data.height/width ({d.height}x{d.width}) must be multiples of {8 * space} "
                              f"(VAE factor 8 x U-Net factor {space})")
        if d.num_frames % time:
            raise ConfigError(f"data.num_frames={d.num_frames} must be a multiple of {time} (temporal compression)")
        if (d.height // 8, d.width // 8) != (m.latent_height, m.latent_width):
            raise ConfigError(f"model.latent_height/width ({m.latent_height}x{m.latent_width}) must equal "
                              f"data.height/width / 8 ({d.height // 8}x{d.width // 8})")
        if self.sample.num_frames % time:
            raise ConfigError(f"sample.num_frames={self.sample.num_frames} must be a multiple of {time}")
        if m.pose_guider and 2 ** (len(m.pose_guider_channels) - 1) != 8:
            raise ConfigError(f"model.pose_guider_channels={list(m.pose_guider_channels)} must have 4 widths: "
                              "the guider halves the skeleton images once per extra width, down to the latent "
                              "size (1/8, the VAE's factor)")
        if not 0.0 <= self.train.pose_dropout <= 1.0:
            raise ConfigError(f"train.pose_dropout={self.train.pose_dropout} must be in [0, 1]")
        if m.max_references < 0 or d.reference_candidates < 0:
            raise ConfigError("model.max_references and data.reference_candidates must be >= 0")
        if m.reference_pose_routing < 0:
            raise ConfigError(f"model.reference_pose_routing={m.reference_pose_routing} must be >= 0 (0 = off)")
        if m.reference_pose_routing > 0 and not (m.max_references > 0 and m.pose_guider):
            raise ConfigError("model.reference_pose_routing routes references by the driving poses: it needs "
                              "model.max_references > 0 and model.pose_guider=true")
        if not 0.0 <= self.train.reference_dropout <= 1.0:
            raise ConfigError(f"train.reference_dropout={self.train.reference_dropout} must be in [0, 1]")
        if self.train.trainable == "new_conditions" and not (m.max_references > 0 or m.pose_guider
                                                              or m.first_frame_attention):
            raise ConfigError("train.trainable=new_conditions needs a model with new conditions to train "
                              "(model.max_references > 0, model.pose_guider or model.first_frame_attention)")
        if self.diffusion.rescale_betas_zero_snr and self.diffusion.prediction_type != "v_prediction":
            raise ConfigError("diffusion.rescale_betas_zero_snr needs diffusion.prediction_type=v_prediction "
                              "(at zero terminal SNR the noise is the whole input, so epsilon says nothing)")
        if not 0.0 <= self.train.cond_dropout < 1.0:
            raise ConfigError(f"train.cond_dropout={self.train.cond_dropout} must be in [0, 1)")
        for name in ("init_strength", "routed_init_strength"):
            value = getattr(self.sample, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ConfigError(f"sample.{name}={value} must be in (0, 1]")
        if self.train.compile_mode is not None and self.train.compile_backend != "inductor":
            raise ConfigError(f"train.compile_mode={self.train.compile_mode!r} needs train.compile_backend=inductor "
                              f"(got {self.train.compile_backend!r})")
        for name in ("batch_size", "grad_accum_steps", "keep_last", "val_clips", "val_timesteps"):
            if getattr(self.train, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1")
        if self.train.val_every < 0:
            raise ConfigError(f"train.val_every={self.train.val_every} must be >= 0 (0 = off)")
        return self


SECTIONS = {f.name: f.type for f in dataclasses.fields(FashionFlowConfig)}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a dataclass field annotation; convert lists to tuples."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}={value!r} must have {len(args)} entries")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} must be true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r} must be an integer")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}={value!r} must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} must be a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} must be a string")
        return value
    return value


def _merge_section(section_obj, values: dict, section: str):
    hints = typing.get_type_hints(type(section_obj))
    known = {f.name for f in dataclasses.fields(section_obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key} (known: {', '.join(sorted(known))})")
        setattr(section_obj, key, _coerce(value, hints[key], f"{section}.{key}"))


def config_from_dict(data: dict | None) -> FashionFlowConfig:
    cfg = FashionFlowConfig()
    for section, values in (data or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} (known: {', '.join(SECTIONS)})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        _merge_section(getattr(cfg, section), values, section)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """`train.lr=2e-4` -> ("train", "lr", 2e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r} must name section.key (e.g. train.lr=2e-4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: cannot parse value: {error}") from None
    if isinstance(value, str) and raw.strip().lower() in ("none", "null"):
        value = None
    return parts[0], parts[1], value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> FashionFlowConfig:
    """Read a YAML preset (or the released defaults when `path` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with open(path) as handle:
            try:
                data = yaml.load(handle, Loader=_UniqueKeyLoader) or {}
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f", line {mark.line + 1}" if mark is not None else ""
                problem = getattr(error, "problem", None) or str(error)
                raise ConfigError(f"config file {path}{where}: {problem}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    data = {section: dict(values or {}) for section, values in data.items()}
    for text in overrides or []:
        section, key, value = parse_override(text)
        data.setdefault(section, {})[key] = value
    return config_from_dict(data).validate()


def config_to_dict(cfg: FashionFlowConfig) -> dict:
    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {section: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, section)).items()}
            for section in SECTIONS}


def config_to_yaml(cfg: FashionFlowConfig) -> str:
    """Block-style sections, one `key: value` per line, lists inline."""
    lines = []
    for section, values in config_to_dict(cfg).items():
        lines.append(f"{section}:")
        for key, value in values.items():
            text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
            lines.append(f"  {key}: {text.removesuffix(chr(10) + '...').removesuffix('...').strip()}")
    return "\n".join(lines) + "\n"


def save_config(cfg: FashionFlowConfig, path: str | os.PathLike) -> None:
    from fashionflow.utils import atomic_write_text

    atomic_write_text(path, config_to_yaml(cfg))


# fields added after latent folders were first projected: left out of the hash while at their
# default, so folders projected before they existed keep their hash
_HASH_OMITTED_DEFAULTS = {("data", "reference_candidates"): 0, ("data", "poses"): False}


def config_hash(cfg: FashionFlowConfig, sections: tuple[str, ...] = ("data", "encoders")) -> str:
    """Short stable hash of some sections (e.g. what decides the projected latents)."""
    payload = {s: {k: v for k, v in config_to_dict(cfg)[s].items()
                   if _HASH_OMITTED_DEFAULTS.get((s, k), object()) != v} for s in sections}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
