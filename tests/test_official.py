"""The released checkpoint layout: mapping, loading, conversion, and equivalence to a network
written in the released formulation (benchmarks/released_reference.py)."""

from pathlib import Path

import pytest
import torch

from fashionflow.convert_official import main as convert_main
from fashionflow.models import ImageConditionAdapter, SpaceTimeUNet
from fashionflow.official import CheckpointMismatchError, load_official_checkpoint, load_official_state


KEYS = Path(__file__).resolve().parent / "data" / "official_checkpoint_keys.tsv"  # tests/data/README.md


def released_keys():
    rows = [line.split("\t") for line in KEYS.read_text().splitlines()[1:]]
    return [(module, key, tuple(int(n) for n in shape.split("x"))) for module, key, shape in rows]


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory):
    """A checkpoint in the released layout built from the keys file, with random values."""
    generator = torch.Generator().manual_seed(0)
    checkpoint = {"net": {}, "adapter": {}, "opt": {"state": {}, "param_groups": []}}
    for module, key, shape in released_keys():
        checkpoint[module][key] = torch.randn(shape, generator=generator) * 0.05
        if key.endswith("norm.weight") or key.endswith(".g") or "layernorm" in key and key.endswith("weight"):
            checkpoint[module][key] += 1.0
    path = tmp_path_factory.mktemp("official") / "model_2400_600000.pth"
    torch.save(checkpoint, path)
    return path, checkpoint


def test_keys_file_matches_the_reference_network():
    from benchmarks.released_reference import EmbeddingAdapter, SpaceTimeUnet

    with torch.device("meta"):
        reference = {"net": SpaceTimeUnet().state_dict(), "adapter": EmbeddingAdapter().state_dict()}
    listed = {(m, k): s for m, k, s in released_keys()}
    assert listed == {(m, k): tuple(t.shape) for m in reference for k, t in reference[m].items()}
    assert sum(torch.Size(s).numel() for (m, _), s in listed.items() if m == "net") == 71_671_548


def test_loaded_model_equals_released_formulation(synthetic_checkpoint):
    from benchmarks.released_reference import EmbeddingAdapter, SpaceTimeUnet

    path, checkpoint = synthetic_checkpoint
    reference, reference_adapter = SpaceTimeUnet().eval(), EmbeddingAdapter().eval()
    reference.load_state_dict(checkpoint["net"], strict=True)
    reference_adapter.load_state_dict(checkpoint["adapter"], strict=True)
    unet, adapter = load_official_checkpoint(path)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 4, 32, 32, generator=generator)
    clip, latent = torch.randn(2, 50, 768, generator=generator), torch.randn(2, 4, 80, 64, generator=generator)
    t = torch.tensor([3, 871])
    with torch.no_grad():
        context_ref = reference_adapter(clip, latent)
        torch.testing.assert_close(adapter(clip, latent), context_ref, rtol=1e-6, atol=1e-6)
        expected, ours = reference(x, context_ref, t), unet(x, t, context_ref)
    assert ((ours - expected).norm() / expected.norm()).item() < 1e-5


def test_forward_makes_every_tensor_on_the_inputs_device():
    """On the meta device nothing is computed, and a tensor made on the CPU inside forward (an
    arange or tensor() without device=) fails to mix with the inputs, as it would on CUDA."""
    from benchmarks.released_reference import EmbeddingAdapter, SpaceTimeUnet

    with torch.device("meta"):
        reference, reference_adapter = SpaceTimeUnet(), EmbeddingAdapter()
        unet, adapter = SpaceTimeUNet(), ImageConditionAdapter()
        x, t = torch.randn(1, 4, 70, 80, 64), torch.tensor([500.0])  # the paper size
        clip, latent = torch.randn(1, 50, 768), torch.randn(1, 4, 80, 64)
    with torch.no_grad():
        context = reference_adapter(clip, latent)
        assert adapter(clip, latent).device.type == "meta"
        assert reference(x, context, t).shape == unet(x, t, context).shape == (1, 4, 70, 80, 64)
        assert unet(x, t, context).device.type == "meta"


