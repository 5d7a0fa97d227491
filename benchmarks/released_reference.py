"""A reference of the released FashionFlow U-Net and adapter in the released formulation.

Written from FASHIONFLOW.md for two uses only: (1) tests check that our modules, loaded through
`fashionflow.official`, give the same outputs as this released-layout network on the same
weights; (2) `benchmarks/unet.py` times both. It keeps the released module names (so the
released state dict loads with strict=True) and the released computation style: frames and
pixels folded into the batch for each conv, einsum attention, every skip tensor cloned.
It is not used by the package.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import einsum, nn


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t[:, None] * freqs[None]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class PseudoConv3d(nn.Module):
    def __init__(self, dim, dim_out, kernel_size):
        super().__init__()
        self.spatial_conv = nn.Conv2d(dim, dim_out, kernel_size, padding=kernel_size // 2)
        self.temporal_conv = nn.Conv1d(dim_out, dim_out, 3, padding=1) if kernel_size > 1 else None
        if self.temporal_conv is not None:
            nn.init.dirac_(self.temporal_conv.weight.data)
            nn.init.zeros_(self.temporal_conv.bias.data)

    def forward(self, x):
        b, _, f, h, w = x.shape
        x = rearrange(self.spatial_conv(rearrange(x, "b c f h w -> (b f) c h w")), "(b f) c h w -> b c f h w", b=b)
        if self.temporal_conv is None:
            return x
        x = self.temporal_conv(rearrange(x, "b c f h w -> (b h w) c f"))
        return rearrange(x, "(b h w) c f -> b c f h w", h=h, w=w)


class Block(nn.Module):
    def __init__(self, dim, dim_out):
        super().__init__()
        self.project = PseudoConv3d(dim, dim_out, 3)
        self.norm = nn.GroupNorm(8, dim_out)

    def forward(self, x, scale_shift=None):
        x = self.norm(self.project(x))
        if scale_shift is not None:
            x = x * (scale_shift[0] + 1) + scale_shift[1]
        return F.silu(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim, dim_out, time_dim=None):
        super().__init__()
        self.timestep_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2)) if time_dim else None
        self.block1, self.block2 = Block(dim, dim_out), Block(dim_out, dim_out)
        self.res_conv = PseudoConv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, t=None):
        scale_shift = None
        if self.timestep_mlp is not None:
            scale_shift = rearrange(self.timestep_mlp(t), "b c -> b c 1 1 1").chunk(2, dim=1)
        return self.block2(self.block1(x, scale_shift)) + self.res_conv(x)


class Attention(nn.Module):
    def __init__(self, dim, heads=8, dim_head=64):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, heads * dim_head * 2, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        nn.init.zeros_(self.to_out.weight.data)

    def forward(self, x, bias):
        x = self.norm(x)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (self.to_q(x), *self.to_kv(x).chunk(2, -1)))
        sim = einsum("b h i d, b h j d -> b h i j", q * self.scale, k) + bias
        out = einsum("b h i j, b h j d -> b h i d", sim.softmax(dim=-1), v)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class ContinuousPositionBias(nn.Module):
    def __init__(self, dim, heads, num_dims):
        super().__init__()
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(num_dims, dim), nn.SiLU()),
                                  nn.Sequential(nn.Linear(dim, dim), nn.SiLU()), nn.Linear(dim, heads)])

    def forward(self, *dims):
        device = self.net[0][0].weight.device
        shape = torch.tensor(dims, device=device)
        strides = torch.flip(F.pad(torch.flip(2 * shape - 1, (0,)).cumprod(-1), (1, -1), value=1), (0,))
        grid = torch.stack(torch.meshgrid(*[torch.arange(d, device=device) for d in dims], indexing="ij"), -1)
        grid = grid.reshape(-1, len(dims))
        rel = grid[:, None] - grid[None]
        rel_grid = torch.stack(torch.meshgrid(*[torch.arange(-d + 1, d, device=device) for d in dims],
                                              indexing="ij"), -1)
        bias = rel_grid.reshape(-1, len(dims)).float()
        for layer in self.net:
            bias = layer(bias)
        return rearrange(bias[((rel + shape - 1) * strides).sum(-1)], "i j h -> h i j")


class ChanLayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim, 1, 1, 1))

    def forward(self, x):
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        return (x - x.mean(dim=1, keepdim=True)) * var.clamp(min=1e-5).rsqrt() * self.g


class GEGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        inner = int(dim * 4 * 2 / 3)
        self.proj_in = nn.Sequential(nn.Conv3d(dim, inner * 2, 1, bias=False), GEGLU())
        self.proj_out = nn.Sequential(ChanLayerNorm(inner), nn.Conv3d(inner, dim, 1, bias=False))

    def forward(self, x):
        x = self.proj_in(x)
        keep, shift = x.chunk(2, dim=1)
        return self.proj_out(torch.cat((keep, F.pad(shift, (0, 0, 0, 0, 1, -1))), dim=1))


class SpatioTemporalAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.spatial_attn, self.temporal_attn = Attention(dim), Attention(dim)
        self.spatial_rel_pos_bias = ContinuousPositionBias(dim // 2, 8, 2)
        self.temporal_rel_pos_bias = ContinuousPositionBias(dim // 2, 8, 1)
        self.ff = FeedForward(dim)

    def forward(self, x):
        b, c, f, h, w = x.shape
        x = rearrange(x, "b c f h w -> (b f) (h w) c")
        x = self.spatial_attn(x, self.spatial_rel_pos_bias(h, w)) + x
        x = rearrange(x, "(b f) (h w) c -> (b h w) f c", b=b, h=h)
        x = self.temporal_attn(x, self.temporal_rel_pos_bias(f)) + x
        x = rearrange(x, "(b h w) f c -> b c f h w", b=b, h=h)
        return self.ff(x) + x


class CrossAttention(nn.Module):
    def __init__(self, heads, dim, context_dim=768):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(context_dim, dim, bias=False)
        self.v_proj = nn.Linear(context_dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, context):
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads)
                   for t in (self.q_proj(x), self.k_proj(context), self.v_proj(context)))
        weight = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        return self.out_proj(rearrange(weight.softmax(-1) @ v, "b h n d -> b n (h d)"))


class AttentionBlock(nn.Module):
    def __init__(self, heads, head_dim):
        super().__init__()
        dim = heads * head_dim
        self.layernorm_2, self.layernorm_3 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention_2 = CrossAttention(heads, dim)
        self.linear_geglu_1, self.linear_geglu_2 = nn.Linear(dim, 8 * dim), nn.Linear(4 * dim, dim)
        self.conv_output = PseudoConv3d(dim, dim, 1)

    def forward(self, x, context):
        b, c, f, h, w = x.shape
        x = rearrange(x, "b c f h w -> b (h w f) c")
        x = self.attention_2(self.layernorm_2(x), context) + x
        hidden, gate = self.linear_geglu_1(self.layernorm_3(x)).chunk(2, dim=-1)
        x = self.linear_geglu_2(hidden * F.gelu(gate)) + x
        return self.conv_output(rearrange(x, "b (h w f) c -> b c f h w", h=h, w=w))


class Downsample(nn.Module):
    def __init__(self, dim, time):
        super().__init__()
        self.down_space = nn.Sequential(nn.Identity(), nn.Conv2d(dim * 4, dim, 1, bias=False))
        self.down_time = nn.Sequential(nn.Identity(), nn.Conv3d(dim * 2, dim, 1, bias=False)) if time else None

    def forward(self, x):
        b = x.shape[0]
        x = rearrange(x, "b c f (h p1) (w p2) -> (b f) (c p1 p2) h w", p1=2, p2=2)
        x = rearrange(self.down_space(x), "(b f) c h w -> b c f h w", b=b)
        if self.down_time is not None:
            x = self.down_time(rearrange(x, "b c (f p) h w -> b (c p) f h w", p=2))
        return x


class Upsample(nn.Module):
    def __init__(self, dim, time):
        super().__init__()
        self.up_space = nn.Sequential(nn.Conv2d(dim, dim * 4, 1))
        self.up_time = nn.Sequential(nn.Conv3d(dim, dim * 2, 1)) if time else None

    def forward(self, x):
        b = x.shape[0]
        x = self.up_space(rearrange(x, "b c f h w -> (b f) c h w"))
        x = rearrange(x, "(b f) (c p1 p2) h w -> b c f (h p1) (w p2)", b=b, p1=2, p2=2)
        if self.up_time is not None:
            x = rearrange(self.up_time(x), "b (c p) f h w -> b c (f p) h w", p=2)
        return x


class SpaceTimeUnet(nn.Module):
    """The released network at the paper configuration (base 64, mults 1,2,4,8)."""

    def __init__(self, dim=64, channels=4):
        super().__init__()
        dims = [dim, dim, 2 * dim, 4 * dim, 8 * dim]
        time_dim = dim * 4
        self.to_timestep_cond = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_dim), nn.SiLU())
        down_heads, up_heads = [(1, 64), (1, 128), (2, 128), (4, 128)], [(1, 64), (1, 64), (2, 64), (4, 64)]
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for level, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = level == 3
            self.downs.append(nn.ModuleList([
                ResnetBlock(d_in, d_out, time_dim), nn.ModuleList([ResnetBlock(d_out, d_out) for _ in range(2)]),
                SpatioTemporalAttention(d_out) if last else None, Downsample(d_out, last),
                AttentionBlock(*down_heads[level])]))
            self.ups.append(nn.ModuleList([
                ResnetBlock(d_out * 2, d_in, time_dim),
                nn.ModuleList([ResnetBlock(d_in + (d_out if i == 0 else 0), d_in) for i in range(2)]),
                SpatioTemporalAttention(d_in) if last else None, Upsample(d_out, last), AttentionBlock(*up_heads[level])]))
        self.mid_block1 = ResnetBlock(dims[-1], dims[-1], time_dim)
        self.mid_attn = SpatioTemporalAttention(dims[-1])
        self.mid_block2 = ResnetBlock(dims[-1], dims[-1], time_dim)
        self.conv_in = PseudoConv3d(channels, dim, 7)
        self.conv_out = PseudoConv3d(dim, channels, 3)

    def forward(self, x, context, timestep):
        t = self.to_timestep_cond(timestep.float())
        x = self.conv_in(x)
        hiddens = []
        for block1, blocks, attention, downsample, cross in self.downs:
            x = block1(x, t)
            hiddens.append(x.clone())
            for block in blocks:
                x = block(x)
            if attention is not None:
                x = attention(x)
            hiddens.append(x.clone())
            x = cross(downsample(x), context)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t)), t)
        for block1, blocks, attention, upsample, cross in reversed(self.ups):
            x = torch.cat((hiddens.pop() * 2 ** -0.5, upsample(x)), dim=1)
            x = torch.cat((hiddens.pop() * 2 ** -0.5, block1(x, t)), dim=1)
            for block in blocks:
                x = block(x)
            if attention is not None:
                x = attention(x)
            x = cross(x, context)
        return self.conv_out(x)


class EmbeddingAdapter(nn.Module):
    def __init__(self):
        super().__init__()
        self.vae2clip = nn.Linear(1280, 768)
        self.linear1 = nn.Linear(54, 50)
        self.linear1.weight = nn.Parameter(torch.eye(50, 54))

    def forward(self, clip, latent):
        latent = self.vae2clip(rearrange(F.max_pool2d(latent, 2), "b c h w -> b c (h w)"))
        tokens = rearrange(torch.cat((clip, latent), 1), "b n d -> b d n")
        return rearrange(self.linear1(tokens), "b d n -> b n d")


def randomize_(module: nn.Module, generator: torch.Generator, scale: float = 0.05) -> nn.Module:
    """Give every tensor non-trivial values (the released init zeroes some projections), so an
    equivalence test exercises every weight."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * scale
            param.copy_((1.0 + noise) if ("norm" in name and "weight" in name) or name.endswith(".g") else noise)
    return module
