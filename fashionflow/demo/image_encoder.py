"""The demo's CLIP image encoder: a small `CLIPVisionModel` with random, frozen weights.

The real model reads CLIP ViT-B/32's `last_hidden_state` [b, 50, 768]. CLIP cannot be
downloaded here, and a CLIP cannot be trained in minutes on a CPU, so the demo uses the same
class at a small size with seeded random weights. That is enough for the demo: the tokens are
a fixed, image-dependent random feature map (patch embedding + 2 transformer layers), and the
U-Net and the adapter learn to use them like any other conditioning. Shapes keep ViT-B/32's
geometry: a 7 x 7 grid of patches plus the class token = 50 tokens; the hidden size is the
demo U-Net's `model.context_dim`.

    python -m fashionflow.demo.image_encoder --output-dir checkpoint/demo_encoders/image_encoder --hidden-size 64
"""

from __future__ import annotations

import argparse
import sys

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

PATCHES_PER_SIDE = 7  # 7 x 7 + 1 class token = 50 tokens, as ViT-B/32 at 224 px


def build_demo_image_encoder(hidden_size: int = 64, patch_size: int = 8, num_layers: int = 2, seed: int = 0
                             ) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """(model, processor): [b, 3, 7p, 7p] pixel values -> last_hidden_state [b, 50, hidden_size]."""
    image_size = PATCHES_PER_SIDE * patch_size
    config = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                              num_hidden_layers=num_layers, num_attention_heads=max(1, hidden_size // 32),
                              image_size=image_size, patch_size=patch_size, projection_dim=hidden_size)
    torch.manual_seed(seed)
    model = CLIPVisionModel(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return model, processor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the demo's small random CLIP vision tower + processor.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--hidden-size", type=int, default=64, help="= model.context_dim of the demo preset")
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, processor = build_demo_image_encoder(args.hidden_size, args.patch_size, args.layers, args.seed)
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    tokens = (model.config.image_size // model.config.patch_size) ** 2 + 1
    print(f"wrote a random CLIPVisionModel ({sum(p.numel() for p in model.parameters()) / 1e3:.0f}k weights, "
          f"{tokens} tokens x {args.hidden_size}) and its processor to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
