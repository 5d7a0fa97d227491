"""The frozen encoders: SD v1-4's VAE and CLIP ViT-B/32's vision tower (FASHIONFLOW.md, "Frozen encoders").

Both load from a hub id or a local folder (config keys `encoders.vae`, `encoders.image_encoder`),
offline first: a local folder, else the hub id in the local Hugging Face cache (no network
touched), else -- unless `HF_HUB_OFFLINE` is set -- the hub, after one probe that gives up within
`HUB_TIMEOUT` seconds. A model found nowhere raises `MissingWeightsError` at once (no retries)
whose one-line message says which model, why not, how to download it and which key to point at it.

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
import threading
from typing import TYPE_CHECKING, Callable, Literal, Optional, TypeVar

import torch

from fashionflow.config import EncodersConfig

if TYPE_CHECKING:  # imported where used: diffusers and transformers take seconds to import, which a
    # missing model should not cost; without torchvision, transformers announces its PIL fallback on import
    from diffusers import AutoencoderKL
    from transformers import CLIPImageProcessor, CLIPVisionModel

HUB_TIMEOUT = 2.0  # seconds the hub probe may take (DNS, connect, answer) before "cannot be reached"
Loaded = TypeVar("Loaded")


class MissingWeightsError(FileNotFoundError):
    """A frozen encoder is neither a local folder nor reachable on the hub (no network here)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _missing(what: str, source: str, download: str, key: str, error: BaseException) -> MissingWeightsError:
    return MissingWeightsError(
        f"{what} not found at {source!r}: {_first_line(error).rstrip('.')}. Download it where there is "
        f"network with `{download}`, then set {key}.")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)


def _hub_problem(repo_id: str, subfolder: Optional[str]) -> Optional[str]:
    """Why the hub cannot serve `repo_id`'s config.json, or None when it can.

    One HEAD request without retries, in a thread that is abandoned after HUB_TIMEOUT seconds,
    so a missing route, an unresolvable name or a silent firewall all answer in time.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError

    url = hf_hub_url(repo_id, "config.json", subfolder=subfolder or None)
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            get_hf_file_metadata(url, timeout=HUB_TIMEOUT)
            outcome.append(None)
        except Exception as error:  # noqa: BLE001 -- reported below, whatever the HTTP library raised
            outcome.append(error)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT)
    hub = f"the hub ({constants.ENDPOINT})"
    error = outcome[0] if outcome else TimeoutError()
    if error is None:
        return None
    if isinstance(error, TimeoutError) or "Timeout" in type(error).__name__:  # the HTTP library's own timeouts
        return f"{hub} did not answer within {HUB_TIMEOUT:g} s"
    if isinstance(error, HfHubHTTPError):
        return f"{hub} has no {repo_id}/{subfolder + '/' if subfolder else ''}config.json ({_first_line(error)})"
    return f"{hub} cannot be reached ({type(error).__name__}: {_first_line(error)})"


def load_offline_first(source: str, subfolder: Optional[str], load: Callable[[bool], Loaded]) -> Loaded:
    """`load(local_files_only)` from a local folder, else from the local Hugging Face cache, else
    (unless HF_HUB_OFFLINE) from the hub. Raises OSError whose first line says why not, within
    about HUB_TIMEOUT seconds when there is no network."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if os.path.isdir(source):
        return load(True)
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise OSError("no such folder") from None
    if isinstance(try_to_load_from_cache(source, f"{subfolder}/config.json" if subfolder else "config.json"), str):
        try:
            return load(True)  # a hub id already in the cache: no network
        except (OSError, ValueError):
            pass  # partly cached (a config without its weights): the hub has the rest
    nowhere = f"not a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if hub_offline():
        raise OSError(f"{nowhere}, and HF_HUB_OFFLINE is set")
    problem = _hub_problem(source, subfolder)
    if problem is not None:
        raise OSError(f"{nowhere}, and {problem}")
    return load(False)


def _vae_location(enc_cfg: EncodersConfig) -> tuple[str, Optional[str]]:
    """A local folder may hold the VAE itself or the whole SD repo with a `vae/` subfolder."""
    source, subfolder = enc_cfg.vae, enc_cfg.vae_subfolder
    if os.path.isdir(source) and subfolder and not os.path.isdir(os.path.join(source, subfolder)):
        if os.path.isfile(os.path.join(source, "config.json")):
            subfolder = None
    return source, subfolder


def load_vae(enc_cfg: EncodersConfig, device=None, dtype: Optional[torch.dtype] = None) -> "AutoencoderKL":
    """AutoencoderKL from `encoders.vae` (+ `encoders.vae_subfolder`), frozen, in eval mode."""
    source, subfolder = _vae_location(enc_cfg)

    def load(local_files_only: bool) -> "AutoencoderKL":
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype, low_cpu_mem_usage=False,
                                             local_files_only=local_files_only)

    try:
        vae = load_offline_first(source, subfolder, load)
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
    source = enc_cfg.image_encoder

    def load(local_files_only: bool) -> tuple["CLIPVisionModel", "CLIPImageProcessor"]:
        from transformers import CLIPImageProcessor, CLIPVisionModel

        return (CLIPVisionModel.from_pretrained(source, dtype=dtype, local_files_only=local_files_only),
                CLIPImageProcessor.from_pretrained(source, local_files_only=local_files_only))

    try:
        model, processor = load_offline_first(source, None, load)
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
def encode_latent_dist(vae: "AutoencoderKL", images01: torch.Tensor, enc_cfg: EncodersConfig,
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
def encode_latents(vae: "AutoencoderKL", images01: torch.Tensor, enc_cfg: EncodersConfig, sample: bool = True,
                   generator: torch.Generator | list[torch.Generator] | None = None,
                   chunk_size: Optional[int] = None) -> torch.Tensor:
    """[b, 3, H, W] in [0, 1] -> scaled latents [b, 4, H/8, W/8].

    Released: a *sampled* latent (mean + std * noise), not the mean. A list of generators gives
    each image its own noise (one per image).
    """
    from diffusers.utils.torch_utils import randn_tensor

    mean, std = encode_latent_dist(vae, images01, enc_cfg, chunk_size)
    if not sample:
        return mean
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise


@torch.no_grad()
def decode_latents(vae: "AutoencoderKL", latents: torch.Tensor, enc_cfg: EncodersConfig,
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
