"""FashionFlow networks: the space-time U-Net and the image-conditioning adapter."""

from fashionflow.models.adapter import ImageConditionAdapter
from fashionflow.models.unet import SpaceTimeUNet

__all__ = ["SpaceTimeUNet", "ImageConditionAdapter", "build_models", "unet_kwargs", "adapter_kwargs",
           "base_model_config", "load_base_weights"]


def unet_kwargs(model_cfg) -> dict:
    """SpaceTimeUNet constructor arguments from a `ModelConfig`."""
    return dict(in_channels=model_cfg.in_channels, base_dim=model_cfg.base_dim, dim_mults=tuple(model_cfg.dim_mults),
                resnet_depths=tuple(model_cfg.resnet_depths), self_attention=tuple(model_cfg.self_attention),
                temporal_compression=tuple(model_cfg.temporal_compression),
                cross_attention_heads=tuple(model_cfg.cross_attention_heads),
                attention_heads=model_cfg.attention_heads, attention_head_dim=model_cfg.attention_head_dim,
                groups=model_cfg.groups, context_dim=model_cfg.context_dim, max_references=model_cfg.max_references,
                pose_guider_channels=tuple(model_cfg.pose_guider_channels) if model_cfg.pose_guider else None,
                reference_pose_routing=model_cfg.reference_pose_routing,
                first_frame_attention=model_cfg.first_frame_attention)


def adapter_kwargs(model_cfg) -> dict:
    """ImageConditionAdapter constructor arguments from a `ModelConfig`."""
    return dict(latent_channels=model_cfg.in_channels, latent_height=model_cfg.latent_height,
                latent_width=model_cfg.latent_width, context_dim=model_cfg.context_dim,
                num_context_tokens=model_cfg.num_context_tokens, inputs=model_cfg.global_conditioning)


def build_models(model_cfg) -> tuple[SpaceTimeUNet, ImageConditionAdapter]:
    """Freshly initialised (unet, adapter) for a `ModelConfig` (see configs/)."""
    unet = SpaceTimeUNet(**unet_kwargs(model_cfg))
    if model_cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet, ImageConditionAdapter(**adapter_kwargs(model_cfg))


def base_model_config(model_cfg):
    """The `ModelConfig` without optional conditions: the architecture of a single-image checkpoint."""
    import dataclasses

    return dataclasses.replace(model_cfg, max_references=0, pose_guider=False, reference_pose_routing=0.0,
                               first_frame_attention=False)


def load_base_weights(unet: SpaceTimeUNet, state: dict) -> list[str]:
    """Load a U-Net state dict that may lack the optional conditions' weights (a single-image
    checkpoint into a model with references or a pose guider): those keep their zero init, so the
    model starts as the checkpoint. Any other missing or unexpected key is an error. Returns the missing keys."""
    missing, unexpected = unet.load_state_dict(state, strict=False)
    allowed = tuple(unet.optional_condition_prefixes)
    wrong = [k for k in missing if not k.startswith(allowed)]
    if wrong or unexpected:
        raise RuntimeError(f"U-Net weights do not match the model: missing {wrong[:3]}, unexpected "
                           f"{list(unexpected)[:3]} (only {', '.join(allowed)} may be missing)")
    return list(missing)
