"""Build a pipeline folder from a converted U-Net + adapter and the VAE and CLIP folders.

    python -m fashionflow.convert_official FashionFlow_checkpoint.pth converted/
    python -m fashionflow.assemble converted/ checkpoint/fashionflow \
        --vae weights/stable-diffusion-v1-4 --image-encoder weights/clip-vit-base-patch32

`converted/` holds unet/ and adapter/ (diffusers `save_pretrained`) and usually config.yaml;
without one the released preset (or --config) describes the model. The output folder is a
`FashionFlowPipeline` (`FashionFlowPipeline.from_pretrained` / `inference.py --checkpoint`)
with the resolved config as config.yaml; its scheduler is `sample.sampler` (ddpm: released).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from fashionflow.config import ConfigError, FashionFlowConfig, load_config
from fashionflow.encoders import MissingWeightsError, load_image_encoder, load_vae
from fashionflow.models import ImageConditionAdapter, SpaceTimeUNet
from fashionflow.pipeline import FashionFlowPipeline, save_pipeline


def assemble(converted_dir: str | Path, output_dir: str | Path, cfg: FashionFlowConfig,
             sampler: Optional[str] = None) -> Path:
    """Load unet/ + adapter/ from `converted_dir`, the encoders named by `cfg.encoders`; save a pipeline."""
    converted_dir = Path(converted_dir)
    for part in ("unet", "adapter"):
        if not (converted_dir / part / "config.json").is_file():
            raise FileNotFoundError(f"{converted_dir / part} has no config.json; write it with "
                                    "`python -m fashionflow.convert_official CHECKPOINT OUT`")
    unet = SpaceTimeUNet.from_pretrained(converted_dir / "unet", low_cpu_mem_usage=False)
    adapter = ImageConditionAdapter.from_pretrained(converted_dir / "adapter", low_cpu_mem_usage=False)
    vae = load_vae(cfg.encoders)
    image_encoder, processor = load_image_encoder(cfg.encoders)
    pipe = FashionFlowPipeline.from_parts(cfg, unet, adapter, vae, image_encoder, processor, sampler=sampler)
    return save_pipeline(pipe, output_dir, cfg)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("converted_dir", help="folder with unet/ and adapter/ (from fashionflow.convert_official)")
    parser.add_argument("output_dir", help="pipeline folder to write (must not exist)")
    parser.add_argument("--vae", help="VAE hub id or folder (sets encoders.vae)")
    parser.add_argument("--vae-subfolder", help="subfolder of --vae holding the VAE (default: encoders.vae_subfolder)")
    parser.add_argument("--image-encoder", help="CLIP vision hub id or folder (sets encoders.image_encoder)")
    parser.add_argument("--config", help="preset to use when converted_dir has no config.yaml")
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "dpm"), help="scheduler saved with the pipeline")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. encoders.preprocessing=released")
    args = parser.parse_args(argv)

    if Path(args.output_dir).exists():
        print(f"error: {args.output_dir} already exists; choose a new folder", file=sys.stderr)
        return 1
    saved = Path(args.converted_dir) / "config.yaml"
    overrides = list(args.overrides)
    for key, value in (("vae", args.vae), ("vae_subfolder", args.vae_subfolder),
                       ("image_encoder", args.image_encoder)):
        if value is not None:
            overrides.append(f"encoders.{key}={value}")
    try:
        cfg = load_config(saved if saved.is_file() else args.config, overrides)
        out = assemble(args.converted_dir, args.output_dir, cfg, args.sampler)
    except (FileNotFoundError, MissingWeightsError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote pipeline folder {out} (run: python inference.py --checkpoint {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
