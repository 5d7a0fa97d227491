"""Attention blocks of the space-time U-Net: factorised spatio-temporal self-attention
(Make-A-Video / Ho et al.) and the cross-attention to the image context (FashionFlow Sec. 3).

All attention runs through `F.scaled_dot_product_attention`; the continuous relative position
bias enters as an additive float mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fashionflow.models.layers import pointwise_conv


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v through `scaled_dot_product_attention`.

    q [n, heads, l, d], k and v [n, heads, s, d], bias broadcastable to [n, heads, l, s]. On CPU
    with gradients the math backend is used: the CPU flash kernel's backward is over 10x slower
    for the long-query, 50-key cross-attention (benchmarks in docs/benchmarks.md).
    """
    if q.device.type == "cpu" and torch.is_grad_enabled():
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def to_frames(per_frame: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame values [b, f', ...] -> [b, frames, ...], average-pooled over the f' frames (a
    level that compressed time has fewer frames than the video); unchanged when f' = frames."""
    if per_frame.shape[1] == frames:
        return per_frame
    flat = rearrange(per_frame, "b f ... -> b (...) f")
    pooled = F.adaptive_avg_pool1d(flat, frames)
    return rearrange(pooled, "b s f -> b f s").reshape(per_frame.shape[0], frames, *per_frame.shape[2:])


def attend_per_frame(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frame_bias: torch.Tensor,
                     frames: int) -> torch.Tensor:
    """`attend` with logits that depend on the query's frame: q [b, heads, (f l), d] (frame-major
    tokens, f = `frames`), k and v [b, heads, s, d], frame_bias [b, f', s] (f' frames pooled to f
    by `to_frames`) -> [b, heads, (f l), d]. Frames are folded into the batch; keys are repeated
    per frame, cheap for the few context tokens."""
    frame_bias = to_frames(frame_bias, frames)
    attended = attend(rearrange(q, "b h (f l) d -> (b f) h l d", f=frames),
                      repeat(k, "b h s d -> (b f) h s d", f=frames), repeat(v, "b h s d -> (b f) h s d", f=frames),
                      rearrange(frame_bias.to(q.dtype), "b f s -> (b f) 1 1 s"))
    return rearrange(attended, "(b f) h l d -> b h (f l) d", f=frames)


class ContinuousPositionBias(nn.Module):
    """Relative-position bias from a small MLP over the raw integer offsets (Swin v2 style).

    For an n-d grid of sizes (d1, ..., dn) the MLP (Linear -> SiLU -> Linear -> SiLU -> Linear)
    maps each of the prod(2 d_i - 1) offsets to one bias per head; the result is gathered into a
    [heads, L, L] matrix, L = prod(d_i).
    """

    def __init__(self, dim: int, heads: int, num_dims: int):
        super().__init__()
        self.num_dims = num_dims
        self.mlp = nn.Sequential(nn.Linear(num_dims, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU(),
                                 nn.Linear(dim, heads))

    def forward(self, *sizes: int) -> torch.Tensor:
        """sizes (d1, ..., dn) -> bias [heads, L, L]."""
        device = self.mlp[0].weight.device
        axes = [torch.arange(size, device=device) for size in sizes]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))  # L n
        offsets = grid[:, None, :] - grid[None, :, :]  # L L n, each in (-d_i, d_i)
        rel_axes = [torch.arange(-size + 1, size, device=device) for size in sizes]
        rel_grid = torch.stack(torch.meshgrid(*rel_axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))
        table = self.mlp(rel_grid.to(self.mlp[0].weight.dtype))  # R heads
        # index of each offset in rel_grid: mixed-radix number with radices (2 d_i - 1)
        index = torch.zeros(offsets.shape[:2], dtype=torch.long, device=device)
        for axis, size in enumerate(sizes):
            index = index * (2 * size - 1) + offsets[..., axis] + size - 1
        return rearrange(table[index], "i j h -> h i j")


class SelfAttention(nn.Module):
    """Pre-LayerNorm multi-head self-attention; q/kv/out without bias, output projection
    zero-initialised so the block starts as the identity (with its residual)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        nn.init.zeros_(self.to_out.weight.data)  # the block starts as the identity

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [n, l, c], bias [heads, l, l] -> [n, l, c] (without the residual)."""
        x = self.norm(x)
        q, k, v = (self.to_q(x), *self.to_kv(x).chunk(2, dim=-1))
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=self.heads) for t in (q, k, v))
        if bias is not None:
            bias = bias.to(q.dtype)
        out = attend(q, k, v, bias)
        return self.to_out(rearrange(out, "n h l d -> n l (h d)"))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels of [b, c, f, h, w], gain only; the variance is clamped below at
    eps (1e-5 in fp32, 1e-3 otherwise) rather than offset, as released."""

    def __init__(self, dim: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * var.clamp(min=eps).rsqrt() * self.gain


class TokenShiftFeedForward(nn.Module):
    """1x1x1 conv -> GEGLU on channels -> shift the second half of the channels one frame
    forward (zero-filled) -> channel LayerNorm -> 1x1x1 conv. inner = int(4 * 2/3 * dim)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = int(dim * mult * 2 / 3)
        self.proj_in = nn.Conv3d(dim, inner * 2, 1, bias=False)
        self.norm = ChannelLayerNorm(inner)
        self.proj_out = nn.Conv3d(inner, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, c, f, h, w] -> [b, c, f, h, w] (without the residual)."""
        x, gate = pointwise_conv(x, self.proj_in.weight).chunk(2, dim=1)
        x = x * F.gelu(gate)
        # torch.chunk: the first part takes the odd channel, as in the released shift_token
        keep, shift = x.chunk(2, dim=1)
        shift = F.pad(shift, (0, 0, 0, 0, 1, -1))  # frame t gets frame t-1; frame 0 gets zeros
        return pointwise_conv(self.norm(torch.cat((keep, shift), dim=1)), self.proj_out.weight)


class SpatioTemporalAttention(nn.Module):
    """Spatial attention over the h*w tokens of each frame, then temporal attention over the
    frames of each pixel, each with a continuous relative position bias and a residual; then
    the token-shift feed-forward with a residual (levels with self-attention and the middle)."""

    def __init__(self, dim: int, heads: int = 8, head_dim: int = 64):
        super().__init__()
        self.spatial_attention = SelfAttention(dim, heads, head_dim)
        self.spatial_position_bias = ContinuousPositionBias(dim // 2, heads, num_dims=2)
        self.temporal_attention = SelfAttention(dim, heads, head_dim)
        self.temporal_position_bias = ContinuousPositionBias(dim // 2, heads, num_dims=1)
        self.feed_forward = TokenShiftFeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, c, f, h, w] -> [b, c, f, h, w]."""
        b, c, f, h, w = x.shape
        tokens = rearrange(x, "b c f h w -> (b f) (h w) c")
        tokens = tokens + self.spatial_attention(tokens, self.spatial_position_bias(h, w))
        tokens = rearrange(tokens, "(b f) (h w) c -> (b h w) f c", b=b, h=h)
        tokens = tokens + self.temporal_attention(tokens, self.temporal_position_bias(f))
        x = rearrange(tokens, "(b h w) f c -> b c f h w", b=b, h=h)
        return x + self.feed_forward(x)


