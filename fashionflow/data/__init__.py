"""Data: the UBC Fashion downloader, clip choice, latent projection and the latent dataset.

`LatentClipDataset` is imported lazily so that the downloader (`python -m
fashionflow.data.ubc_fashion`) runs without importing torch.
"""

__all__ = ["LatentClipDataset", "LatentDatasetError"]


def __getattr__(name):
    if name in __all__:
        from fashionflow.data import latent_dataset

        return getattr(latent_dataset, name)
    raise AttributeError(f"module 'fashionflow.data' has no attribute {name!r}")