def test_convert_and_round_trip(synthetic_checkpoint, tmp_path, capsys):
    path, _ = synthetic_checkpoint
    assert convert_main([str(path), str(tmp_path / "converted")]) == 0
    unet, adapter = load_official_checkpoint(path)
    unet2 = SpaceTimeUNet.from_pretrained(tmp_path / "converted" / "unet")
    adapter2 = ImageConditionAdapter.from_pretrained(tmp_path / "converted" / "adapter")
    x, context = torch.randn(1, 4, 2, 16, 16), torch.randn(1, 50, 768)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, torch.tensor([7]), context), unet2(x, torch.tensor([7]), context),
                                   rtol=1e-5, atol=1e-5)
    for a, b in zip(unet.state_dict().values(), unet2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(adapter.state_dict().values(), adapter2.state_dict().values()):
        assert torch.equal(a, b)
    assert convert_main([str(path), str(tmp_path / "converted")]) == 1  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_missing_tensor_is_named(synthetic_checkpoint):
    _, checkpoint = synthetic_checkpoint
    broken = {"net": dict(checkpoint["net"]), "adapter": checkpoint["adapter"]}
    del broken["net"]["mid_attn.ff.proj_out.0.g"]
    with pytest.raises(CheckpointMismatchError, match="lacks the tensor for 'mid_attention.feed_forward.norm.gain'"):
        load_official_state(broken)


def test_extra_tensor_is_named(synthetic_checkpoint):
    _, checkpoint = synthetic_checkpoint
    broken = {"net": dict(checkpoint["net"]), "adapter": dict(checkpoint["adapter"])}
    broken["adapter"]["linear2.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match="unexpected tensor 'linear2.weight'"):
        load_official_state(broken)
    broken = {"net": dict(checkpoint["net"]), "adapter": checkpoint["adapter"]}
    broken["net"]["downs.0.2.spatial_attn.to_q.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError, match="unexpected tensor 'downs.0.2.spatial_attn.to_q.weight'"):
        load_official_state(broken)


def test_shape_mismatch_is_named(synthetic_checkpoint):
    _, checkpoint = synthetic_checkpoint
    broken = {"net": dict(checkpoint["net"]), "adapter": checkpoint["adapter"]}
    broken["net"]["conv_in.spatial_conv.weight"] = torch.zeros(64, 3, 7, 7)
    with pytest.raises(CheckpointMismatchError, match=r"'conv_in.spatial_conv.weight' has shape \(64, 3, 7, 7\)"):
        load_official_state(broken)


def test_not_a_released_checkpoint(tmp_path):
    with pytest.raises(CheckpointMismatchError, match="expected a dict with 'net' and 'adapter'"):
        load_official_state({"state_dict": {}})
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_official_checkpoint(tmp_path / "nope.pth")


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"net": {}, "adapter": {}, "extra": Payload()}, path)
    with pytest.raises(CheckpointMismatchError, match="cannot read as a tensors-only torch checkpoint"):
        load_official_checkpoint(path)


def test_released_checkpoint_into_a_model_with_first_frame_attention(synthetic_checkpoint):
    """`train.py --init model_2400.pth model.first_frame_attention=true`: the new layers start at zero,
    so the model is the released one at step 0."""
    from fashionflow.config import load_config
    from fashionflow.models import build_models
    from fashionflow.training import loop

    path, _ = synthetic_checkpoint
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/fashionflow.yaml",
                      ["model.first_frame_attention=true"])
    unet, adapter = build_models(cfg.model)
    missing = loop.load_initial_weights(path, unet, adapter, cfg)
    assert missing and all(key.startswith("first_frame.") for key in missing)
    released, _ = load_official_checkpoint(path)
    generator = torch.Generator().manual_seed(2)
    x, context = torch.randn(1, 4, 2, 16, 16, generator=generator), torch.randn(1, 54, 768, generator=generator)
    with torch.no_grad():
        assert torch.equal(unet.eval()(x, torch.tensor([500]), context), released.eval()(x, torch.tensor([500]), context))
