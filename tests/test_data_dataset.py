"""LatentClipDataset: items, checks against the config, subsets (on small hand-written files)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from fashionflow.config import config_hash, load_config
from fashionflow.data import LatentClipDataset, LatentDatasetError
from fashionflow.data.latent_dataset import CLIP_FORMAT, encoder_metadata, expected_shapes


@pytest.fixture
def cfg():
    return load_config("configs/tiny.yaml")


def write_fake_clip(folder, name, cfg, shapes=None, latent_dtype=torch.float32, **metadata):
    """A clip file in the projection's format with random tensors (shapes overridable)."""
    shapes = {**expected_shapes(cfg), **(shapes or {})}
    generator = torch.Generator().manual_seed(len(name))
    tensors = {k: torch.randn(v, generator=generator) for k, v in shapes.items() if k != "image"}
    tensors["latents"] = tensors["latents"].to(latent_dtype)
    tensors["image"] = torch.randint(0, 256, shapes["image"], generator=generator, dtype=torch.uint8)
    meta = {"format": CLIP_FORMAT, "config_hash": config_hash(cfg), "source": f"{name}.mp4",
            "config": json.dumps({"data": {"num_frames": cfg.data.num_frames}}), **encoder_metadata(cfg)}
    meta.update(metadata)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"), metadata=meta)
    return tensors


def test_items_have_the_contracted_shapes_dtypes_and_values(tmp_path, cfg):
    written = {name: write_fake_clip(tmp_path, name, cfg, latent_dtype=torch.float16)
               for name in ("b__00003", "a+x-y__00000")}
    (tmp_path / ".b__00009.tmp123.safetensors").write_bytes(b"partial")  # a killed write: ignored
    (tmp_path / "manifest.jsonl").write_text("{}\n")
    dataset = LatentClipDataset(tmp_path, cfg)
    assert dataset.names == ["a+x-y__00000", "b__00003"]
    item = dataset[1]
    f, h, w = cfg.data.num_frames, cfg.data.height // 8, cfg.data.width // 8
    assert item["name"] == "b__00003"
    assert item["latents"].shape == (f, 4, h, w) and item["latents"].dtype == torch.float32
    assert item["image"].shape == (3, cfg.data.height, cfg.data.width) and item["image"].dtype == torch.uint8
    for key in ("image_latent_mean", "image_latent_std"):
        assert item[key].shape == (4, h, w) and item[key].dtype == torch.float32
    assert item["clip_hidden_states"].shape == (50, cfg.model.context_dim)
    assert torch.equal(item["latents"], written["b__00003"]["latents"].float())
    assert torch.equal(item["image"], written["b__00003"]["image"])
    assert dataset.metadata(1)["config"]["data"]["num_frames"] == f
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["latents"].shape == (2, f, 4, h, w) and batch["name"] == dataset.names


def test_missing_and_empty_folders_say_how_to_fill_them(tmp_path, cfg):
    with pytest.raises(LatentDatasetError, match="does not exist.*project_latent_space.py"):
        LatentClipDataset(tmp_path / "nope", cfg)
    with pytest.raises(LatentDatasetError, match="holds no clip files.*project_latent_space.py"):
        LatentClipDataset(tmp_path, cfg)


def test_latents_of_another_size_are_refused_naming_file_and_keys(tmp_path, cfg):
    write_fake_clip(tmp_path, "ok", cfg)
    write_fake_clip(tmp_path, "long", cfg, shapes={"latents": [70, 4, 16, 16]})
    with pytest.raises(LatentDatasetError, match=r"long.safetensors: latents has shape \[70, 4, 16, 16\] but the "
                                                 r"config expects \[8, 4, 16, 16\] \(data.num_frames"):
        LatentClipDataset(tmp_path, cfg)


def test_clip_features_of_another_width_are_refused(tmp_path, cfg):
    write_fake_clip(tmp_path, "wide", cfg, shapes={"clip_hidden_states": [50, 768]})
    with pytest.raises(LatentDatasetError, match="clip_hidden_states.*model.context_dim"):
        LatentClipDataset(tmp_path, cfg)


def test_latents_of_another_vae_or_preprocessing_are_refused(tmp_path, cfg):
    write_fake_clip(tmp_path / "vae", "x", cfg, vae="stabilityai/sd-vae-ft-mse")
    with pytest.raises(LatentDatasetError, match="encoders.vae='stabilityai/sd-vae-ft-mse' but the config has "
                                                 "encoders.vae='CompVis/stable-diffusion-v1-4'"):
        LatentClipDataset(tmp_path / "vae", cfg)
    write_fake_clip(tmp_path / "local", "x", cfg, vae="/data/weights/stable-diffusion-v1-4/", vae_subfolder="")
    assert len(LatentClipDataset(tmp_path / "local", cfg)) == 1  # a local copy of the same hub model
    write_fake_clip(tmp_path / "pre", "x", cfg, preprocessing="released")
    with pytest.raises(LatentDatasetError, match="encoders.preprocessing"):
        LatentClipDataset(tmp_path / "pre", cfg)


def test_damaged_or_foreign_files_are_named(tmp_path, cfg):
    write_fake_clip(tmp_path, "good", cfg)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(LatentDatasetError, match="bad.safetensors: not a readable safetensors file"):
        LatentClipDataset(tmp_path, cfg)
    (tmp_path / "bad.safetensors").unlink()
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(LatentDatasetError, match="other.safetensors: not a fashionflow latent clip"):
        LatentClipDataset(tmp_path, cfg)


def test_other_data_settings_only_warn(tmp_path, cfg):
    write_fake_clip(tmp_path, "x", cfg, config_hash="0123456789abcdef")
    with pytest.warns(UserWarning, match="config hash"):
        assert len(LatentClipDataset(tmp_path, cfg)) == 1


def test_validation_subset_is_fixed_and_spread(tmp_path, cfg):
    for i in range(10):
        write_fake_clip(tmp_path, f"v{i}__00000", cfg)
    dataset = LatentClipDataset(tmp_path, cfg)
    subset = dataset.validation_subset(3)
    assert subset.names == ["v0__00000", "v4__00000", "v9__00000"]
    assert LatentClipDataset(tmp_path, cfg, subset=3).names == subset.names
    assert len(dataset) == 10  # the parent is untouched
    assert LatentClipDataset(tmp_path, cfg, subset=["v7__00000", 0]).names == ["v7__00000", "v0__00000"]
    with pytest.raises(LatentDatasetError, match="no clip named 'nope'"):
        LatentClipDataset(tmp_path, cfg, subset=["nope"])
    with pytest.raises(LatentDatasetError, match="subset of 11 clips"):
        dataset.validation_subset(11)
