"""The image-conditioning adapter (FASHIONFLOW.md "Conditioning adapter"; the released
Embedding_Adapter): global CLIP tokens + local VAE tokens -> one context for cross-attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn


INPUTS = ("clip_and_vae", "clip", "vae", "disabled")


class ImageConditionAdapter(ModelMixin, ConfigMixin):
    """CLIP hidden states [b, n, d] + image latent [b, c, h, w] -> context [b, n, d].

    The latent is 2x2 max-pooled, each channel flattened to (h/2)(w/2) values and projected to
    d, giving c extra tokens after the n CLIP tokens; a Linear(n + c, n) along the token axis,
    initialised to the identity on the CLIP tokens, mixes them back to n tokens.

    `inputs` (paper Table 2 ablation, `model.global_conditioning`): "clip_and_vae" (released),
    "clip" (the VAE tokens are zeros), "vae" (the CLIP tokens are zeros), "disabled" (the context is
    all zeros: no global conditioning; the cross-attention then adds only its biases).
    """

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_height: int = 80, latent_width: int = 64,
                 context_dim: int = 768, num_context_tokens: int = 50, inputs: str = "clip_and_vae"):
        super().__init__()
        if inputs not in INPUTS:
            raise ValueError(f"adapter inputs={inputs!r} is not one of {', '.join(INPUTS)}")
        pooled = (latent_height // 2) * (latent_width // 2)
        self.latent_to_tokens = nn.Linear(pooled, context_dim)  # released: Linear(1280, 768)
        self.token_mixer = nn.Linear(num_context_tokens + latent_channels, num_context_tokens)
        with torch.no_grad():
            self.token_mixer.weight.copy_(torch.eye(num_context_tokens, num_context_tokens + latent_channels))

    def forward(self, clip_hidden_states: torch.Tensor, image_latent: torch.Tensor) -> torch.Tensor:
        """clip_hidden_states [b, n, d], image_latent [b, c, h, w] -> [b, n, d]."""
        cfg = self.config
        if image_latent.shape[1:] != (cfg.latent_channels, cfg.latent_height, cfg.latent_width):
            raise ValueError(f"image latent must be [b, {cfg.latent_channels}, {cfg.latent_height}, "
                             f"{cfg.latent_width}], got {tuple(image_latent.shape)}; the adapter's "
                             "projection size depends on the latent size")
        if clip_hidden_states.shape[1:] != (cfg.num_context_tokens, cfg.context_dim):
            raise ValueError(f"CLIP hidden states must be [b, {cfg.num_context_tokens}, {cfg.context_dim}], "
                             f"got {tuple(clip_hidden_states.shape)}")
        dtype = self.latent_to_tokens.weight.dtype
        if cfg.inputs == "disabled":
            return clip_hidden_states.new_zeros(clip_hidden_states.shape, dtype=dtype)
        pooled = rearrange(F.max_pool2d(image_latent.to(dtype), 2), "b c h w -> b c (h w)")
        clip_tokens, vae_tokens = clip_hidden_states.to(dtype), self.latent_to_tokens(pooled)
        if cfg.inputs == "clip":
            vae_tokens = torch.zeros_like(vae_tokens)
        elif cfg.inputs == "vae":
            clip_tokens = torch.zeros_like(clip_tokens)
        tokens = torch.cat((clip_tokens, vae_tokens), dim=1)  # b (n+c) d
        return rearrange(self.token_mixer(rearrange(tokens, "b n d -> b d n")), "b d n -> b n d")
