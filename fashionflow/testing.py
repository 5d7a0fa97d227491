"""Tiny random stand-ins for the frozen encoders, for tests and CPU runs.

The real VAE (SD v1-4) and CLIP ViT-B/32 cannot be downloaded here, so tests build tiny
models of the same classes from configs, `save_pretrained` them to a folder and load them
back through `fashionflow.encoders` -- the code path real weights take. Shapes match
`configs/tiny.yaml`: the VAE downsamples by 8 into 4 channels, the CLIP tower has
`hidden_size = model.context_dim` (32) and 50 tokens (7 x 7 patches + the class token).

    paths = save_tiny_encoders(tmp_path)            # {"vae": ..., "image_encoder": ...}
    cfg.encoders = tiny_encoders_config(paths)      # point a config at them
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from fashionflow.config import EncodersConfig

TINY_CLIP_IMAGE_SIZE = 28  # 28 / 4 = 7 patches a side -> 49 + 1 = 50 tokens, like ViT-B/32 at 224
TINY_CLIP_PATCH_SIZE = 4


def build_tiny_vae(seed: int = 0, scaling_factor: float = 0.18215) -> AutoencoderKL:
    """An AutoencoderKL with SD's layout (4 levels -> 8x down, 4 latent channels), ~100k weights."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=128,
        scaling_factor=scaling_factor,
    ).eval()


def build_tiny_image_encoder(hidden_size: int = 32, seed: int = 0) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """A CLIP vision tower giving [b, 50, hidden_size] and the image processor that feeds it."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_CLIP_IMAGE_SIZE,
        patch_size=TINY_CLIP_PATCH_SIZE,
        projection_dim=hidden_size,
    )
    model = CLIPVisionModel(config).eval()
    size = TINY_CLIP_IMAGE_SIZE
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, processor


def save_tiny_encoders(folder: str | os.PathLike, context_dim: int = 32, seed: int = 0) -> dict[str, str]:
    """Write a tiny VAE to `folder/vae` and a tiny CLIP tower + processor to `folder/image_encoder`.

    Returns {"vae": path, "image_encoder": path}; both load with `fashionflow.encoders`.
    Already written folders are reused, so a session-scoped fixture can call this freely.
    """
    folder = Path(folder)
    vae_dir, clip_dir = folder / "vae", folder / "image_encoder"
    if not (vae_dir / "config.json").is_file():
        build_tiny_vae(seed).save_pretrained(vae_dir)
    if not (clip_dir / "config.json").is_file():
        model, processor = build_tiny_image_encoder(context_dim, seed)
        model.save_pretrained(clip_dir)
        processor.save_pretrained(clip_dir)
    return {"vae": str(vae_dir), "image_encoder": str(clip_dir)}


def tiny_encoders_config(paths: dict[str, str], preprocessing: str = "correct") -> EncodersConfig:
    """An EncodersConfig pointing at folders written by `save_tiny_encoders`."""
    return EncodersConfig(vae=paths["vae"], vae_subfolder=None, image_encoder=paths["image_encoder"],
                          preprocessing=preprocessing)


def build_tiny_pipeline(folder: str | os.PathLike, cfg=None, seed: int = 0):
    """A FashionFlowPipeline of random tiny models for `configs/tiny.yaml` (or `cfg`).

    The encoders go through `save_tiny_encoders(folder)` and the real loaders. Returns
    (pipeline, cfg); save it with `fashionflow.pipeline.save_pipeline`.
    """
    from fashionflow.config import load_config
    from fashionflow.encoders import load_image_encoder, load_vae
    from fashionflow.models import build_models
    from fashionflow.pipeline import FashionFlowPipeline

    if cfg is None:
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    paths = save_tiny_encoders(folder, cfg.model.context_dim, seed)
    cfg.encoders = tiny_encoders_config(paths, cfg.encoders.preprocessing)
    torch.manual_seed(seed)
    unet, adapter = build_models(cfg.model)
    vae = load_vae(cfg.encoders)
    image_encoder, processor = load_image_encoder(cfg.encoders)
    return FashionFlowPipeline.from_parts(cfg, unet, adapter, vae, image_encoder, processor), cfg
