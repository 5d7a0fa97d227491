"""Diffusion maths apart from the network: schedule, training loss, sampling loop (FASHIONFLOW.md, "Diffusion").

Everything runs through diffusers' schedulers: the released betas are handed to them as
`trained_betas`, noising is `scheduler.add_noise`, and sampling steps are `scheduler.step`.
What is FashionFlow's own is the local conditioning: frame 0 of the video latent is the clean
latent of the conditioning image, during training (zero noise target) and after every sampling
step. Latents are [b, c, f, h, w] (channels before frames) and already scaled by the VAE factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from fashionflow.config import DiffusionConfig
from fashionflow.precision import autocast

SAMPLERS = ("ddpm", "ddim", "dpm")
Generators = Optional[torch.Generator | list[torch.Generator]]


def released_betas(num_steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    """The released "cosine" betas: beta_t = start + (end - start) / 2 * (1 - cos(pi t / (T - 1))).

    A half cosine from `start` (t = 0) to `end` (t = T - 1); not Nichol & Dhariwal's cosine
    schedule. float64, like the released numpy code (diffusers stores them as float32, as the
    released `torch.Tensor(betas)` did).
    """
    t = np.arange(num_steps, dtype=np.float64)
    return start + 0.5 * (end - start) * (1.0 - np.cos(math.pi * t / (num_steps - 1)))


def make_scheduler(diff_cfg: DiffusionConfig, sampler: str = "ddpm") -> SchedulerMixin:
    """A diffusers scheduler for the configured schedule.

    ddpm: ancestral sampling with the posterior variance beta-tilde ("fixed_small") and no x0
          clipping: with all 1000 steps this is the released sampler.
    ddim: deterministic DDIM (eta 0), "trailing" timesteps so the first step starts at t = T - 1.
    dpm:  DPM-Solver++ (2nd-order multistep), "trailing" timesteps, zero final sigma.
    `diffusion.prediction_type`, `rescale_betas_zero_snr` and `timestep_spacing` are handed to
    the scheduler as they are (diffusers implements all three).
    """
    schedule: dict = dict(num_train_timesteps=diff_cfg.num_train_timesteps, prediction_type=diff_cfg.prediction_type,
                          rescale_betas_zero_snr=diff_cfg.rescale_betas_zero_snr)
    if diff_cfg.beta_schedule == "released":
        schedule["trained_betas"] = released_betas(diff_cfg.num_train_timesteps, diff_cfg.beta_start,
                                                   diff_cfg.beta_end)
    else:
        schedule.update(beta_schedule=diff_cfg.beta_schedule, beta_start=diff_cfg.beta_start,
                        beta_end=diff_cfg.beta_end)
    scheduler_class, settings = _sampler(sampler, diff_cfg.timestep_spacing)
    return scheduler_class(**schedule, **settings)


def _sampler(sampler: str, timestep_spacing: str = "default") -> tuple[type[SchedulerMixin], dict]:
    if sampler == "ddpm":
        scheduler_class, settings = DDPMScheduler, dict(variance_type="fixed_small", clip_sample=False,
                                                        thresholding=False, timestep_spacing="leading")
    elif sampler == "ddim":
        scheduler_class, settings = DDIMScheduler, dict(clip_sample=False, thresholding=False, set_alpha_to_one=True,
                                                        timestep_spacing="trailing", steps_offset=0)
    elif sampler == "dpm":
        scheduler_class, settings = DPMSolverMultistepScheduler, dict(
            algorithm_type="dpmsolver++", solver_order=2, thresholding=False, timestep_spacing="trailing",
            final_sigmas_type="zero", lower_order_final=True, use_karras_sigmas=False, steps_offset=0)
    else:
        raise ValueError(f"unknown sampler {sampler!r} (one of {', '.join(SAMPLERS)})")
    if timestep_spacing != "default":
        settings["timestep_spacing"] = timestep_spacing
    return scheduler_class, settings


def switch_sampler(scheduler: SchedulerMixin, sampler: str, timestep_spacing: str = "default") -> SchedulerMixin:
    """The same schedule (betas, prediction type) in another sampler: e.g. a saved pipeline's DDPM -> DPM."""
    scheduler_class, settings = _sampler(sampler, timestep_spacing)
    return scheduler_class.from_config(scheduler.config, **settings)


