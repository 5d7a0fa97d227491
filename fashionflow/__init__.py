"""fashionflow: a faithful, fast implementation of FashionFlow (image-to-video latent diffusion)."""

__version__ = "0.1.0"
