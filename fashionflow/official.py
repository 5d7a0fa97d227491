"""Load the authors' released checkpoint (`{'net': state_dict, 'adapter': state_dict}`, and
`'opt'` in training snapshots) into our modules.

Every released tensor maps to exactly one of ours by renaming (`official_to_ours`); nothing is
reshaped. The up levels are stored shallowest-first in the released `ups` list and run in
reverse; ours are stored in the order they run (deepest first).
"""

from __future__ import annotations

import os
import re

import torch

from fashionflow.config import ModelConfig
from fashionflow.models import ImageConditionAdapter, SpaceTimeUNet, adapter_kwargs, unet_kwargs


class CheckpointMismatchError(ValueError):
    """A released-layout checkpoint does not fit the model: names the first offending tensor."""


_RESNET = [("timestep_mlp.1.", "time_proj."), ("block1.project.", "conv1."), ("block1.norm.", "norm1."),
           ("block2.project.", "conv2."), ("block2.norm.", "norm2."), ("res_conv.", "skip_proj.")]
_SPATIO_TEMPORAL = [("spatial_attn.", "spatial_attention."), ("temporal_attn.", "temporal_attention."),
                    ("spatial_rel_pos_bias.net.0.0.", "spatial_position_bias.mlp.0."),
                    ("spatial_rel_pos_bias.net.1.0.", "spatial_position_bias.mlp.2."),
                    ("spatial_rel_pos_bias.net.2.", "spatial_position_bias.mlp.4."),
                    ("temporal_rel_pos_bias.net.0.0.", "temporal_position_bias.mlp.0."),
                    ("temporal_rel_pos_bias.net.1.0.", "temporal_position_bias.mlp.2."),
                    ("temporal_rel_pos_bias.net.2.", "temporal_position_bias.mlp.4."),
                    ("ff.proj_in.0.", "feed_forward.proj_in."), ("ff.proj_out.0.g", "feed_forward.norm.gain"),
                    ("ff.proj_out.1.", "feed_forward.proj_out.")]
_CROSS = [("layernorm_2.", "attn_norm."), ("attention_2.q_proj.", "to_q."), ("attention_2.k_proj.", "to_k."),
          ("attention_2.v_proj.", "to_v."), ("attention_2.out_proj.", "to_out."), ("layernorm_3.", "ff_norm."),
          ("linear_geglu_1.", "ff_in."), ("linear_geglu_2.", "ff_out."), ("conv_output.spatial_conv.", "proj_out.")]
_SAMPLING = [("down_space.1.", "space_proj."), ("down_time.1.", "time_proj."),
             ("up_space.0.", "space_proj."), ("up_time.0.", "time_proj.")]
_PSEUDO_CONV = {"spatial_conv": "spatial", "temporal_conv": "temporal"}
# released level tuple (resnet_in, resnets, attention, down/upsample, cross-attention); 1 and 3 are
# handled apart (a ModuleList index, and the sampling tables)
_LEVEL_PARTS = {"0": "resnet_in.", "2": "attention.", "4": "cross_attention."}
_ADAPTER = {"vae2clip.weight": "latent_to_tokens.weight", "vae2clip.bias": "latent_to_tokens.bias",
            "linear1.weight": "token_mixer.weight", "linear1.bias": "token_mixer.bias"}


