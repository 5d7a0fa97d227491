"""Pose guider: rendered skeletons -> a feature map added to the U-Net's first features.

Animate Anyone (Hu et al. 2023, Sec. 3.2 "Pose Guider"; MooreThreads/Moore-AnimateAnyone
`src/models/pose_guider.py`): "four convolution layers (4x4 kernels, 2x2 strides, using 16,
32, 64, 128 channels, similar to the condition encoder in ControlNet)" bring the pose image to
the latent size; the released code uses 3x3 convolutions, each channel change a stride-2
convolution after a stride-1 one, SiLU between them, applied to every frame on its own, and a
final zero-initialised convolution whose output is added to the noise latents. Here the
output has the U-Net's `base_dim` channels and is added after `conv_in` (the shared design of
the optional conditions: zero at initialisation, so a model with a fresh guider equals the
model without one, and fine-tuning starts from the released weights).

    skeletons [b, 3, f, H, W] -> per frame: conv 3x3 (3 -> c0), SiLU,
    for each next width c_i: conv 3x3 (c_{i-1} -> c_{i-1}), SiLU, conv 3x3 stride 2 (-> c_i), SiLU,
    conv 3x3 (c_last -> out_channels), zero-initialised  -> [b, out_channels, f, H / 2^k, W / 2^k]

with k = len(channels) - 1 stride-2 steps (3 for the default widths: the VAE's factor 8).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F


class PoseGuider(nn.Module):
    """Skeleton images [b, 3, f, H, W] in [0, 1] -> features [b, out_channels, f, H / 2^k, W / 2^k]."""

    def __init__(self, out_channels: int, in_channels: int = 3, channels: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        if len(channels) < 1:
            raise ValueError("channels needs at least one width")
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for width_in, width_out in zip(channels[:-1], channels[1:]):
            self.blocks.append(nn.Conv2d(width_in, width_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(width_in, width_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(channels[-1], out_channels, kernel_size=3, padding=1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The one zero initialisation: the output convolution, so the guider adds nothing at step 0."""
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, skeletons: torch.Tensor) -> torch.Tensor:
        """skeletons [b, c, f, H, W] -> [b, out_channels, f, H / factor, W / factor]."""
        if skeletons.ndim != 5 or skeletons.shape[1] != self.conv_in.in_channels:
            raise ValueError(f"pose images must be [b, {self.conv_in.in_channels}, f, H, W], "
                             f"got {tuple(skeletons.shape)}")
        height, width = skeletons.shape[-2:]
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(f"pose image size {height}x{width} must be a multiple of {self.downsample_factor} "
                             "(the guider halves it at each stride-2 convolution)")
        frames = skeletons.shape[2]
        x = rearrange(skeletons, "b c f h w -> (b f) c h w")
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        x = self.conv_out(x)
        return rearrange(x, "(b f) c h w -> b c f h w", f=frames)