class ImageCrossAttention(nn.Module):
    """Cross-attention from every video token to the image context, then a GEGLU MLP, each
    pre-LayerNorm with a residual; then a 1x1 conv per frame (FashionFlow Sec. 3.2, the
    released AttentionBlock: once per U-Net level). There is no residual around the 1x1 conv."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"cross-attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, dim * 8)
        self.ff_out = nn.Linear(dim * 4, dim)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, frame_bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [b, c, f, h, w], context [b, n, context_dim] -> [b, c, f, h, w].

        frame_bias [b, f', n] (optional): logits added per frame to each context token (the
        pose-routed context of `model.reference_pose_routing`: the image's tokens and the
        references', each frame drawing on the views posed like it). None: as released.
        Tokens are taken in (f h w) order; the released (h w f) order gives the same result
        because every operation here is per token or symmetric in the queries.
        """
        b, c, f, h, w = x.shape
        tokens = rearrange(x, "b c f h w -> b (f h w) c")
        q = rearrange(self.to_q(self.attn_norm(tokens)), "b l (h d) -> b h l d", h=self.heads)
        k, v = (rearrange(proj(context), "b n (h d) -> b h n d", h=self.heads).to(q.dtype)
                for proj in (self.to_k, self.to_v))
        attended = attend(q, k, v) if frame_bias is None else attend_per_frame(q, k, v, frame_bias, f)
        tokens = tokens + self.to_out(rearrange(attended, "b h l d -> b l (h d)"))
        hidden, gate = self.ff_in(self.ff_norm(tokens)).chunk(2, dim=-1)
        tokens = tokens + self.ff_out(hidden * F.gelu(gate))
        x = rearrange(tokens, "b (f h w) c -> b c f h w", f=f, h=h)
        return pointwise_conv(x, self.proj_out.weight, self.proj_out.bias)