def _replace_prefix(rest: str, table: list[tuple[str, str]]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def _rename_block(rest: str) -> str:
    """Rename inside one resnet / attention / cross-attention block, then pseudo-conv leaves."""
    for table in (_RESNET, _SPATIO_TEMPORAL, _CROSS):
        renamed = _replace_prefix(rest, table)
        if renamed != rest:
            rest = renamed
            break
    return re.sub(r"(^|\.)(spatial_conv|temporal_conv)\.",
                  lambda m: f"{m.group(1)}{_PSEUDO_CONV[m.group(2)]}.", rest)


def official_to_ours(key: str, num_levels: int = 4) -> str:
    """Released U-Net key -> our key, e.g. `ups.3.1.0.block1.project.spatial_conv.weight` ->
    `up_levels.0.resnets.0.conv1.spatial.weight`. Raises KeyError for unknown keys."""
    if key.startswith("to_timestep_cond.1."):
        return "time_embedding.linear." + key[len("to_timestep_cond.1."):]
    for old, new in (("mid_block1.", "mid_resnet1."), ("mid_block2.", "mid_resnet2."), ("mid_attn.", "mid_attention."),
                     ("conv_in.", "conv_in."), ("conv_out.", "conv_out.")):
        if key.startswith(old):
            return new + _rename_block(key[len(old):])
    match = re.match(r"(downs|ups)\.(\d+)\.(\d)\.(.*)", key)
    if not match:
        raise KeyError(key)
    side, level, part, rest = match.groups()
    level = int(level) if side == "downs" else num_levels - 1 - int(level)
    prefix = f"{'down_levels' if side == 'downs' else 'up_levels'}.{level}."
    if part == "3":
        renamed = _replace_prefix(rest, _SAMPLING)
        if renamed == rest:
            raise KeyError(key)
        return prefix + ("downsample." if side == "downs" else "upsample.") + renamed
    if part == "1":  # ModuleList of resnets: keep the index
        index, rest = rest.split(".", 1)
        return f"{prefix}resnets.{index}.{_rename_block(rest)}"
    if part not in _LEVEL_PARTS:
        raise KeyError(key)
    return prefix + _LEVEL_PARTS[part] + _rename_block(rest)


def _map_state_dict(source: dict, target: dict, rename, what: str) -> dict:
    mapped = {}
    for key, tensor in source.items():
        try:
            ours = rename(key)
        except KeyError:
            raise CheckpointMismatchError(f"{what}: unexpected tensor {key!r} in the checkpoint "
                                          "(not part of the model)") from None
        if ours not in target:
            raise CheckpointMismatchError(f"{what}: unexpected tensor {key!r} in the checkpoint (maps to {ours!r}, "
                                          "which the model does not have: another architecture?)")
        if tuple(tensor.shape) != tuple(target[ours].shape):
            raise CheckpointMismatchError(f"{what}: tensor {key!r} has shape {tuple(tensor.shape)}, the model "
                                          f"expects {tuple(target[ours].shape)} for {ours!r}")
        mapped[ours] = tensor
    missing = [k for k in target if k not in mapped]
    if missing:
        raise CheckpointMismatchError(f"{what}: the checkpoint lacks the tensor for {missing[0]!r} "
                                      f"({len(missing)} missing in all)")
    return mapped


def _strip_ddp_prefix(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def load_official_state(checkpoint: dict, model_cfg: ModelConfig | None = None
                        ) -> tuple[SpaceTimeUNet, ImageConditionAdapter]:
    """(unet, adapter) from an in-memory released-layout dict {'net': ..., 'adapter': ...}."""
    if not isinstance(checkpoint, dict) or "net" not in checkpoint or "adapter" not in checkpoint:
        keys = list(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointMismatchError(f"not a released FashionFlow checkpoint: expected a dict with 'net' and "
                                      f"'adapter' state dicts (and optionally 'opt'), got {keys}")
    model_cfg = model_cfg or ModelConfig()
    with torch.device("meta"):
        unet = SpaceTimeUNet(**unet_kwargs(model_cfg))
        adapter = ImageConditionAdapter(**adapter_kwargs(model_cfg))
    levels = len(model_cfg.dim_mults)
    net_state = _map_state_dict(_strip_ddp_prefix(checkpoint["net"]), unet.state_dict(),
                                lambda k: official_to_ours(k, levels), "U-Net ('net')")
    adapter_state = _map_state_dict(_strip_ddp_prefix(checkpoint["adapter"]), adapter.state_dict(),
                                    lambda k: _ADAPTER[k], "adapter ('adapter')")
    unet.load_state_dict({k: v.float() for k, v in net_state.items()}, strict=True, assign=True)
    adapter.load_state_dict({k: v.float() for k, v in adapter_state.items()}, strict=True, assign=True)
    return unet.eval(), adapter.eval()


def load_official_checkpoint(path: str | os.PathLike, model_cfg: ModelConfig | None = None,
                             map_location: str | torch.device = "cpu") -> tuple[SpaceTimeUNet, ImageConditionAdapter]:
    """Read a released-layout checkpoint with `torch.load(weights_only=True)` and return
    (unet, adapter) in eval mode. `model_cfg` defaults to the released architecture."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found (the released one is the authors' .pth file; "
                                "see README, 'Using the released weights')")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointMismatchError(f"{path}: cannot read as a tensors-only torch checkpoint "
                                      f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    return load_official_state(checkpoint, model_cfg)
