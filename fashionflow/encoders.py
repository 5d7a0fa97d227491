"""The frozen encoders: SD v1-4's VAE and CLIP ViT-B/32's vision tower (FASHIONFLOW.md, "Frozen encoders").

Both load from a hub id or a local folder (config keys `encoders.vae`, `encoders.image_encoder`).
Nothing can be downloaded at run time here, so a missing model raises `MissingWeightsError`
whose one-line message says which model, how to download it, and which key to point at it.

Two image preprocessings, picked by `encoders.preprocessing`:
- "released": [0, 1] images go into the VAE as they are, and the [0, 1] float image is handed
  to the CLIP processor, which rescales by 1/255 again (CLIP sees a near-black image). The
  released checkpoint was trained this way and must be fed this way.
- "correct": [-1, 1] into the VAE (what SD's VAE was trained on) and CLIP sees the image
  normalised as its processor expects.
All functions take images as float [b, 3, H, W] in [0, 1]; latents are already multiplied by
`encoders.vae_scaling_factor` (never a literal).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal, Optional

import torch
from diffusers import AutoencoderKL
from diffusers.utils.torch_utils import randn_tensor

from fashionflow.config import EncodersConfig

if TYPE_CHECKING:  # imported where used: without torchvision, transformers announces its PIL fallback on import
    from transformers import CLIPImageProcessor, CLIPVisionModel


class MissingWeightsError(FileNotFoundError):
    """A frozen encoder is neither a local folder nor reachable on the hub (no network here)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _missing(what: str, source: str, download: str, key: str, error: BaseException) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what} not found at {source!r}: {_first_line(error).rstrip('.')}. Download it where there is "
        f"network with `{download}`, then set {key}.")


def _vae_location(enc_cfg: EncodersConfig) -> tuple[str, Optional[str]]:
    """A local folder may hold the VAE itself or the whole SD repo with a `vae/` subfolder."""
    source, subfolder = enc_cfg.vae, enc_cfg.vae_subfolder
    if os.path.isdir(source) and subfolder and not os.path.isdir(os.path.join(source, subfolder)):
        if os.path.isfile(os.path.join(source, "config.json")):
            subfolder = None
    return source, subfolder


def load_vae(enc_cfg: EncodersConfig, device=None, dtype: Optional[torch.dtype] = None) -> AutoencoderKL:
    """AutoencoderKL from `encoders.vae` (+ `encoders.vae_subfolder`), frozen, in eval mode."""
    source, subfolder = _vae_location(enc_cfg)
    try:
        vae = AutoencoderKL.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype, low_cpu_mem_usage=False)
    except (OSError, ValueError) as error:
        repo = "CompVis/stable-diffusion-v1-4"
        download = f'hf download {repo} --include "vae/*" --local-dir weights/stable-diffusion-v1-4'
        where = f"{source}/{subfolder}" if subfolder else source
        raise _missing("VAE (Stable Diffusion v1-4 AutoencoderKL)", where, download,
                       "encoders.vae=weights/stable-diffusion-v1-4 (with encoders.vae_subfolder=vae)",
                       error) from None
    vae.requires_grad_(False).eval()
    return vae.to(device) if device is not None else vae


def load_image_encoder(enc_cfg: EncodersConfig, device=None, dtype: Optional[torch.dtype] = None
                       ) -> tuple["CLIPVisionModel", "CLIPImageProcessor"]:
    """CLIP vision tower and its image processor from `encoders.image_encoder`, frozen."""
    from transformers import CLIPImageProcessor, CLIPVisionModel

    source = enc_cfg.image_encoder
    try:
        model = CLIPVisionModel.from_pretrained(source, dtype=dtype)
        processor = CLIPImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        download = ('hf download openai/clip-vit-base-patch32 --include "*.json" "*.txt" "*.safetensors" '
                    "--local-dir weights/clip-vit-base-patch32")
        raise _missing("CLIP image encoder (openai/clip-vit-base-patch32)", source, download,
                       "encoders.image_encoder=weights/clip-vit-base-patch32", error) from None
    model.requires_grad_(False).eval()
    return (model.to(device) if device is not None else model), processor


# --- preprocessing ------------------------------------------------------------------------

def vae_input(images01: torch.Tensor, preprocessing: str) -> torch.Tensor:
    """[b, 3, H, W] in [0, 1] -> the VAE's input range: [0, 1] (released) or [-1, 1] (correct)."""
    if preprocessing == "released":
        return images01
    if preprocessing == "correct":
        return images01 * 2.0 - 1.0
    raise ValueError(f"unknown encoders.preprocessing {preprocessing!r} (released or correct)")


