"""FashionFlowPipeline: one photo in, a video out (FASHIONFLOW.md, "Sampling", "Decoding").

A diffusers `DiffusionPipeline` with components vae, image_encoder, feature_extractor, unet,
adapter and scheduler, so the whole model is one folder (`save_pretrained` /
`from_pretrained`). Per video:

1. encode: the [0, 1] image -> VAE latent distribution; two samples are drawn, one for the
   adapter and one for frame 0 (the released code encoded twice, sampling each time); CLIP
   hidden states; adapter -> context [b, 50, C].
   Reference images (`reference_images`, models with model.max_references): each through the
   VAE (mean latent), CLIP and the same adapter -> [b, r, 50, C] and a mask for unequal r.
   Driving poses (`poses`, models with model.pose_guider): resampled to the frame count,
   fitted to the person in the image, frame 0 = the image's own pose (`fashionflow.pose.drive`),
   rendered as OpenPose skeletons [b, 3, f, H, W] for the U-Net's pose guider.
2. denoise: `fashionflow.diffusion.sample_video_latents` (frame 0 reset after every step).
3. decode: every frame through the VAE decoder, `decode_chunk_size` frames at a time.

Randomness comes from one generator per video, so a video does not depend on its batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from fashionflow.config import EncodersConfig, FashionFlowConfig, load_config, save_config
from fashionflow.diffusion import default_steps, make_scheduler, sample_video_latents, switch_sampler
from fashionflow.encoders import clip_hidden_states, decode_latents, encode_latent_dist, output_range_for
from fashionflow.images import image_to_tensor, load_image, resize_image, to_rgb, to_uint8
from fashionflow.models import ImageConditionAdapter, SpaceTimeUNet
from fashionflow.precision import Precision, autocast, autocast_dtype, tf32, tf32_for
from fashionflow.models.references import pad_references
from fashionflow.utils import atomic_directory

ImageInput = (Image.Image | np.ndarray | torch.Tensor | str | os.PathLike
              | Sequence[Image.Image | np.ndarray | torch.Tensor | str | os.PathLike])
CONFIG_FILE = "config.yaml"


@dataclass
class FashionFlowPipelineOutput(BaseOutput):
    """frames: uint8 [b, f, H, W, 3] ("np"), float [b, f, 3, H, W] in [0, 1] ("pt"), or latents [b, c, f, h, w].

    With driving poses: poses, per video the keypoints [f, 18, 3] that drove it (None for a
    video without), and reference_poses, the pose [18, 3] found in each input image (or None).
    """

    frames: np.ndarray | torch.Tensor
    poses: Optional[list] = None
    reference_poses: Optional[list] = None


DEFAULT_FRAMES = 70  # released clip length, when neither num_frames nor poses say otherwise


class FashionFlowPipeline(DiffusionPipeline):
    """Image-to-video FashionFlow: `pipe(image, num_frames=70).frames` -> [b, f, H, W, 3] uint8."""

    model_cpu_offload_seq = "image_encoder->adapter->unet->vae"

    def __init__(self, vae: AutoencoderKL, image_encoder, feature_extractor, unet: SpaceTimeUNet,
                 adapter: ImageConditionAdapter, scheduler, preprocessing: str = "released",
                 output_range: str = "clamp01", vae_scaling_factor: float = 0.18215, local_conditioning: bool = True):
        super().__init__()
        self.register_modules(vae=vae, image_encoder=image_encoder, feature_extractor=feature_extractor,
                              unet=unet, adapter=adapter, scheduler=scheduler)
        self.register_to_config(preprocessing=preprocessing, output_range=output_range,
                                vae_scaling_factor=vae_scaling_factor, local_conditioning=local_conditioning)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_parts(cls, cfg: FashionFlowConfig, unet, adapter, vae, image_encoder, feature_extractor,
                   sampler: Optional[str] = None) -> "FashionFlowPipeline":
        """A pipeline from loaded components and the run's config (scheduler from `cfg.diffusion`)."""
        return cls(vae=vae, image_encoder=image_encoder, feature_extractor=feature_extractor, unet=unet,
                   adapter=adapter, scheduler=make_scheduler(cfg.diffusion, sampler or cfg.sample.sampler),
                   preprocessing=cfg.encoders.preprocessing, output_range=resolve_output_range(cfg),
                   vae_scaling_factor=cfg.encoders.vae_scaling_factor,
                   local_conditioning=cfg.diffusion.local_conditioning)

    @property
    def encoders_config(self) -> EncodersConfig:
        """What the encoder functions need: preprocessing and scaling factor."""
        return EncodersConfig(preprocessing=self.config.preprocessing,
                              vae_scaling_factor=self.config.vae_scaling_factor)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the videos: fixed by the adapter's latent size (its Linear depends on it)."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.adapter.config.latent_height * factor, self.adapter.config.latent_width * factor

    # --- stages -------------------------------------------------------------------------

    def prepare_images(self, image: ImageInput) -> torch.Tensor:
        """Image(s) -> float [b, 3, H, W] in [0, 1] at the model's size (released: bilinear stretch).

        Accepts file paths, PIL images, uint8 arrays [h, w, 3], float tensors [3, h, w] or
        [b, 3, h, w] in [0, 1] (resized with antialiased bilinear interpolation if needed).
        """
        height, width = self.image_size
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            image = list(image)
        elif not isinstance(image, (list, tuple)):
            image = [image]
        tensors = []
        for item in image:
            if isinstance(item, (str, os.PathLike)):
                tensor = load_image(item, height, width)
            elif isinstance(item, Image.Image):
                tensor = image_to_tensor(resize_image(to_rgb(item), height, width))
            elif isinstance(item, np.ndarray):
                tensor = image_to_tensor(resize_image(to_rgb(Image.fromarray(item)), height, width))
            elif isinstance(item, torch.Tensor) and item.ndim == 3 and item.shape[0] == 3:
                tensor = item.float()
                if tensor.shape[1:] != (height, width):
                    tensor = F.interpolate(tensor[None], (height, width), mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)
            else:
                raise TypeError(f"unsupported image input {type(item).__name__} "
                                f"{tuple(getattr(item, 'shape', ()))}; give a path, PIL image, "
                                "uint8 [h, w, 3] array or float [3, h, w] tensor in [0, 1]")
            tensors.append(tensor)
        return torch.stack(tensors).to(self._execution_device)

    @torch.no_grad()
    def encode_image(self, images01: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """[b, 3, H, W] in [0, 1] -> (frame-0 latent [b, 4, h, w] fp32, context [b, 50, C]).

        No autocast, whatever the precision: the released code encoded in fp32, and the frame-0
        latent is re-imposed after every denoising step, so a bf16-rounded one would offset the
        whole video (FASHIONFLOW.md, "Sampling"). One image costs little next to the denoising.
        """
        enc_cfg, device = self.encoders_config, self._execution_device
        mean, std = encode_latent_dist(self.vae, images01, enc_cfg)
        mean, std = mean.float(), std.float()
        adapter_latent = mean + std * randn_tensor(mean.shape, generator=generator, device=device)
        first_frame = mean + std * randn_tensor(mean.shape, generator=generator, device=device)
        hidden = clip_hidden_states(self.image_encoder, self.feature_extractor, images01, enc_cfg.preprocessing)
        context = self.adapter(hidden.to(self.adapter.dtype), adapter_latent.to(self.adapter.dtype))
        return first_frame, context

    def pose_inputs(self, poses, images01: torch.Tensor, num_frames: int, align: bool = True,
                    pose_aspect: Optional[float] = None) -> tuple[dict, list, list]:
        """Driving poses for every image -> (U-Net inputs {pose [b, 3, f, H, W], pose_mask [b]} or {},
        the keypoints [f, 18, 3] used per video (None without), the reference pose per image).

        poses: keypoints [f', 18, 3] for every image, or a list with one entry (keypoints or None)
        per image; `pose_aspect` is the width / height of the frames they were taken from
        (default: the model's frame). Each goes through `fashionflow.pose.drive.driving_poses`.
        """
        per_image = _poses_per_image(poses, len(images01))
        if not any(p is not None for p in per_image):
            return {}, per_image, [None] * len(images01)
        if self.unet.pose_guider is None:
            raise ValueError("poses given, but this model has no pose guider (trained with model.pose_guider=false): "
                             "it cannot follow poses")
        from fashionflow.pose.drive import driving_poses, reference_pose
        from fashionflow.pose.render import pose_tensor

        height, width = self.image_size
        aspect = width / height
        used, references, rendered = [], [], []
        for image01, driving in zip(images01, per_image):
            reference = reference_pose(to_uint8(image01)) if driving is not None and align else None
            keypoints = None if driving is None else driving_poses(
                driving, num_frames, reference, align=align, driving_aspect=pose_aspect or aspect,
                reference_aspect=aspect)
            used.append(keypoints), references.append(reference)
            rendered.append(pose_tensor(keypoints, height, width) if keypoints is not None
                            else torch.zeros(num_frames, 3, height, width))
        device = self._execution_device
        pose = rearrange(torch.stack(rendered), "b f c h w -> b c f h w").to(device)
        mask = torch.tensor([k is not None for k in used], device=device)
        return {"pose": pose, "pose_mask": mask}, used, references

    @torch.no_grad()
    def encode_references(self, reference_images: Optional[Sequence], batch: int) -> dict:
        """One list of reference images per video (or None) -> {references [b, r, 50, C], reference_mask
        [b, r]} for the U-Net (r = the longest list; shorter lists masked), reference_latents
        [b, r, c, h, w] (their scaled mean latents) and reference_images01 (per video, the prepared
        images [r_i, 3, H, W]), or {} when there are none.

        Each reference goes through the VAE (its mean latent: no random draw, so the videos' noise
        is the same with or without references), CLIP and the same adapter as the main image, in
        fp32 like `encode_image`.
        """
        if reference_images is None:
            return {}
        if not isinstance(reference_images, (list, tuple)) or len(reference_images) != batch:
            raise ValueError(f"reference_images must be a list with one entry (a list of images, or None) per "
                             f"input image: {batch} image(s), got {type(reference_images).__name__} of "
                             f"{len(reference_images) if isinstance(reference_images, (list, tuple)) else '?'}")
        lists = [list(item) if item is not None else [] for item in reference_images]
        if not any(lists):
            return {}
        if self.unet.references is None:
            raise ValueError("this model takes no reference images (trained with model.max_references=0)")
        enc_cfg = self.encoders_config
        images01 = self.prepare_images([image for item in lists for image in item])  # (sum r_i) 3 H W
        mean, _ = encode_latent_dist(self.vae, images01, enc_cfg)
        hidden = clip_hidden_states(self.image_encoder, self.feature_extractor, images01, enc_cfg.preprocessing)
        tokens = self.adapter(hidden.to(self.adapter.dtype), mean.float().to(self.adapter.dtype))
        counts = [len(item) for item in lists]
        per_video = lambda x: [part if len(part) else None for part in torch.split(x, counts)]  # noqa: E731
        references, mask = pad_references(per_video(tokens), tuple(tokens.shape[1:]))
        latents, _ = pad_references(per_video(mean.float()), tuple(mean.shape[1:]))
        return {"references": references, "reference_mask": mask, "reference_latents": latents,
                "reference_images01": list(torch.split(images01, counts))}

    def routing_keypoints(self, reference_images01: Optional[list], reference_keypoints: Optional[Sequence],
                          used_poses: list, conditions: dict) -> dict:
        """The U-Net's pose routing inputs {pose_keypoints [b, f, 18, 3], reference_keypoints
        [b, r, 18, 3]} for a model with `reference_pose_routing` > 0 driven by poses with
        references, else {}. reference_images01: per video, its prepared reference images
        [r_i, 3, H, W] (`encode_references`). reference_keypoints: one list per image of each reference's pose
        [18, 3] (x, y in [0, 1] of that reference image; None = find it with MediaPipe, as the
        input image's pose is found); no frame is routed to a reference with no person found."""
        if not self.unet.config.reference_pose_routing or "references" not in conditions or "pose" not in conditions:
            return {}
        given = _per_reference(reference_keypoints, reference_images01)
        from fashionflow.pose.drive import reference_pose
        from fashionflow.pose.keypoints import check_keypoints

        r = conditions["references"].shape[1]
        poses = np.zeros((len(reference_images01), r, 18, 3), np.float32)  # confidence 0: unknown
        for i, item in enumerate(reference_images01):
            for j, image01 in enumerate(item):
                if given[i][j] is not None:
                    poses[i, j] = check_keypoints(given[i][j], f"reference_keypoints[{i}][{j}]")[0]
                    continue
                found = reference_pose(to_uint8(image01))
                if found is None:
                    print(f"reference image {j} of input {i}: no person found, so no frame is routed to it")
                else:
                    poses[i, j] = found
        frames = np.stack([p if p is not None else np.zeros((conditions["pose"].shape[2], 18, 3), np.float32)
                           for p in used_poses])
        device = self._execution_device
        return {"pose_keypoints": torch.from_numpy(frames).to(device),
                "reference_keypoints": torch.from_numpy(poses).to(device)}

    def routed_start(self, first_frame: torch.Tensor, reference_latents: Optional[torch.Tensor], conditions: dict
                     ) -> Optional[torch.Tensor]:
        """Each frame's clean start for init_strength < 1 with pose routing: the latents of the
        views (the image, the references) weighted as the frame's routing weighs them, so a
        back-facing frame starts from the back view where it would start from the front image
        ([b, c, f, h, w]); None without routing inputs or when no frame can draw on a reference
        (all masked or of unknown pose): frame 0 repeated, as released."""
        if reference_latents is None or "pose_keypoints" not in conditions:
            return None
        from fashionflow.pose.similarity import view_logits

        mask = conditions["reference_mask"]
        posed = conditions.get("pose_mask", torch.ones(len(mask), dtype=torch.bool, device=mask.device))
        logits = view_logits(conditions["pose_keypoints"], conditions["reference_keypoints"], mask, posed,
                             self.unet.config.reference_pose_routing)  # b f (1 + r)
        if torch.isneginf(logits[..., 1:]).all():
            return None
        weights = logits.softmax(-1)
        views = torch.cat((first_frame.float()[:, None], reference_latents.to(first_frame.device)), dim=1)
        return torch.einsum("bfv,bvchw->bcfhw", weights.float(), views)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decode_chunk_size: int = 8, precision: Precision = "auto") -> torch.Tensor:
        """[b, c, f, h, w] -> float [b, f, 3, H, W] in [0, 1]."""
        device = self._execution_device
        with tf32(tf32_for(precision)), autocast(device, autocast_dtype(device, precision)):
            return decode_latents(self.vae, latents, self.encoders_config, self.config.output_range,
                                  decode_chunk_size)

    def compile_models(self, components: Sequence[str] = ("unet", "vae"), mode: Optional[str] = None,
                       backend: str = "inductor") -> "FashionFlowPipeline":
        """`torch.compile` the U-Net and/or the VAE decoder in place (`nn.Module.compile`: weights
        and state-dict names unchanged, so the pipeline still saves and loads). mode: e.g.
        "max-autotune" (inductor only); backend: "inductor", or "eager" / "aot_eager" to check
        that the models trace without paying for code generation."""
        options = {"backend": backend, **({"mode": mode} if mode is not None else {})}
        targets = {"unet": lambda: self.unet, "vae": lambda: self.vae.decoder}
        for name in components:
            if name not in targets:
                raise ValueError(f"cannot compile {name!r}: choose from {', '.join(targets)}")
            targets[name]().compile(**options)
        return self

    # --- the whole thing ----------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, image: ImageInput, num_frames: Optional[int] = None, num_inference_steps: Optional[int] = None,
                 guidance_scale: float = 1.0, generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: Literal["np", "pt", "latent"] = "np", decode_chunk_size: int = 8,
                 precision: Precision = "auto", return_dict: bool = True, init_strength: float = 1.0,
                 reference_images: Optional[Sequence] = None, poses=None, align: bool = True,
                 pose_aspect: Optional[float] = None, pose_guidance_scale: float = 1.0,
                 reference_guidance_scale: float = 1.0, reference_keypoints: Optional[Sequence] = None,
                 routed_init: bool = True, routed_init_strength: Optional[float] = None):
        """Generate one video per input image.

        num_inference_steps: None = the scheduler's default (1000 for DDPM, 25 for DDIM/DPM).
        generator: one per image (a list) for batch-independent videos; a single generator is
        shared by the batch. guidance_scale 1.0 = no classifier-free guidance.
        pose_guidance_scale / reference_guidance_scale: guidance towards the poses / the
        references (against the same inputs without them; `fashionflow.diffusion.Guidance`),
        1.0 = off; each other value costs one more U-Net pass per step.
        init_strength 1.0 = start from pure noise (released); s < 1 = run the last s of the
        steps from frame 0 repeated and noised (`fashionflow.diffusion.first_frame_start`).
        reference_images: one list per input image of extra views of the same garment (back,
        side; paths, PIL images, arrays or tensors, like `image`), or None for that image; None
        = single-image, as released. Needs a model trained with model.max_references.
        poses: driving keypoints [f, 18, 3] (OpenPose-18, x y in [0, 1], confidence) for every
        image, or a list with one entry (keypoints or None) per image; needs a model trained with
        model.pose_guider. align=False uses them as they are (already in the image's frame, frame 0
        included) instead of fitting them to the person in the image; pose_aspect:
        width / height of the frames they come from (default: the model's). num_frames: None =
        the poses' frame count (rounded up to the temporal multiple, resampled), else 70.
        reference_keypoints: for a model with model.reference_pose_routing, driven by poses, with
        references: one list per image of each reference's pose [18, 3] (None, or a None entry:
        found with MediaPipe); each frame then draws on the references posed like it, and with
        `routed_init` starts from them too (`routed_start`) at `routed_init_strength` (None:
        init_strength) when that is below 1; the batch shares one strength.
        """
        images01 = self.prepare_images(image)
        b = len(images01)
        if isinstance(generator, list) and len(generator) != b:
            raise ValueError(f"got {len(generator)} generators for {b} images; give one per image")
        multiple = self.unet.frame_multiple
        if num_frames is None:
            given = [p for p in _poses_per_image(poses, b) if p is not None]
            num_frames = -(-max(len(given[0]), 2) // multiple) * multiple if given else DEFAULT_FRAMES
        if num_frames < 2 or num_frames % multiple:
            raise ValueError(f"num_frames={num_frames} must be a multiple of {multiple} (temporal compression)")
        steps = num_inference_steps or default_steps(self.scheduler)
        device = self._execution_device

        first_frame, context = self.encode_image(images01, generator)
        conditions = self.encode_references(reference_images, b)
        reference_latents = conditions.pop("reference_latents", None)
        reference_images01 = conditions.pop("reference_images01", None)
        pose_conditions, used_poses, reference_poses = self.pose_inputs(poses, images01, num_frames, align,
                                                                        pose_aspect)
        conditions = {**conditions, **pose_conditions}
        conditions.update(self.routing_keypoints(reference_images01, reference_keypoints, used_poses, conditions))
        routed_strength = init_strength if routed_init_strength is None else routed_init_strength
        start = (self.routed_start(first_frame, reference_latents, conditions)
                 if routed_init and routed_strength < 1 else None)
        if start is not None:  # every frame starts from a view like it: less needs noising away
            init_strength = routed_strength
        with tf32(tf32_for(precision)):
            latents = sample_video_latents(self.unet, self.scheduler, context, first_frame, num_frames, steps,
                                           guidance_scale=guidance_scale, generator=generator,
                                           autocast_dtype=autocast_dtype(device, precision),
                                           progress=self.progress_bar, init_strength=init_strength,
                                           conditions=conditions, local_conditioning=self.config.local_conditioning,
                                           pose_guidance_scale=pose_guidance_scale,
                                           reference_guidance_scale=reference_guidance_scale,
                                           start_latents=start)
        if output_type == "latent":
            frames = latents
        else:
            video = self.decode(latents, decode_chunk_size, precision)  # b f c H W
            if output_type == "pt":
                frames = video
            elif output_type == "np":
                frames = (video * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
            else:
                raise ValueError(f"unknown output_type {output_type!r} (np, pt or latent)")
        self.maybe_free_model_hooks()
        if not pose_conditions:
            used_poses = reference_poses = None
        return (FashionFlowPipelineOutput(frames=frames, poses=used_poses, reference_poses=reference_poses)
                if return_dict else (frames,))


def _per_reference(reference_keypoints, lists: list) -> list[list]:
    """`reference_keypoints` (None, or one list per image, None or one entry per reference image)
    as one list per image with one entry (keypoints or None) per reference image (`lists`: the
    reference images of each image)."""
    if reference_keypoints is None:
        return [[None] * len(item) for item in lists]
    if not isinstance(reference_keypoints, (list, tuple)) or len(reference_keypoints) != len(lists):
        raise ValueError(f"reference_keypoints must be a list with one entry per input image ({len(lists)}), "
                         f"like reference_images")
    out = []
    for i, (poses, item) in enumerate(zip(reference_keypoints, lists)):
        poses = [None] * len(item) if poses is None else list(poses)
        if len(poses) != len(item):
            raise ValueError(f"reference_keypoints[{i}] has {len(poses)} poses for {len(item)} reference images")
        out.append(poses)
    return out


def _poses_per_image(poses, batch: int) -> list:
    """`poses` as a list with one entry (keypoints or None) per image (module docstring of __call__)."""
    if poses is None:
        return [None] * batch
    if isinstance(poses, (list, tuple)):
        if len(poses) != batch:
            raise ValueError(f"poses must be keypoints [f, 18, 3] for every image or a list with one entry per image: "
                             f"{batch} image(s), got a list of {len(poses)}")
        return [None if p is None else np.asarray(p, np.float32) for p in poses]
    return [np.asarray(poses, np.float32)] * batch


def resolve_output_range(cfg: FashionFlowConfig) -> str:
    """`sample.output_range`, where `auto` follows the preprocessing: released ([0, 1] VAE
    inputs) clamps to [0, 1] like the released inference; correct ([-1, 1]) maps x / 2 + 0.5."""
    if cfg.sample.output_range == "auto":
        return output_range_for(cfg.encoders.preprocessing)
    return cfg.sample.output_range


def save_pipeline(pipe: FashionFlowPipeline, folder: str | os.PathLike, cfg: Optional[FashionFlowConfig] = None
                  ) -> Path:
    """Write the pipeline folder atomically (safetensors), with the resolved config as config.yaml."""
    with atomic_directory(folder) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if cfg is not None:
            save_config(cfg, Path(tmp) / CONFIG_FILE)
    return Path(folder)


def load_pipeline(folder: str | os.PathLike, sampler: Optional[str] = None, device=None
                  ) -> tuple[FashionFlowPipeline, Optional[FashionFlowConfig]]:
    """A pipeline folder -> (pipeline, the config saved with it or None); `sampler` swaps the scheduler.

    A folder with only unet/, adapter/ and config.yaml (a converted checkpoint, or a training
    checkpoint written without encoders) also loads: the VAE and CLIP then come from the
    config's `encoders.*` (MissingWeightsError says what to download when they are absent).
    """
    folder = Path(folder)
    cfg = load_config(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else None
    if (folder / "model_index.json").is_file():
        pipe = FashionFlowPipeline.from_pretrained(folder, low_cpu_mem_usage=False)
    elif cfg is not None and all((folder / part / "config.json").is_file() for part in ("unet", "adapter")):
        from fashionflow.encoders import load_image_encoder, load_vae

        unet = SpaceTimeUNet.from_pretrained(folder / "unet", low_cpu_mem_usage=False)
        adapter = ImageConditionAdapter.from_pretrained(folder / "adapter", low_cpu_mem_usage=False)
        image_encoder, processor = load_image_encoder(cfg.encoders)
        pipe = FashionFlowPipeline.from_parts(cfg, unet, adapter, load_vae(cfg.encoders), image_encoder, processor)
    else:
        raise FileNotFoundError(f"{folder} is not a FashionFlow pipeline folder (no model_index.json, nor "
                                "unet/, adapter/ and config.yaml); build one by training or with "
                                "`python -m fashionflow.assemble`")
    if sampler is not None:
        pipe.scheduler = switch_sampler(pipe.scheduler, sampler,
                                        cfg.diffusion.timestep_spacing if cfg is not None else "default")
    if device is not None:
        pipe.to(device)
    return pipe, cfg
