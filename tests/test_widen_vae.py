"""Widening a trained VAE (fashionflow/demo/widen_vae.py, Net2WiderNet): twice the channels, the
same function, so the latents and the U-Net trained on them carry over, and a decoder that can learn."""

import pytest
import torch

from fashionflow.demo.widen_vae import copy_index, widen_vae
from fashionflow.testing import build_tiny_vae


@pytest.fixture(scope="module")
def small():
    vae = build_tiny_vae(seed=3, scaling_factor=0.5)
    with torch.no_grad():  # GroupNorm starts at weight 1, bias 0: make every affine matter
        for name, weight in vae.named_parameters():
            if "norm" in name:
                weight.add_(0.3 * torch.randn_like(weight))
    return vae


def test_every_channel_is_copied_twice_into_its_own_group():
    index = copy_index(8, 2)  # groups of 4 -> groups of 8
    assert index.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]
    assert torch.bincount(index).tolist() == [2] * 8
    assert set(index[:8].tolist()) == {0, 1, 2, 3}  # the wide group 0 holds the small group 0 only


def test_wide_vae_computes_what_the_small_one_does(small):
    wide = widen_vae(small).eval()
    assert wide.config.block_out_channels == [2 * c for c in small.config.block_out_channels]
    assert wide.config.norm_num_groups == small.config.norm_num_groups
    assert wide.config.scaling_factor == small.config.scaling_factor == 0.5
    assert sum(p.numel() for p in wide.decoder.parameters()) > 3 * sum(p.numel() for p in small.decoder.parameters())
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ours, theirs = wide.encode(images).latent_dist, small.encode(images).latent_dist
        torch.testing.assert_close(ours.mean, theirs.mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours.logvar, theirs.logvar, atol=1e-5, rtol=1e-4)
        latents = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(wide.decode(latents).sample, small.decode(latents).sample, atol=1e-5, rtol=1e-4)


def test_the_decoders_copies_grow_apart_when_trained_and_an_even_split_would_not(small):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    index = copy_index(small.config.block_out_channels[0], small.config.norm_num_groups)
    first, second = [], []  # the wide positions of each small channel's two copies
    for channel in range(len(index) // 2):
        a, b = (index == channel).nonzero().flatten().tolist()
        first.append(a)
        second.append(b)

    def copies_after_a_step(vae):
        optimizer = torch.optim.SGD(vae.decoder.parameters(), lr=0.1)
        (vae.decode(latents).sample - target).pow(2).mean().backward()
        optimizer.step()
        weight = vae.decoder.up_blocks[-1].resnets[-1].conv2.weight  # its rows: the top level's channels
        return weight[first], weight[second]

    a, b = copies_after_a_step(widen_vae(small, split_range=None).train())
    assert torch.allclose(a, b)  # an even split: the copies get the same gradients forever
    a, b = copies_after_a_step(widen_vae(small, seed=1).train())
    assert not torch.allclose(a, b, atol=1e-6)


def test_encoder_splits_evenly_and_decoder_at_random(small):
    wide = widen_vae(small, seed=5)
    index = copy_index(small.config.block_out_channels[0], small.config.norm_num_groups)
    encoder_conv = wide.encoder.down_blocks[0].resnets[0].conv1.weight  # reads the widened conv_in
    torch.testing.assert_close(encoder_conv[:, index == 0].sum(1), 2 * encoder_conv[:, index == 0][:, 0])
    decoder_out = wide.decoder.conv_out.weight  # reads the widened top level; 3 output channels
    small_out = small.decoder.conv_out.weight
    pair = decoder_out[:, index == 0]
    torch.testing.assert_close(pair.sum(1), small_out[:, 0])  # the split sums to the small weight
    assert not torch.allclose(pair[:, 0], pair[:, 1])


def test_wide_vae_loads_through_the_pipelines_loader(tmp_path, small):
    from fashionflow.config import EncodersConfig
    from fashionflow.encoders import decode_latents, encode_latents, load_vae

    widen_vae(small).save_pretrained(tmp_path / "vae")
    config = EncodersConfig(vae=str(tmp_path / "vae"), vae_subfolder=None, vae_scaling_factor=0.5)
    wide = load_vae(config)
    assert wide.config.block_out_channels == [16, 32, 32, 32]
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    latents = encode_latents(wide, images, config, sample=False)
    torch.testing.assert_close(latents, encode_latents(small, images, config, sample=False), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(decode_latents(wide, latents, config), decode_latents(small, latents, config),
                               atol=1e-5, rtol=1e-4)


def test_train_vae_widen_keeps_the_latents_and_trains_the_wide_decoder(tmp_path, vae_training_args):
    from diffusers import AutoencoderKL

    from fashionflow.demo import train_vae

    common = [*vae_training_args, "--crop", "0"]
    assert train_vae.main([*common, "--output-dir", str(tmp_path / "small"), "--steps", "2"]) == 0
    assert train_vae.main([*common, "--output-dir", str(tmp_path / "wide"), "--steps", "2", "--lr", "1e-2",
                           "--init-from", str(tmp_path / "small"), "--decoder-only", "--widen"]) == 0
    small, wide = (AutoencoderKL.from_pretrained(tmp_path / name).eval() for name in ("small", "wide"))
    assert wide.config.block_out_channels == [16, 16, 16, 16]
    assert wide.config.scaling_factor == small.config.scaling_factor
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(wide.encode(images).latent_dist.mean, small.encode(images).latent_dist.mean,
                                   atol=1e-5, rtol=1e-4)
        latents = small.encode(images).latent_dist.mean
        assert not torch.allclose(wide.decode(latents).sample, small.decode(latents).sample, atol=1e-4)
    with pytest.raises(SystemExit):  # the encoder must stay, so widening needs --decoder-only
        train_vae.main([*common, "--output-dir", str(tmp_path / "x"), "--init-from", str(tmp_path / "small"), "--widen"])


def test_bundle_swaps_in_a_wider_decoder_only_when_it_keeps_the_latents(tmp_path):
    from fashionflow.demo.bundle import bundle_pipeline
    from fashionflow.pipeline import load_pipeline, save_pipeline
    from fashionflow.testing import build_tiny_pipeline

    pipe, cfg = build_tiny_pipeline(tmp_path / "pipe")
    run = save_pipeline(pipe, tmp_path / "run", cfg)
    widen_vae(pipe.vae).save_pretrained(tmp_path / "wide_vae")
    bundle_pipeline(run, tmp_path / "bundle", max_mb=50, vae=tmp_path / "wide_vae")
    bundled, bundled_cfg = load_pipeline(tmp_path / "bundle")
    assert bundled.vae.config.block_out_channels == [2 * c for c in pipe.vae.config.block_out_channels]
    assert bundled_cfg.encoders.vae == str(tmp_path / "wide_vae")
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bundled.vae.decode(latents).sample, pipe.vae.decode(latents).sample,
                                   atol=1e-5, rtol=1e-4)
    other = build_tiny_vae(seed=9, scaling_factor=pipe.vae.config.scaling_factor)
    other.save_pretrained(tmp_path / "other_vae")
    with pytest.raises(SystemExit, match="latents differ"):
        bundle_pipeline(run, tmp_path / "refused", max_mb=50, vae=tmp_path / "other_vae")
