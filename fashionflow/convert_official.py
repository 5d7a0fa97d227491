"""Convert the authors' released checkpoint to our safetensors folders.

    python -m fashionflow.convert_official CHECKPOINT.pth OUTPUT_DIR

writes OUTPUT_DIR/unet and OUTPUT_DIR/adapter (diffusers `save_pretrained`: config.json +
diffusion_pytorch_model.safetensors) and OUTPUT_DIR/config.yaml (the released preset).
`python -m fashionflow.assemble` then adds the VAE and CLIP to make a pipeline folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashionflow.config import ConfigError, load_config, save_config
from fashionflow.official import CheckpointMismatchError, load_official_checkpoint
from fashionflow.utils import atomic_directory


def convert(checkpoint: str, output_dir: str, config_path: str | None = None, overrides=None) -> Path:
    cfg = load_config(config_path, overrides)
    unet, adapter = load_official_checkpoint(checkpoint, cfg.model)
    with atomic_directory(output_dir) as tmp:
        unet.save_pretrained(tmp / "unet")
        adapter.save_pretrained(tmp / "adapter")
        save_config(cfg, tmp / "config.yaml")
    return Path(output_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="released .pth file ({'net': ..., 'adapter': ...})")
    parser.add_argument("output_dir")
    parser.add_argument("--config", default=None, help="preset describing the architecture (default: released)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.base_dim=64")
    args = parser.parse_args(argv)
    if Path(args.output_dir).exists():
        print(f"error: {args.output_dir} already exists; choose a new folder", file=sys.stderr)
        return 1
    try:
        out = convert(args.checkpoint, args.output_dir, args.config, args.overrides)
    except (FileNotFoundError, CheckpointMismatchError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}/unet, {out}/adapter and {out}/config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
