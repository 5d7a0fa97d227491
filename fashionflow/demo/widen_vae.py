"""Widen a trained AutoencoderKL to twice its channels without changing what it computes (Net2WiderNet).

A wider decoder draws flat colours and pattern edges closer to the frames (docs/benchmarks.md,
"A wider decoder"), but a new latent space would mean new latents and a new U-Net. Chen et al.
(2016, "Net2Net", section 3.1) widen a trained network by copying units: every channel of the
small model becomes two channels of the wide one with the same input weights, and the layer
that reads them splits each weight between the two copies, so the wide model computes the same
function and training goes on from where the small one stood. Here:

- GroupNorm: a channel's two copies go to the same group (the small model's group g becomes
  the wide model's group g with every channel twice), so with the same number of groups every
  group's mean and variance, and so every normalised value, are unchanged.
- Single-head attention (the VAE's mid-blocks): the copied queries and keys double q.k while
  the scale 1 / sqrt(dim) falls by sqrt(2), so the query projection is scaled by 1 / sqrt(2).
- The split: 1/2 and 1/2 keeps two copies identical forever (same outputs, same gradients);
  for the part that trains (the decoder) each weight is split at a random point instead
  (`split_range`), which computes the same sum and lets the copies grow apart (Net2Net adds
  noise for the same reason; a random split keeps the function exact).

The encoder is widened with even splits and stays frozen: it computes the small encoder's
latents (to float rounding), so the latents already projected and the U-Net trained on them
still fit the wide VAE.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL

WIDTH_FACTOR = 2


def copy_index(channels: int, groups: int) -> torch.Tensor:
    """For the wide layer's 2 x `channels` channels, the small layer's channel each one copies: long [2c].

    Channel p of group g (group size s = channels / groups) is copied to wide channels
    g * 2s + p and g * 2s + s + p: both copies in the wide model's group g.
    """
    size = channels // groups
    wide = torch.arange(WIDTH_FACTOR * channels)
    group, place = wide // (WIDTH_FACTOR * size), wide % (WIDTH_FACTOR * size)
    return group * size + place % size


def split_weights(shape: torch.Size, index: torch.Tensor, split_range: tuple[float, float] | None,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Factors [out, 2c, ...] that split each small weight between its two input copies: they sum to 1 per pair."""
    if split_range is None:
        return torch.full(shape, 1.0 / WIDTH_FACTOR)
    low, high = split_range
    old = torch.empty((shape[0], len(index) // WIDTH_FACTOR, *shape[2:])).uniform_(low, high, generator=generator)
    # the first copy of each channel takes the factor, the second the rest: a stable sort puts each
    # channel's two wide positions side by side, first copy first
    first = torch.zeros(len(index), dtype=torch.bool)
    first[torch.argsort(index, stable=True)[::WIDTH_FACTOR]] = True
    factors = old[:, index]
    factors[:, ~first] = 1.0 - factors[:, ~first]
    return factors


def widen_tensor(name: str, small: torch.Tensor, wide_shape: torch.Size, groups: int,
                 split_range: tuple[float, float] | None, generator: torch.Generator | None) -> torch.Tensor:
    """The wide model's tensor `name` from the small model's: rows copied, input columns copied and split."""
    tensor = small.float()
    widened_out = wide_shape[0] == WIDTH_FACTOR * small.shape[0]
    if widened_out:
        tensor = tensor[copy_index(small.shape[0], groups)]
    if small.ndim >= 2 and wide_shape[1] == WIDTH_FACTOR * small.shape[1]:
        index = copy_index(small.shape[1], groups)
        tensor = tensor[:, index] * split_weights(tensor.shape[:1] + index.shape + tensor.shape[2:], index,
                                                  split_range, generator)
    if widened_out and name.split(".")[-2] == "to_q":  # q.k doubles, 1 / sqrt(dim) shrinks by sqrt(2)
        tensor = tensor / math.sqrt(WIDTH_FACTOR)
    if tensor.shape != wide_shape:
        raise ValueError(f"cannot widen {name}: {tuple(small.shape)} -> {tuple(wide_shape)}")
    return tensor


def widen_vae(small: AutoencoderKL, split_range: tuple[float, float] | None = (0.25, 0.75),
              seed: int = 0) -> AutoencoderKL:
    """An AutoencoderKL with twice `small`'s channels at every level that computes what `small` does.

    The encoder's weights are split evenly; the decoder's at random points in `split_range`
    (None: evenly), so its copies can grow apart when it is trained. Same groups, latent
    channels and scaling factor, so latents and every model trained on them carry over.
    Returned in float32, in train mode.
    """
    config = dict(small.config)
    config["block_out_channels"] = [WIDTH_FACTOR * c for c in config["block_out_channels"]]
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    wide = AutoencoderKL(**config)
    generator = torch.Generator().manual_seed(seed)
    groups = small.config.norm_num_groups
    small_state = small.state_dict()
    state = {}
    for name, target in wide.state_dict().items():
        split = split_range if name.startswith("decoder.") else None
        state[name] = widen_tensor(name, small_state[name], target.shape, groups, split, generator)
    wide.load_state_dict(state)
    return wide
