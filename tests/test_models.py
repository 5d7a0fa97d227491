import pytest
import torch

from fashionflow.config import ModelConfig, load_config
from fashionflow.models import ImageConditionAdapter, SpaceTimeUNet, build_models
from fashionflow.models.attention import ContinuousPositionBias, SelfAttention
from fashionflow.models.layers import PseudoConv3d


@pytest.fixture(scope="module")
def tiny():
    from conftest import ROOT

    cfg = load_config(ROOT / "configs/tiny.yaml")
    torch.manual_seed(0)
    unet, adapter = build_models(cfg.model)
    return cfg, unet, adapter


def test_tiny_shapes(tiny):
    cfg, unet, adapter = tiny
    m = cfg.model
    context = adapter(torch.randn(2, m.num_context_tokens, m.context_dim), torch.randn(2, 4, 16, 16))
    assert context.shape == (2, m.num_context_tokens, m.context_dim)
    noise = unet(torch.randn(2, 4, 8, 16, 16), torch.tensor([0, 999]), context)
    assert noise.shape == (2, 4, 8, 16, 16) and torch.isfinite(noise).all()
    assert 1e5 < sum(p.numel() for p in unet.parameters()) < 1e6  # a few hundred thousand


def test_paper_config_parameter_counts():
    with torch.device("meta"):
        unet, adapter = build_models(ModelConfig())
    assert sum(p.numel() for p in unet.parameters()) == 71_671_548
    assert sum(p.numel() for p in adapter.parameters()) == 986_558


def test_int_and_float_timesteps_agree(tiny):
    _, unet, _ = tiny
    x, context = torch.randn(1, 4, 4, 16, 16), torch.randn(1, 50, 32)
    with torch.no_grad():
        assert torch.equal(unet(x, torch.tensor([250]), context), unet(x, torch.tensor([250.0]), context))
        assert torch.equal(unet(x, 250, context), unet(x, torch.tensor([250]), context))


def test_static_video_passes_fresh_pseudo_conv_unchanged_in_time():
    torch.manual_seed(0)
    conv = PseudoConv3d(3, 5, kernel_size=3)
    frame = torch.randn(2, 3, 1, 8, 8)
    video = frame.expand(-1, -1, 6, -1, -1)
    out = conv(video)
    spatial_only = torch.nn.functional.conv2d(frame[:, :, 0], conv.spatial.weight, conv.spatial.bias, padding=1)
    # The Dirac temporal conv is the identity: every frame equals the per-frame spatial conv. The zero
    # padding along time only touches nothing, because the identity kernel reads the centre tap alone.
    for t in range(6):
        torch.testing.assert_close(out[:, :, t], spatial_only, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape, message", [
    ((1, 4, 5, 16, 16), "number of frames \\(5\\) must be a multiple of 2"),
    ((1, 4, 4, 24, 16), "must be multiples of 16"),
    ((1, 3, 4, 16, 16), "latents have 3 channels"),
    ((4, 16, 16), "latents must be \\[b, c, f, h, w\\]"),
])
def test_size_errors_say_what_is_wrong(tiny, shape, message):
    _, unet, _ = tiny
    with pytest.raises(ValueError, match=message):
        unet(torch.randn(*shape), torch.tensor([1]), torch.randn(1, 50, 32))


def test_adapter_rejects_other_latent_size(tiny):
    _, _, adapter = tiny
    with pytest.raises(ValueError, match="depends on the latent size"):
        adapter(torch.randn(1, 50, 32), torch.randn(1, 4, 32, 32))


def test_adapter_starts_as_identity_on_clip_tokens():
    adapter = ImageConditionAdapter(latent_height=8, latent_width=8, context_dim=16, num_context_tokens=50)
    clip = torch.randn(2, 50, 16)
    with torch.no_grad():
        adapter.token_mixer.bias.zero_()
    torch.testing.assert_close(adapter(clip, torch.randn(2, 4, 8, 8)), clip)


def test_sdpa_attention_with_bias_matches_explicit_softmax():
    torch.manual_seed(0)
    attention, bias_net = SelfAttention(32, heads=4, head_dim=8), ContinuousPositionBias(16, heads=4, num_dims=2)
    torch.nn.init.normal_(attention.to_out.weight)
    x = torch.randn(3, 12, 32)
    bias = bias_net(3, 4)
    assert bias.shape == (4, 12, 12)
    normed = attention.norm(x)
    q, k, v = attention.to_q(normed), *attention.to_kv(normed).chunk(2, dim=-1)
    q, k, v = (t.view(3, 12, 4, 8).transpose(1, 2) for t in (q, k, v))
    weights = (q @ k.transpose(-1, -2) / 8 ** 0.5 + bias).softmax(-1)
    expected = attention.to_out((weights @ v).transpose(1, 2).reshape(3, 12, 32))
    torch.testing.assert_close(attention(x, bias), expected, rtol=1e-5, atol=1e-6)


def test_position_bias_depends_on_offset_only():
    bias = ContinuousPositionBias(8, heads=2, num_dims=2)(3, 4)  # tokens (i, j) on a 3x4 grid
    # token pairs with the same offset share the bias: (0,0)->(1,1) and (1,2)->(2,3)
    torch.testing.assert_close(bias[:, 0 * 4 + 0, 1 * 4 + 1], bias[:, 1 * 4 + 2, 2 * 4 + 3])


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    cfg, _, _ = tiny
    torch.manual_seed(0)
    unet, _ = build_models(cfg.model)
    x, t, context = torch.randn(1, 4, 4, 16, 16), torch.tensor([10]), torch.randn(1, 50, 32)
    unet(x, t, context).square().mean().backward()
    plain = [p.grad.clone() for p in unet.parameters()]
    unet.zero_grad()
    unet.enable_gradient_checkpointing()
    unet(x, t, context).square().mean().backward()
    for a, b in zip(plain, (p.grad for p in unet.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_save_pretrained_round_trip(tiny, tmp_path):
    _, unet, adapter = tiny
    unet.save_pretrained(tmp_path / "unet")
    adapter.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    unet2 = SpaceTimeUNet.from_pretrained(tmp_path / "unet")
    adapter2 = ImageConditionAdapter.from_pretrained(tmp_path / "adapter")
    x, context = torch.randn(1, 4, 4, 16, 16), torch.randn(1, 50, 32)
    latent = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        # identical weights; outputs equal up to float summation order (safetensors buffers are
        # not 64-byte aligned, so oneDNN may take another vector path)
        for a, b in zip(unet.state_dict().values(), unet2.state_dict().values()):
            assert torch.equal(a, b)
        torch.testing.assert_close(unet(x, torch.tensor([5]), context), unet2(x, torch.tensor([5]), context),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(adapter(context, latent), adapter2(context, latent), rtol=1e-6, atol=1e-6)
