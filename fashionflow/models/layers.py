"""Building blocks of the space-time U-Net (FASHIONFLOW.md, "Latent U-Net").

Tensors are [b, c, f, h, w] throughout. Parameters keep the shapes of the released code
(Conv2d / Conv1d weights of the pseudo-3D convs, Conv3d weights of the 1x1x1 projections), so
the released checkpoint maps tensor for tensor; the computations avoid the released code's
frame/pixel folds where a strided 3D op gives the same numbers (see docs/differences.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1(x1) conv over channels as one matrix product: x [b, c, ...], weight [o, c, 1, ...]
    -> [b, o, ...]. Same numbers as conv2d/conv3d; faster on CPU, where PyTorch sends 1x1
    kernels to its slow reference convolution when running on one thread."""
    b, c, *rest = x.shape
    out = torch.matmul(weight.reshape(weight.shape[0], c), x.reshape(b, c, -1))  # b o (f h w)
    if bias is not None:
        out = out + bias[:, None]
    return out.view(b, weight.shape[0], *rest)


class SinusoidalTimestepEmbedding(nn.Module):
    """Raw float timestep -> sin/cos features -> Linear -> SiLU ("to_timestep_cond").

    Frequencies exp(-i * log(theta) / (half - 1)), i = 0..half-1; the first half of the
    features are sines, the second cosines (the released SinusoidalPosEmb).
    """

    def __init__(self, dim: int, out_dim: int, theta: float = 10000.0):
        super().__init__()
        self.dim, self.theta = dim, theta
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """timesteps [b] (int or float) -> [b, out_dim]."""
        half = self.dim // 2
        step = math.log(self.theta) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=timesteps.device, dtype=torch.float32) * -step)
        angles = timesteps.float()[:, None] * freqs[None, :]  # b half
        features = torch.cat((angles.sin(), angles.cos()), dim=-1)
        return F.silu(self.linear(features.to(self.linear.weight.dtype)))


class PseudoConv3d(nn.Module):
    """A k x k conv over every frame, then (k > 1) a 3-tap conv along frames at every pixel.

    Make-A-Video's factorised conv. The temporal conv starts as the identity (Dirac weights,
    zero bias) so a fresh layer passes a static video through unchanged in time. The spatial
    conv runs as a 3D conv with kernel (1, k, k) on [b, c, f, h, w], the temporal one as a 2D
    conv with kernel (3, 1) on the [b, c, f, (h w)] view: the released fold-into-batch
    formulation's numbers without its transposes.
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 3, temporal_kernel_size: int = 3):
        super().__init__()
        self.spatial = nn.Conv2d(dim_in, dim_out, kernel_size, padding=kernel_size // 2)
        self.temporal = (nn.Conv1d(dim_out, dim_out, temporal_kernel_size, padding=temporal_kernel_size // 2)
                         if kernel_size > 1 else None)
        if self.temporal is not None:  # start as the identity in time
            nn.init.dirac_(self.temporal.weight.data)
            nn.init.zeros_(self.temporal.bias.data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, c_in, f, h, w] -> [b, c_out, f, h, w]."""
        pad = self.spatial.padding[0]
        if self.spatial.kernel_size[0] == 1:
            x = pointwise_conv(x, self.spatial.weight, self.spatial.bias)
        else:
            x = F.conv3d(x, self.spatial.weight.unsqueeze(2), self.spatial.bias, padding=(0, pad, pad))
        if self.temporal is not None:
            b, c, f, h, w = x.shape
            x = F.conv2d(x.reshape(b, c, f, h * w), self.temporal.weight.unsqueeze(-1), self.temporal.bias,
                         padding=(self.temporal.padding[0], 0)).view(b, c, f, h, w)
        return x


class ResnetBlock(nn.Module):
    """(pseudo-3D conv 3x3 -> GroupNorm -> [scale/shift] -> SiLU) x 2, plus a 1x1 skip projection.

    Only the first block of each level and the two middle blocks are time-conditioned: their
    first norm is followed by x * (scale + 1) + shift from SiLU -> Linear of the time embedding.
    GroupNorm statistics span all frames, as released.
    """

    def __init__(self, dim_in: int, dim_out: int, time_dim: int | None = None, groups: int = 8):
        super().__init__()
        self.time_proj = nn.Linear(time_dim, dim_out * 2) if time_dim is not None else None
        self.conv1 = PseudoConv3d(dim_in, dim_out, 3)
        self.norm1 = nn.GroupNorm(groups, dim_out)
        self.conv2 = PseudoConv3d(dim_out, dim_out, 3)
        self.norm2 = nn.GroupNorm(groups, dim_out)
        self.skip_proj = PseudoConv3d(dim_in, dim_out, 1) if dim_in != dim_out else None

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        """x [b, c_in, f, h, w], time_emb [b, time_dim] -> [b, c_out, f, h, w]."""
        h = self.norm1(self.conv1(x))
        if self.time_proj is not None:
            scale, shift = rearrange(self.time_proj(F.silu(time_emb)), "b c -> b c 1 1 1").chunk(2, dim=1)
            h = h * (scale + 1) + shift
        h = F.silu(h)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + (self.skip_proj(x) if self.skip_proj is not None else x)


class Downsample(nn.Module):
    """2x2 pixel-unshuffle + 1x1 conv (4c -> c); optionally frames by 2 + 1x1x1 conv (2c -> c)."""

    def __init__(self, dim: int, compress_time: bool):
        super().__init__()
        self.space_proj = nn.Conv2d(dim * 4, dim, 1, bias=False)
        self.time_proj = nn.Conv3d(dim * 2, dim, 1, bias=False) if compress_time else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, c, f, h, w] -> [b, c, f (/2), h/2, w/2]."""
        x = rearrange(x, "b c f (h p1) (w p2) -> b (c p1 p2) f h w", p1=2, p2=2)
        x = pointwise_conv(x, self.space_proj.weight)
        if self.time_proj is not None:
            x = pointwise_conv(rearrange(x, "b c (f p) h w -> b (c p) f h w", p=2), self.time_proj.weight)
        return x


class Upsample(nn.Module):
    """1x1 conv (c -> 4c) + 2x2 pixel-shuffle; optionally 1x1x1 conv (c -> 2c) + frame shuffle.

    The weights start as a kaiming-uniform kernel repeated per sub-pixel (and per sub-frame),
    bias zero, so a fresh layer upsamples like nearest-neighbour (released init).
    """

    def __init__(self, dim: int, expand_time: bool):
        super().__init__()
        self.space_proj = nn.Conv2d(dim, dim * 4, 1)
        self.time_proj = nn.Conv3d(dim, dim * 2, 1) if expand_time else None
        for conv, factor in ((self.space_proj, 4), (self.time_proj, 2)):
            if conv is not None:
                kernel = torch.empty(conv.weight.shape[0] // factor, *conv.weight.shape[1:])
                nn.init.kaiming_uniform_(kernel)
                conv.weight.data.copy_(kernel.repeat_interleave(factor, dim=0))
                nn.init.zeros_(conv.bias.data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, c, f, h, w] -> [b, c, f (*2), 2h, 2w]."""
        x = pointwise_conv(x, self.space_proj.weight, self.space_proj.bias)
        x = rearrange(x, "b (c p1 p2) f h w -> b c f (h p1) (w p2)", p1=2, p2=2)
        if self.time_proj is not None:
            x = pointwise_conv(x, self.time_proj.weight, self.time_proj.bias)
            x = rearrange(x, "b (c p) f h w -> b c (f p) h w", p=2)
        return x
