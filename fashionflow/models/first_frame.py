"""First-frame attention: every frame reads the input frame's features at full resolution.

Not in the paper or the released code (an option, `model.first_frame_attention`, off in the
released preset; docs/differences.md). FashionFlow hands the input image to the U-Net twice: as
global tokens (CLIP and VAE, through the image cross-attention) and as frame 0 of the latent,
clean (local conditioning, FASHIONFLOW.md). What frame 0 shows reaches frame t only through
temporal convolutions (kernel 3, so a few frames per level) and the space-time attention of the
deepest levels, where the demo's 16 x 16 latent is 4 x 4: a check or a stripe of the garment
has no path to later frames at the resolution it is drawn at, and the demo smears it within a
few frames even where the figure barely moves (docs/benchmarks.md, "First-frame attention").

The fix video models use for this is attention from each frame to the first one's features:
Tune-A-Video's sparse-causal attention, Text2Video-Zero's cross-frame attention, Animate Anyone's
ReferenceNet (spatial attention over the reference's features, concatenated). Here, per U-Net
level where the frames are still uncompressed (after the level's resnets, down and up):

    x_t = x_t + W_out . Attention(q = LN(x_t), k = v = LN(x_0), bias = -s_head x |p_q - p_k|^2)

for every frame t, with its own projections and a learned 2-D locality bias: each head's logits
fall with the squared distance (in the level's pixels) between the query's and the key's place,
at a learned rate s_head = softplus(a_head) that starts at 1, 1/4, 1/16, ... per head (ALiBi's
slopes, in two dimensions). A pixel of frame t most likely shows what frame 0 showed nearby, so
from the first step the block reads frame 0 around the same place (the narrowest head almost at
it) and its gradient is informative at once; the content term q . k learns where the garment has
moved. (A free relative-position MLP, Swin v2's, started without that prior: in 1900 steps of
the demo its output projections stayed near zero and the held-out loss did not move; docs/benchmarks.md.)
W_out (weight and bias) starts at zero, so a model initialised from a checkpoint without the
module is that checkpoint at step 0 (ControlNet's zero convolution). Frame 0 attending to itself
is allowed. With `diffusion.local_conditioning=false` (paper Table 2) frame 0 is noised like the
others, and the frames read it as it is. Cost per level: f x (h w)^2 attention logits, 24 x 256^2
at the demo's largest level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fashionflow.models.attention import attend


class FirstFrameAttention(nn.Module):
    """Pre-LayerNorm attention from every frame's tokens to frame 0's tokens (same level), with
    a learned 2-D locality bias per head; output projection zero-initialised, added residually."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"first-frame attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        # softplus(locality) = 1, 1/4, 1/16, ...: the rate at which each head's logits fall per squared pixel
        rates = 4.0 ** -torch.arange(heads, dtype=torch.float32)
        self.locality = nn.Parameter(torch.log(torch.expm1(rates)))

    def locality_bias(self, height: int, width: int) -> torch.Tensor:
        """-softplus(locality) x squared distance between every query and key place: [heads, (h w), (h w)]."""
        rows, cols = torch.meshgrid(torch.arange(height, device=self.locality.device),
                                    torch.arange(width, device=self.locality.device), indexing="ij")
        places = torch.stack((rows, cols), dim=-1).reshape(-1, 2).float()  # (h w) 2
        squared = (places[:, None] - places[None]).square().sum(-1)  # (h w) (h w)
        return -F.softplus(self.locality)[:, None, None] * squared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [b, c, f, h, w] -> [b, c, f, h, w]: x plus what each frame reads from frame 0."""
        b, c, f, h, w = x.shape
        tokens = self.norm(rearrange(x, "b c f h w -> b f (h w) c"))
        q = rearrange(self.to_q(tokens), "b f l (n d) -> (b f) n l d", n=self.heads)
        k, v = (rearrange(t, "b l (n d) -> b n l d", n=self.heads).repeat_interleave(f, dim=0)
                for t in self.to_kv(tokens[:, 0]).chunk(2, dim=-1))  # frame 0's keys for every frame
        bias = self.locality_bias(h, w).to(q.dtype)  # n (h w) (h w): query place x key place
        attended = attend(q, k, v, bias)  # (b f) n (h w) d
        delta = self.to_out(rearrange(attended, "(b f) n l d -> b f l (n d)", b=b))
        return x + rearrange(delta, "b f (h w) c -> b c f h w", h=h)


class FirstFrameConditioning(nn.Module):
    """The first-frame attentions of every U-Net level: `down[i]` after down level i's resnets,
    `up[i]` after up level i's (deepest first, the order the U-Net runs them)."""

    def __init__(self, down_dims: list[int], up_dims: list[int], down_heads: list[int], up_heads: list[int]):
        super().__init__()
        self.down = nn.ModuleList(FirstFrameAttention(d, h) for d, h in zip(down_dims, down_heads))
        self.up = nn.ModuleList(FirstFrameAttention(d, h) for d, h in zip(up_dims, up_heads))
        self.init_weights()

    def init_weights(self) -> None:
        """Zero output projections: a fresh module adds nothing (the base model at step 0)."""
        for block in (*self.down, *self.up):
            nn.init.zeros_(block.to_out.weight)
            nn.init.zeros_(block.to_out.bias)
