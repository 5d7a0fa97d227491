"""Training: the loop (`loop.train`), step-derived data order, checkpoints, EMA, optimiser.

    from fashionflow.training import train
    train(load_config("configs/tiny.yaml"), "latents/", "runs/tiny")   # or train.py under torchrun
"""

__all__ = ["train", "TrainResult", "NonFiniteLossError"]


def __getattr__(name):  # lazy: `checkpoint` and `sampler` import without the models
    if name in __all__:
        from fashionflow.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'fashionflow.training' has no attribute {name!r}")