def output_range_for(preprocessing: str) -> Literal["clamp01", "from_minus1"]:
    """The decoder output range that matches a preprocessing (released: clamp to [0, 1])."""
    return "clamp01" if preprocessing == "released" else "from_minus1"


# --- VAE ----------------------------------------------------------------------------------

@torch.no_grad()
def encode_latent_dist(vae: AutoencoderKL, images01: torch.Tensor, enc_cfg: EncodersConfig,
                       chunk_size: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[b, 3, H, W] in [0, 1] -> (mean, std), each [b, 4, H/8, W/8], times the scaling factor.

    `chunk_size` bounds memory by encoding that many images at a time.
    """
    scale = enc_cfg.vae_scaling_factor
    x = vae_input(images01, enc_cfg.preprocessing).to(device=vae.device, dtype=vae.dtype)
    means, stds = [], []
    for part in x.split(chunk_size or len(x)):
        dist = vae.encode(part).latent_dist
        means.append(dist.mean * scale)
        stds.append(dist.std * scale)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images01: torch.Tensor, enc_cfg: EncodersConfig, sample: bool = True,
                   generator: torch.Generator | list[torch.Generator] | None = None,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """[b, 3, H, W] in [0, 1] -> scaled latents [b, 4, H/8, W/8].

    Released: a *sampled* latent (mean + std * noise), not the mean. A list of generators gives
    each image its own noise (one per image).
    """
    mean, std = encode_latent_dist(vae, images01, enc_cfg, chunk_size)
    if not sample:
        return mean
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, enc_cfg: EncodersConfig,
                   output_range: Optional[str] = None, chunk_size: Optional[int] = 8) -> torch.Tensor:
    """Scaled latents -> images in [0, 1], decoding `chunk_size` frames at a time.

    [b, 4, f, h, w] -> [b, f, 3, 8h, 8w];  [n, 4, h, w] -> [n, 3, 8h, 8w] (float32).
    output_range: "clamp01" (released inference) or "from_minus1" (x / 2 + 0.5, for [-1, 1]
    VAE inputs); None picks the one matching `encoders.preprocessing`.
    """
    output_range = output_range or output_range_for(enc_cfg.preprocessing)
    video = latents.ndim == 5
    if video:
        b, f = latents.shape[0], latents.shape[2]
        latents = latents.transpose(1, 2).flatten(0, 1)  # b c f h w -> (b f) c h w
    frames = []
    for part in latents.split(chunk_size or len(latents)):
        image = vae.decode(part.to(device=vae.device, dtype=vae.dtype) / enc_cfg.vae_scaling_factor).sample
        if output_range == "from_minus1":
            image = image / 2.0 + 0.5
        elif output_range != "clamp01":
            raise ValueError(f"unknown output range {output_range!r} (clamp01 or from_minus1)")
        frames.append(image.clamp(0.0, 1.0).float())
    images = torch.cat(frames)
    if video:
        images = images.unflatten(0, (b, f))  # (b f) c h w -> b f c h w
    return images


# --- CLIP ---------------------------------------------------------------------------------

@torch.no_grad()
def clip_pixel_values(processor: "CLIPImageProcessor", images01: torch.Tensor, preprocessing: str) -> torch.Tensor:
    """[b, 3, H, W] in [0, 1] -> the processor's pixel_values [b, 3, S, S] (resize, crop, normalise).

    Released: the float [0, 1] image goes in as is and the processor divides by 255 once more.
    Correct: the processor is told the image is already rescaled.
    """
    images = list(images01.detach().float().cpu())
    if preprocessing == "released":
        return processor(images=images, return_tensors="pt")["pixel_values"]
    if preprocessing == "correct":
        return processor(images=images, do_rescale=False, return_tensors="pt")["pixel_values"]
    raise ValueError(f"unknown encoders.preprocessing {preprocessing!r} (released or correct)")


@torch.no_grad()
def clip_hidden_states(image_encoder: "CLIPVisionModel", processor: "CLIPImageProcessor", images01: torch.Tensor,
                       preprocessing: str) -> torch.Tensor:
    """[b, 3, H, W] in [0, 1] -> CLIP's last_hidden_state [b, 50, C] (C = 768 for ViT-B/32)."""
    pixels = clip_pixel_values(processor, images01, preprocessing)
    pixels = pixels.to(device=image_encoder.device, dtype=image_encoder.dtype)
    return image_encoder(pixel_values=pixels).last_hidden_state
