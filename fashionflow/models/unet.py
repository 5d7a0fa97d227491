"""The space-time U-Net (FASHIONFLOW.md "Latent U-Net"; paper Fig. 2; Make-A-Video's
SpaceTimeUnet with one image cross-attention per level).

    conv_in (7x7 pseudo-3D) -> 4 down levels -> middle -> 4 up levels -> conv_out (3x3)

Down level: time-conditioned resnet (in -> out), skip; `depth` resnets; [spatio-temporal
attention]; skip; downsample (space, and frames at compressed levels); cross-attention.
Up level (deepest first): upsample; concat skip; time-conditioned resnet (2 out -> in); concat
skip; resnet (in + out -> in); resnets (in -> in); [attention]; cross-attention.
Skips are scaled by 2^-0.5 and concatenated before the current features, as released.
Each module initialises itself as released: temporal convs Dirac (identity), attention output
projections zero, upsampling kernels repeated per sub-pixel.

Optional conditions (off in the released preset, built only when on, zero-initialised so a
fresh one leaves the model as it was): `max_references` > 0 adds a reference attention after
every level's image cross-attention (models/references.py); `pose_guider_channels` (None = off)
adds the pose guider's features of the rendered skeletons after conv_in (models/pose_guider.py;
Animate Anyone Sec. 3.2). `reference_pose_routing` > 0 (needs both) routes each frame to the views
whose pose is like the frame's driving pose (ProFashion's pose-aware aggregation; pose/similarity.py):
the image cross-attentions then see the image's and the references' tokens with per-frame logits,
and the reference attentions weight and gate the references per frame (`_pose_routing`). It has
no weights, so it can be switched on for a trained model. `first_frame_attention` adds, after
every level's resnets, an attention from each frame to frame 0's features at that level's full
resolution (models/first_frame.py; Tune-A-Video, Animate Anyone's ReferenceNet).
"""

from __future__ import annotations

import torch
from einops import rearrange
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from fashionflow.models.attention import ImageCrossAttention, SpatioTemporalAttention
from fashionflow.models.first_frame import FirstFrameConditioning
from fashionflow.models.layers import Downsample, PseudoConv3d, ResnetBlock, SinusoidalTimestepEmbedding, Upsample
from fashionflow.models.pose_guider import PoseGuider
from fashionflow.models.references import ReferenceConditioning
from fashionflow.pose.similarity import pose_routing_bias, view_logits


class DownLevel(nn.Module):
    def __init__(self, dim_in, dim_out, depth, self_attention, compress_time, cross_heads, time_dim, context_dim,
                 attention_heads, attention_head_dim, groups):
        super().__init__()
        self.resnet_in = ResnetBlock(dim_in, dim_out, time_dim, groups)
        self.resnets = nn.ModuleList(ResnetBlock(dim_out, dim_out, None, groups) for _ in range(depth))
        self.attention = (SpatioTemporalAttention(dim_out, attention_heads, attention_head_dim)
                          if self_attention else None)
        self.downsample = Downsample(dim_out, compress_time)
        self.cross_attention = ImageCrossAttention(dim_out, cross_heads, context_dim)


class UpLevel(nn.Module):
    def __init__(self, dim_in, dim_out, depth, self_attention, expand_time, cross_heads, time_dim, context_dim,
                 attention_heads, attention_head_dim, groups):
        super().__init__()
        self.upsample = Upsample(dim_out, expand_time)
        self.resnet_in = ResnetBlock(dim_out * 2, dim_in, time_dim, groups)
        self.resnets = nn.ModuleList(ResnetBlock(dim_in + (dim_out if i == 0 else 0), dim_in, None, groups)
                                     for i in range(depth))
        self.attention = (SpatioTemporalAttention(dim_in, attention_heads, attention_head_dim)
                          if self_attention else None)
        self.cross_attention = ImageCrossAttention(dim_in, cross_heads, context_dim)