def default_steps(scheduler: SchedulerMixin) -> int:
    """All training steps for ancestral DDPM (the released sampler), 25 for the ODE solvers."""
    return scheduler.config.num_train_timesteps if isinstance(scheduler, DDPMScheduler) else 25


def with_first_frame(latents: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
    """Local conditioning: [b, c, f, h, w] with frame 0 replaced by `first_frame` [b, c, h, w]."""
    return torch.cat([first_frame.unsqueeze(2).to(latents.dtype), latents[:, :, 1:]], dim=2)


def null_context(context: torch.Tensor) -> torch.Tensor:
    """The "no image" condition for classifier-free guidance: zeros of the adapter output's shape.

    Only the global (cross-attention) condition is dropped; frame 0 stays the image latent.
    """
    return torch.zeros_like(context)


def _frame_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[b, c, f, h, w] x 2 -> [f]: the MSE of each frame, averaged over batch, channels and pixels."""
    return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(0, 1, 3, 4))


def diffusion_loss(unet: torch.nn.Module, latents: torch.Tensor, context: torch.Tensor, scheduler: SchedulerMixin,
                   diff_cfg: DiffusionConfig, timesteps: Optional[torch.Tensor] = None,
                   noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
                   conditions: Optional[dict] = None) -> torch.Tensor:
    """The released training objective for clean video latents [b, c, f, h, w] -> scalar loss.

    1. t ~ U{0, T-1} per video, noise ~ N(0, I); x_t = scheduler.add_noise(x_0, noise, t).
    2. Local conditioning: noisy frame 0 is replaced by clean frame 0, whose noise target is 0
       (`local_conditioning=False`, paper Table 2: frame 0 is noised and predicted like the others).
    3. Epsilon MSE per frame; released: summed over frames ("sum_frames", frame 0 included).
       `loss_on_first_frame=False` leaves frame 0 out; `loss_reduction="mean"` averages frames.
       With `prediction_type="v_prediction"` the target is v = sqrt(abar) eps - sqrt(1 - abar) x0
       of the same (frame-0-zeroed) noise, so clean frame 0's target is -sqrt(1 - abar) x0.
    `conditions`: optional U-Net keyword inputs (references, reference_mask, pose, pose_mask).
    """
    b = latents.shape[0]
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator,
                                  device=generator.device if generator is not None else "cpu")
    timesteps = timesteps.to(latents.device).long()
    if noise is None:
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = noise
    if diff_cfg.local_conditioning:
        noisy = with_first_frame(noisy, latents[:, :, 0])
        target = with_first_frame(noise, torch.zeros_like(latents[:, :, 0]))
    if diff_cfg.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, target, timesteps)

    prediction = unet(noisy, timesteps, context, **(conditions or {}))
    per_frame = _frame_mse(prediction, target)  # [f]
    if not diff_cfg.loss_on_first_frame:
        per_frame = per_frame[1:]
    if diff_cfg.loss_reduction == "sum_frames":
        return per_frame.sum()
    if diff_cfg.loss_reduction == "mean":
        return per_frame.mean()
    raise ValueError(f"unknown diffusion.loss_reduction {diff_cfg.loss_reduction!r}")


def with_masks(conditions: dict) -> dict:
    """`conditions` with an explicit all-True reference_mask [b, r] / pose_mask [b] where absent."""
    conditions = {name: value for name, value in conditions.items() if value is not None}
    if "references" in conditions and "reference_mask" not in conditions:
        references = conditions["references"]
        conditions["reference_mask"] = torch.ones(references.shape[:2], dtype=torch.bool, device=references.device)
    if "pose" in conditions and "pose_mask" not in conditions:
        pose = conditions["pose"]
        conditions["pose_mask"] = torch.ones(pose.shape[:1], dtype=torch.bool, device=pose.device)
    return conditions


def without_references(conditions: dict) -> dict:
    """The same inputs with every reference masked out (the base model's path)."""
    if "references" not in conditions:
        return conditions
    return {**conditions, "reference_mask": torch.zeros_like(conditions["reference_mask"])}


def without_pose(conditions: dict) -> dict:
    """The same inputs with every pose masked out (spontaneous motion, as in pose dropout)."""
    if "pose" not in conditions:
        return conditions
    return {**conditions, "pose_mask": torch.zeros_like(conditions["pose_mask"])}


def _stack_branches(branches: list[dict]) -> dict:
    return {name: torch.cat([branch[name] for branch in branches]) for name in branches[-1]}


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance scales; 1.0 = that term off, and each other value costs one more
    U-Net pass per step (the passes run as one batch).

    image: against the all-zeros context without references (poses kept), as released:
        eps = eps_null + image (eps_cond - eps_null).
    pose / references: against the same inputs without the poses / without the references,
    added on top: eps += (pose - 1) (eps_cond - eps_no_pose) (compositional guidance, Liu et al.
    2022; InstructPix2Pix's separate image and text scales, Brooks et al. 2023). They need a
    model trained with pose / reference dropout, whose conditional and unconditional predictions
    come from one network.
    """
    image: float = 1.0
    pose: float = 1.0
    references: float = 1.0

    def branches(self, context: torch.Tensor, conditions: dict) -> tuple[list[str], torch.Tensor, dict]:
        """(branch names, context of every branch concatenated, conditions likewise): the batch
        of one guided U-Net pass, the conditional branch last. Unguided (every scale 1): (["cond"],
        the inputs as given)."""
        if (self.image, self.pose, self.references) == (1.0, 1.0, 1.0):
            return ["cond"], context, conditions
        conditions = with_masks(conditions)
        if self.pose != 1.0 and "pose" not in conditions:
            raise ValueError(f"pose guidance ({self.pose}) needs driving poses")
        if self.references != 1.0 and "references" not in conditions:
            raise ValueError(f"reference guidance ({self.references}) needs reference images")
        names, contexts, inputs = [], [], []
        for name, scale, branch_context, branch_inputs in (
                ("image", self.image, null_context(context), without_references(conditions)),
                ("pose", self.pose, context, without_pose(conditions) if self.pose != 1.0 else None),
                ("references", self.references, context,
                 without_references(conditions) if self.references != 1.0 else None)):
            if scale != 1.0:
                names.append(name)
                contexts.append(branch_context)
                inputs.append(branch_inputs)
        names.append("cond")
        contexts.append(context)
        inputs.append(conditions)
        return names, torch.cat(contexts), _stack_branches(inputs)

    def combine(self, names: list[str], eps: torch.Tensor) -> torch.Tensor:
        """The U-Net output of the batch from `branches` [k b, ...] -> the guided noise [b, ...]."""
        parts = dict(zip(names, eps.chunk(len(names))))
        cond = parts["cond"]
        guided = parts["image"] + self.image * (cond - parts["image"]) if "image" in parts else cond
        for name, scale in (("pose", self.pose), ("references", self.references)):
            if name in parts:
                guided = guided + (scale - 1.0) * (cond - parts[name])
        return guided


def first_frame_start(scheduler: SchedulerMixin, image_latent: torch.Tensor, noise: torch.Tensor,
                      init_strength: float, start_latents: Optional[torch.Tensor] = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps to run and the latents to start from, after `scheduler.set_timesteps`.

    image_latent [b, c, h, w], noise [b, c, f, h, w] -> (timesteps [k], latents [b, c, f, h, w]).
    init_strength 1.0: every timestep, from pure noise (x init_noise_sigma), as released.
    init_strength s < 1: only the last round(s * steps) steps, from frame 0 repeated over all
    frames and noised to the first of them, q(x_t | x_0 = static video) (SDEdit, Meng et al.
    2022; ConsistI2V's FrameInit starts image-to-video sampling from the first frame's layout
    the same way). With the released linear betas the signal left at t = 999 is 0.6 % of the
    latent, so the colours of frames 1.. come from the U-Net's guess at the first steps; a
    later start (the demo: s = 0.7 of 50 DDPM steps, t = 680) keeps frame 0's colours and
    layout in every frame and leaves the motion to the model (docs/differences.md).
    start_latents [b, c, f, h, w]: each frame's own clean start instead of frame 0 repeated
    (pose-routed references: the view each frame is posed like; `FashionFlowPipeline`).
    """
    if not 0.0 < init_strength <= 1.0:
        raise ValueError(f"init_strength={init_strength} must be in (0, 1]")
    if init_strength == 1.0:
        return scheduler.timesteps, noise * scheduler.init_noise_sigma
    steps = len(scheduler.timesteps) // scheduler.order
    kept = max(1, round(init_strength * steps))
    begin = (steps - kept) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    timesteps = scheduler.timesteps[begin:]
    static = image_latent.unsqueeze(2).expand_as(noise) if start_latents is None else start_latents.to(noise.dtype)
    return timesteps, scheduler.add_noise(static, noise, timesteps[:1].expand(len(noise)))


@torch.no_grad()
def sample_video_latents(unet: torch.nn.Module, scheduler: SchedulerMixin, context: torch.Tensor,
                         image_latent: torch.Tensor, num_frames: int, num_inference_steps: int,
                         guidance_scale: float = 1.0, generator: Generators = None,
                         autocast_dtype: Optional[torch.dtype] = None,
                         progress: Callable[[Iterable], Iterable] = lambda steps: steps,
                         init_strength: float = 1.0, conditions: Optional[dict] = None,
                         local_conditioning: bool = True, pose_guidance_scale: float = 1.0,
                         reference_guidance_scale: float = 1.0,
                         start_latents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Denoise a video from pure noise, frame 0 held at the image latent (FASHIONFLOW.md, "Sampling").

    context [b, n, C] (adapter output), image_latent [b, c, h, w] -> latents [b, c, f, h, w] (fp32).
    `generator`: one per video (a list of b) so a video does not depend on its batch; the
    scheduler state is fp32 and the U-Net runs under `autocast_dtype` (CPU or CUDA; None = none).
    Guidance: eps = eps_null + s (eps_cond - eps_null), with the all-zeros null context; s = 1 skips it;
    `pose_guidance_scale` / `reference_guidance_scale` add guidance against the same inputs
    without the poses / references (`Guidance`).
    `init_strength` 1.0 starts from pure noise (released); below 1, see `first_frame_start`
    (`start_latents` [b, c, f, h, w]: each frame's clean start there; None = frame 0 repeated).
    `conditions`: optional U-Net keyword inputs (references [b, r, n, C], reference_mask [b, r], pose [b, 3, f, H, W],
    pose_mask [b]).
    `local_conditioning=False` (paper Table 2 ablation): frame 0 is generated like the others.
    """
    hold_first_frame = with_first_frame if local_conditioning else lambda latents, _: latents
    b, c, h, w = image_latent.shape
    device = image_latent.device
    image_latent = image_latent.float()
    noise = randn_tensor((b, c, num_frames, h, w), generator=generator, device=device, dtype=torch.float32)
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps, latents = first_frame_start(scheduler, image_latent, noise, init_strength, start_latents)
    latents = hold_first_frame(latents, image_latent)

    guidance = Guidance(guidance_scale, pose_guidance_scale, reference_guidance_scale)
    conditions = {k: v for k, v in (conditions or {}).items() if v is not None}
    names, unet_context, conditions = guidance.branches(context, conditions)
    weights_dtype = getattr(unet, "dtype", torch.float32)  # a U-Net cast to bf16/fp16 takes inputs of its dtype
    unet_context = unet_context.to(weights_dtype)
    conditions = {k: v.to(weights_dtype) if v.is_floating_point() and not k.endswith("keypoints") else v
                  for k, v in conditions.items()}  # keypoints stay fp32: pose distances need the precision
    for t in progress(timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        if len(names) > 1:
            model_input = torch.cat([model_input] * len(names))
        timesteps = t.expand(model_input.shape[0]).to(device)
        with autocast(device, autocast_dtype):
            eps = unet(model_input.to(weights_dtype), timesteps, unet_context, **conditions)
        eps = guidance.combine(names, eps.float())
        latents = scheduler.step(eps, t, latents, generator=generator).prev_sample
        latents = hold_first_frame(latents, image_latent)  # released: frame 0 reset after every step
    return latents
