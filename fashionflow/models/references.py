"""Several reference images: per-frame attention from the video to extra views of the garment.

Not in the paper or the released code (an option, `model.max_references`, off in the released
preset; docs/differences.md). One photo cannot show a back that differs from the front; with
R extra views (back, side, ...) each frame should draw on the views that show what it shows.
ProFashion (Kong et al.; ../shared/reference/PROFASHION.md) weights its references by pose
similarity (its Pose-aware Prototype Aggregator). FashionFlow has no poses, so here the
weighting is learned from the frame's own features:

    each reference image -> VAE + CLIP -> the same adapter as the main image -> n tokens
    per U-Net level, after the level's image cross-attention:
        x = x + W_out . Attention(q = frame tokens, k = v = the R * n reference tokens)

Every video token (so every frame separately) has its own query, so a frame showing the back
can put its attention on the back view's tokens while frame 0 stays on the front: a learned,
per-frame "prototype" context. The cost is one attention over R * n keys per level: linear in
R. The references are a set (no position or order embedding): permuting them changes nothing,
and R is free at inference, 0 .. `model.max_references`.

Start as the base model: W_out (weight and bias) is zero-initialised in `init_weights`, so a
fresh module adds exactly zero and a model initialised from a single-image checkpoint is that
checkpoint at step 0 (ControlNet's zero convolution, Animate Anyone's pose guider). R = 0, or
a batch item whose references are all masked, skips the module: exactly the base model.

With poses (`model.reference_pose_routing` = S > 0, pose-driven videos), the weighting need not
be learned: the U-Net adds to each frame's logits -S x the distance between the frame's driving
pose and each reference's pose (pose/similarity.py), here among the references, and in the image
cross-attention of every level, whose context becomes the image's tokens plus every reference's
(models/unet.py `_pose_routing`): a back-facing frame then reads the back view's tokens where it
read the front image's (ProFashion's per-frame global prototype, its Eq. 9). Measured on the
demo, the learned weighting stayed flat (0.50 of the attention on the back view for back- and
front-facing frames alike); the routed one is 0.993 / 0.000 (benchmarks/reference_view_share.py).

Why not token concatenation (appending the references' tokens to the main context of the
existing cross-attention, ProFashion's "concatenating references" baseline)? The softmax then
spreads over 50 + R * 50 keys, so the main image's share shrinks as R grows and the model at
step 0 is no longer the single-image model (it would need a gate); the released cross-attention's
key/value projections must serve two roles; and its cost also grows with R. A separate,
zero-initialised attention keeps the released path untouched.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from fashionflow.models.attention import attend, attend_per_frame, to_frames


class ReferenceAttention(nn.Module):
    """Pre-LayerNorm cross-attention from every video token to the tokens of R references,
    output projection zero-initialised, added residually (one per U-Net level)."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"reference attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, references: torch.Tensor, reference_mask: torch.Tensor,
                routing: torch.Tensor | None = None, gate: torch.Tensor | None = None) -> torch.Tensor:
        """x [b, c, f, h, w], references [b, r, n, d], reference_mask bool [b, r] -> [b, c, f, h, w].

        routing [b, f', r] (optional): logits added, per frame, to every key of each reference;
        gate [b, f'] (optional): each frame's output scaled by it (`model.reference_pose_routing`:
        how much the frame draws on the references rather than on the image); f' frames are
        average-pooled to x's f at levels that compressed time. A batch item with no real
        reference gets exactly x back.
        """
        b, c, f, h, w = x.shape
        n = references.shape[2]
        tokens = rearrange(x, "b c f h w -> b (f h w) c")
        q = rearrange(self.to_q(self.norm(tokens)), "b l (h d) -> b h l d", h=self.heads)
        keys = rearrange(references, "b r n d -> b (r n) d").to(q.dtype)
        k, v = (rearrange(proj(keys), "b s (h d) -> b h s d", h=self.heads) for proj in (self.to_k, self.to_v))
        has_any = reference_mask.any(dim=1)  # b
        key_mask = reference_mask.repeat_interleave(n, dim=1) | ~has_any[:, None]  # b (r n); empty rows: all keys
        bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~key_mask, float("-inf"))
        if routing is None:
            attended = attend(q, k, v, rearrange(bias, "b s -> b 1 1 s"))
        else:  # each frame its own logits per reference
            attended = attend_per_frame(q, k, v, bias[:, None] + routing.to(q.dtype).repeat_interleave(n, dim=2), f)
        delta = self.to_out(rearrange(attended, "b h l d -> b l (h d)"))
        delta = delta * has_any[:, None, None].to(delta.dtype)  # no references: exactly nothing added
        delta = rearrange(delta, "b (f h w) c -> b c f h w", f=f, h=h)
        if gate is not None:
            delta = delta * to_frames(gate, f).to(delta.dtype)[:, None, :, None, None]
        return x + delta


class ReferenceConditioning(nn.Module):
    """The reference attentions of every U-Net level: `down[i]` after down level i's image
    cross-attention, `up[i]` after up level i's (deepest first, the order the U-Net runs them)."""

    def __init__(self, down_dims: list[int], up_dims: list[int], down_heads: list[int], up_heads: list[int],
                 context_dim: int, max_references: int):
        super().__init__()
        self.max_references = max_references
        self.down = nn.ModuleList(ReferenceAttention(d, h, context_dim) for d, h in zip(down_dims, down_heads))
        self.up = nn.ModuleList(ReferenceAttention(d, h, context_dim) for d, h in zip(up_dims, up_heads))
        self.init_weights()

    def init_weights(self) -> None:
        """Zero output projections: a fresh module adds nothing (the base model at step 0)."""
        for block in (*self.down, *self.up):
            nn.init.zeros_(block.to_out.weight)
            nn.init.zeros_(block.to_out.bias)

    def check(self, references: torch.Tensor, reference_mask: torch.Tensor | None, batch: int, context_dim: int
              ) -> torch.Tensor:
        """Validate references [b, r, n, d] (and the mask [b, r]); returns the mask (all True when None)."""
        if references.ndim != 4 or references.shape[0] != batch or references.shape[-1] != context_dim:
            raise ValueError(f"references must be [b={batch}, r, n, {context_dim}] (adapter tokens of each "
                             f"reference image), got {tuple(references.shape)}")
        if references.shape[1] > self.max_references:
            raise ValueError(f"got {references.shape[1]} references per video, the model takes at most "
                             f"{self.max_references} (model.max_references)")
        if reference_mask is None:
            return torch.ones(references.shape[:2], dtype=torch.bool, device=references.device)
        if reference_mask.shape != references.shape[:2]:
            raise ValueError(f"reference_mask must be [b, r] = {tuple(references.shape[:2])}, "
                             f"got {tuple(reference_mask.shape)}")
        return reference_mask.to(device=references.device, dtype=torch.bool)


def pad_references(per_item: list[torch.Tensor | None], tokens_shape: tuple[int, int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference tokens of each batch item ([r_i, n, d], or None for none) -> references
    [b, max r_i, n, d] zero-padded and reference_mask bool [b, max r_i]."""
    counts = [0 if item is None else len(item) for item in per_item]
    first = next((item for item in per_item if item is not None and len(item)), None)
    dtype, device = (first.dtype, first.device) if first is not None else (torch.float32, "cpu")
    references = torch.zeros(len(per_item), max(counts, default=0), *tokens_shape, dtype=dtype, device=device)
    mask = torch.zeros(references.shape[:2], dtype=torch.bool, device=device)
    for i, item in enumerate(per_item):
        if counts[i]:
            references[i, :counts[i]] = item
            mask[i, :counts[i]] = True
    return references, mask