class SpaceTimeUNet(ModelMixin, ConfigMixin):
    """Noise predictor: latents [b, c, f, h, w], timesteps [b], context [b, n, d] -> [b, c, f, h, w]."""

    _supports_gradient_checkpointing = True
    # state-dict prefixes of optional, zero-initialised conditions: a checkpoint without them
    # (e.g. the released single-image model) initialises a model with them (`load_base_weights`)
    optional_condition_prefixes = ("references.", "pose_guider.", "first_frame.")

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        base_dim: int = 64,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        resnet_depths: tuple[int, ...] = (2, 2, 2, 2),
        self_attention: tuple[bool, ...] = (False, False, False, True),
        temporal_compression: tuple[bool, ...] = (False, False, False, True),
        cross_attention_heads: tuple[int, ...] = (1, 1, 2, 4),
        attention_heads: int = 8,
        attention_head_dim: int = 64,
        groups: int = 8,
        context_dim: int = 768,
        max_references: int = 0,
        pose_guider_channels: tuple[int, ...] | None = None,
        reference_pose_routing: float = 0.0,
        first_frame_attention: bool = False,
    ):
        super().__init__()
        levels = len(dim_mults)
        if not levels == len(resnet_depths) == len(self_attention) == len(temporal_compression) == len(
                cross_attention_heads):
            raise ValueError("dim_mults, resnet_depths, self_attention, temporal_compression and "
                             "cross_attention_heads must have one entry per level")
        dims = [base_dim, *(base_dim * m for m in dim_mults)]
        time_dim = base_dim * 4
        self.frame_multiple = 2 ** sum(map(bool, temporal_compression))
        self.size_multiple = 2 ** levels
        self.gradient_checkpointing = False

        self.time_embedding = SinusoidalTimestepEmbedding(base_dim, time_dim)
        self.conv_in = PseudoConv3d(in_channels, base_dim, kernel_size=7)
        shared = dict(time_dim=time_dim, context_dim=context_dim, attention_heads=attention_heads,
                      attention_head_dim=attention_head_dim, groups=groups)
        level_args = list(zip(dims[:-1], dims[1:], resnet_depths, self_attention, temporal_compression,
                              cross_attention_heads))
        self.down_levels = nn.ModuleList(DownLevel(*args, **shared) for args in level_args)
        mid = dims[-1]
        self.mid_resnet1 = ResnetBlock(mid, mid, time_dim, groups)
        self.mid_attention = SpatioTemporalAttention(mid, attention_heads, attention_head_dim)
        self.mid_resnet2 = ResnetBlock(mid, mid, time_dim, groups)
        self.up_levels = nn.ModuleList(UpLevel(*args, **shared) for args in reversed(level_args))  # deepest first
        self.conv_out = PseudoConv3d(base_dim, in_channels, kernel_size=3)
        self.skip_scale = 2 ** -0.5
        # each level's width and heads (its image cross-attention's), down then up (deepest first):
        # the sizes of the optional conditions' per-level blocks
        down_widths, up_widths = ([level.cross_attention.to_q.in_features for level in levels]
                                  for levels in (self.down_levels, self.up_levels))
        down_heads, up_heads = ([level.cross_attention.heads for level in levels]
                                for levels in (self.down_levels, self.up_levels))
        self.references = None
        if max_references > 0:
            self.references = ReferenceConditioning(down_widths, up_widths, down_heads, up_heads, context_dim,
                                                    max_references)
        if reference_pose_routing < 0:
            raise ValueError(f"reference_pose_routing must be >= 0 (0 = off), got {reference_pose_routing}")
        # skeleton images [b, 3, f, H, W] -> [b, base_dim, f, h, w], added after conv_in
        self.pose_guider = PoseGuider(base_dim, 3, tuple(pose_guider_channels)) if pose_guider_channels else None
        self.first_frame = None
        if first_frame_attention:
            self.first_frame = FirstFrameConditioning(down_widths, up_widths, down_heads, up_heads)

    def check_input_size(self, latents: torch.Tensor) -> None:
        if latents.ndim != 5:
            raise ValueError(f"latents must be [b, c, f, h, w], got shape {tuple(latents.shape)}")
        _, channels, frames, height, width = latents.shape
        if channels != self.config.in_channels:
            raise ValueError(f"latents have {channels} channels, the model expects {self.config.in_channels} "
                             "(latents are [b, c, f, h, w]: channels before frames)")
        if frames % self.frame_multiple:
            raise ValueError(f"number of frames ({frames}) must be a multiple of {self.frame_multiple} "
                             "(temporal compression halves the frames)")
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"latent height and width ({height}x{width}) must be multiples of "
                             f"{self.size_multiple} (one 2x downsampling per level)")

    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    def check_pose(self, pose: torch.Tensor, pose_mask: torch.Tensor | None, latents: torch.Tensor) -> None:
        """pose must be [b, 3, f, H, W] with H, W the latent size times the guider's downsampling."""
        if self.pose_guider is None:
            raise ValueError("poses given, but this model has no pose guider (trained with model.pose_guider=false): "
                             "it cannot follow poses")
        b, _, f, h, w = latents.shape
        factor = self.pose_guider.downsample_factor
        wanted = (b, 3, f, h * factor, w * factor)
        if tuple(pose.shape) != wanted:
            raise ValueError(f"pose must be [b, 3, f, H, W] = {list(wanted)} (skeleton images at {factor}x the "
                             f"latent size), got {list(pose.shape)}")
        if pose_mask is not None and tuple(pose_mask.shape) != (b,):
            raise ValueError(f"pose_mask must be bool [b] = [{b}], got {list(pose_mask.shape)}")

    def _reference_inputs(self, references, reference_mask, batch: int):
        """(references, mask) to run the reference attentions with, or None to skip them (R = 0).

        All-masked references still run (they add exactly zero), so every parameter is in the
        graph of every training step, as DistributedDataParallel requires.
        """
        if references is None or references.shape[1:2] == (0,):
            return None
        if self.references is None:
            raise ValueError("references given, but this model has no reference conditioning "
                             "(model.max_references=0)")
        return references, self.references.check(references, reference_mask, batch, self.config.context_dim)

    def _pose_routing(self, refs, context, pose_keypoints, reference_keypoints, pose_mask, frames: int):
        """`reference_pose_routing` (ProFashion's pose-aware prototypes, Eqs. 8-9): per frame,
        the views posed like the frame are the ones it draws on. Returns None (routing off, no
        references or no poses) or ((reference logits [b, f, r], gate [b, f]) for the reference
        attentions, routed context [b, n + r n, d] = the image's tokens then every reference's,
        and its logits [b, f, n + r n] for the image cross-attentions). The gate is the frame's
        softmax weight on the references rather than the image (1 for a video whose pose is
        dropped): a front-facing frame of a video with a back view takes nothing from the
        reference attention, a back-facing one all it gives.

        The candidates are the input image, posed as frame 0 (its own pose in pose-driven
        videos), and the references. Logits = -sharpness x pose distance (pose/similarity.py);
        a masked reference, one of unknown pose, and every reference of a video whose pose is
        dropped get -inf in the context, so the image cross-attention sees exactly the image's
        tokens there, as released (a dropped pose also zeroes the reference logits)."""
        sharpness = self.config.reference_pose_routing
        if refs is None or not sharpness or pose_keypoints is None or reference_keypoints is None:
            return None
        references, mask = refs
        b, r, n, _ = references.shape
        wanted_frames, wanted_references = (b, frames, 18, 3), (b, r, 18, 3)
        if tuple(pose_keypoints.shape) != wanted_frames:
            raise ValueError(f"pose_keypoints must be [b, f, 18, 3] = {list(wanted_frames)} (the driving keypoints "
                             f"of every frame), got {list(pose_keypoints.shape)}")
        if tuple(reference_keypoints.shape) != wanted_references:
            raise ValueError(f"reference_keypoints must be [b, r, 18, 3] = {list(wanted_references)} (each "
                             f"reference's pose; confidence 0 = unknown), got {list(reference_keypoints.shape)}")
        posed = torch.ones(b, dtype=torch.bool, device=mask.device) if pose_mask is None else pose_mask.bool()
        reference_logits = pose_routing_bias(pose_keypoints, reference_keypoints, sharpness)  # b f r
        reference_logits = reference_logits * posed.to(reference_logits.dtype)[:, None, None]
        logits = view_logits(pose_keypoints, reference_keypoints, mask, posed, sharpness)  # b f (1 + r)
        on_references = 1 - logits.softmax(-1)[..., 0]  # b f: the frame's weight on the references, not the image
        gate = torch.where(posed[:, None], on_references, torch.ones_like(on_references))
        logits = logits.repeat_interleave(context.shape[1], dim=2)
        routed = torch.cat((context, rearrange(references, "b r n d -> b (r n) d").to(context.dtype)), dim=1)
        return (reference_logits, gate), routed, logits

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor | float | int,
                context: torch.Tensor, *, references: torch.Tensor | None = None,
                reference_mask: torch.Tensor | None = None, pose: torch.Tensor | None = None,
                pose_mask: torch.Tensor | None = None, pose_keypoints: torch.Tensor | None = None,
                reference_keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """latents [b, c, f, h, w], timesteps [b] or scalar, context [b, n, d] -> noise [b, c, f, h, w].

        references [b, r, n, d]: adapter tokens of r extra views per video (r may be 0; needs
        model.max_references >= r); reference_mask bool [b, r], True = a real reference (for
        batches whose videos have different r). None, r = 0 or all masked: the base model.
        pose [b, 3, f, 8h, 8w]: rendered skeletons in [0, 1] (model.pose_guider); pose_mask bool
        [b], False = that video's pose is dropped (its guider features are zeroed). None: no pose.
        pose_keypoints [b, f, 18, 3] (the keypoints the skeletons were drawn from) and
        reference_keypoints [b, r, 18, 3] (each reference's pose): used only by
        `reference_pose_routing` > 0, which routes frames to the references posed like them.
        """
        self.check_input_size(latents)
        if pose is not None:
            self.check_pose(pose, pose_mask, latents)
        if context.ndim != 3 or context.shape[-1] != self.config.context_dim:
            raise ValueError(f"context must be [b, n, {self.config.context_dim}], got {tuple(context.shape)}")
        refs = self._reference_inputs(references, reference_mask, latents.shape[0])
        context = context.to(latents.dtype)
        routing = self._pose_routing(refs, context, pose_keypoints, reference_keypoints, pose_mask, latents.shape[2])
        cross = (context,)
        if routing is not None:
            (reference_logits, gate), routed_context, context_logits = routing
            refs, cross = (*refs, reference_logits, gate), (routed_context, context_logits)
        timesteps = torch.as_tensor(timesteps, device=latents.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(latents.shape[0])
        t = self.time_embedding(timesteps)  # b time_dim

        x = self.conv_in(latents)
        if pose is not None:  # Animate Anyone's pose guider: added to the first features
            guide = self._run(self.pose_guider, pose.to(x.dtype))  # b base_dim f h w
            if pose_mask is not None:
                guide = guide * pose_mask.to(guide.dtype)[:, None, None, None, None]
            x = x + guide
        skips = []
        for index, level in enumerate(self.down_levels):
            x = self._run(level.resnet_in, x, t)
            skips.append(x)
            for resnet in level.resnets:
                x = self._run(resnet, x)
            if self.first_frame is not None:
                x = self._run(self.first_frame.down[index], x)
            if level.attention is not None:
                x = self._run(level.attention, x)
            skips.append(x)
            x = level.downsample(x)
            x = self._run(level.cross_attention, x, *cross)
            if refs is not None:
                x = self._run(self.references.down[index], x, *refs)

        x = self._run(self.mid_resnet1, x, t)
        x = self._run(self.mid_attention, x)
        x = self._run(self.mid_resnet2, x, t)

        for index, level in enumerate(self.up_levels):
            x = level.upsample(x)
            x = torch.cat((skips.pop() * self.skip_scale, x), dim=1)
            x = self._run(level.resnet_in, x, t)
            x = torch.cat((skips.pop() * self.skip_scale, x), dim=1)
            for resnet in level.resnets:
                x = self._run(resnet, x)
            if self.first_frame is not None:
                x = self._run(self.first_frame.up[index], x)
            if level.attention is not None:
                x = self._run(level.attention, x)
            x = self._run(level.cross_attention, x, *cross)
            if refs is not None:
                x = self._run(self.references.up[index], x, *refs)
        return self.conv_out(x)
