"""Schedule, loss and sampling loop against the released formulas (FASHIONFLOW.md, "Diffusion")."""

import functools
import math

import numpy as np
import pytest
import torch

from fashionflow.config import DiffusionConfig, load_config
from fashionflow.diffusion import (SAMPLERS, diffusion_loss, make_scheduler, null_context, released_betas,
                                   sample_video_latents, with_first_frame)


def reference_betas(num_steps=1000, start=1e-4, end=0.02):
    """The released loop, written out: walk i = T-1 .. 0 and append start + (end-start)/2 (1 + cos(pi i/(T-1)))."""
    return [start + 0.5 * (end - start) * (1 + math.cos(math.pi * i / (num_steps - 1)))
            for i in reversed(range(num_steps))]


def test_released_betas_match_the_formula_and_its_endpoints():
    betas = released_betas()
    np.testing.assert_allclose(betas, reference_betas(), rtol=0, atol=1e-15)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(betas) > 0)
    assert np.prod(1 - betas) == pytest.approx(4.0e-5, rel=0.01)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_schedulers_carry_the_released_betas(sampler):
    scheduler = make_scheduler(DiffusionConfig(), sampler)
    np.testing.assert_allclose(scheduler.betas.numpy(), released_betas().astype(np.float32), rtol=1e-6)


def test_named_schedules_pass_through():
    scheduler = make_scheduler(DiffusionConfig(beta_schedule="linear"), "ddim")
    assert scheduler.betas[0].item() == pytest.approx(1e-4) and scheduler.betas[-1].item() == pytest.approx(0.02)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler(DiffusionConfig(), "euler")


def test_faithful_ddpm_visits_all_1000_steps():
    scheduler = make_scheduler(DiffusionConfig(), "ddpm")
    scheduler.set_timesteps(1000)
    assert scheduler.timesteps.tolist() == list(range(999, -1, -1))


@functools.lru_cache
def released_tables():
    """The released code's precomputed float32 tables."""
    betas = torch.tensor(reference_betas(), dtype=torch.float32)
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return betas, alphas, alphas_cumprod, posterior_variance


def released_ddpm_step(x, eps, t, noise):
    """The released `sample_timestep`, by hand: mean from the epsilon form, sqrt(beta-tilde) noise, none at t=0."""
    betas, alphas, alphas_cumprod, posterior_variance = released_tables()
    mean = (1.0 / alphas[t]).sqrt() * (x - betas[t] * eps / (1.0 - alphas_cumprod[t]).sqrt())
    return mean if t == 0 else mean + posterior_variance[t].sqrt() * noise


@pytest.mark.parametrize("t", [999, 700, 250, 1, 0])
def test_one_ddpm_step_equals_the_released_sampler(t):
    scheduler = make_scheduler(DiffusionConfig(), "ddpm")
    scheduler.set_timesteps(1000)
    gen = torch.Generator().manual_seed(t)
    x, eps = torch.randn(2, 4, 6, 8, 8, generator=gen), torch.randn(2, 4, 6, 8, 8, generator=gen)
    ours = scheduler.step(eps, torch.tensor(t), x, generator=torch.Generator().manual_seed(7)).prev_sample
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    expected = released_ddpm_step(x, eps, t, noise)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


class RecordingUNet(torch.nn.Module):
    """A stand-in noise predictor that remembers its inputs and acts on each video separately."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, latents, timesteps, context):
        self.calls.append((latents.clone(), timesteps.clone(), context.clone()))
        return 0.3 * latents + context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + 1e-4 * timesteps.view(-1, 1, 1, 1, 1)


def test_loss_local_conditioning_and_released_reduction():
    cfg = DiffusionConfig()
    scheduler = make_scheduler(cfg)
    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 4, 5, 8, 8, generator=gen), torch.randn(2, 4, 5, 8, 8, generator=gen)
    context, timesteps = torch.randn(2, 50, 32, generator=gen), torch.tensor([10, 900])
    unet = RecordingUNet()
    loss = diffusion_loss(unet, latents, context, scheduler, cfg, timesteps=timesteps, noise=noise)

    noisy, seen_t, _ = unet.calls[0]
    ab = scheduler.alphas_cumprod[timesteps].view(2, 1, 1, 1, 1)
    expected_noisy = ab.sqrt() * latents + (1 - ab).sqrt() * noise
    torch.testing.assert_close(noisy[:, :, 1:], expected_noisy[:, :, 1:])
    torch.testing.assert_close(noisy[:, :, 0], latents[:, :, 0])  # frame 0 clean
    assert seen_t.tolist() == [10, 900]

    prediction = unet.forward(noisy, timesteps, context)
    target = noise.clone()
    target[:, :, 0] = 0  # zero noise target on frame 0
    per_frame = [torch.mean((prediction[:, :, i] - target[:, :, i]) ** 2) for i in range(5)]
    torch.testing.assert_close(loss, torch.stack(per_frame).sum())

    no_first = diffusion_loss(RecordingUNet(), latents, context, scheduler,
                              DiffusionConfig(loss_on_first_frame=False), timesteps=timesteps, noise=noise)
    torch.testing.assert_close(no_first, torch.stack(per_frame[1:]).sum())
    mean = diffusion_loss(RecordingUNet(), latents, context, scheduler, DiffusionConfig(loss_reduction="mean"),
                          timesteps=timesteps, noise=noise)
    torch.testing.assert_close(mean, torch.stack(per_frame).mean())


def test_loss_draws_are_seeded_and_gradients_reach_the_real_unet():
    from fashionflow.models import build_models

    cfg = load_config("configs/tiny.yaml")
    torch.manual_seed(0)
    unet, _ = build_models(cfg.model)
    scheduler = make_scheduler(cfg.diffusion)
    latents, context = torch.randn(1, 4, 8, 16, 16), torch.randn(1, 50, 32)
    first = diffusion_loss(unet, latents, context, scheduler, cfg.diffusion, generator=torch.Generator().manual_seed(3))
    again = diffusion_loss(unet, latents, context, scheduler, cfg.diffusion, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    first.backward()
    assert torch.isfinite(first) and all(p.grad is not None for p in unet.conv_out.parameters())
    assert sum(p.grad.abs().sum() for p in unet.conv_out.parameters()) > 0


def test_null_context_is_zeros_and_first_frame_is_replaced():
    context = torch.randn(3, 50, 8)
    assert torch.equal(null_context(context), torch.zeros(3, 50, 8))
    latents, first = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 4, 4)
    out = with_first_frame(latents, first)
    assert torch.equal(out[:, :, 0], first) and torch.equal(out[:, :, 1:], latents[:, :, 1:])


@pytest.mark.parametrize("sampler,steps", [("ddpm", 6), ("ddim", 3), ("dpm", 3)])
def test_sampling_keeps_frame_zero_and_is_batch_invariant(sampler, steps):
    cfg = DiffusionConfig()
    gen = torch.Generator().manual_seed(1)
    image_latent, context = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 50, 16, generator=gen)

    def run(index, seeds):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return sample_video_latents(RecordingUNet(), make_scheduler(cfg, sampler), context[index],
                                    image_latent[index], num_frames=4, num_inference_steps=steps,
                                    generator=generators)

    both = run(slice(0, 2), [5, 6])
    assert both.shape == (2, 4, 4, 8, 8)
    assert torch.equal(both[:, :, 0], image_latent)
    torch.testing.assert_close(both[0:1], run(slice(0, 1), [5]))
    torch.testing.assert_close(both[1:2], run(slice(1, 2), [6]))
    assert not torch.allclose(both[0:1], run(slice(0, 1), [9]))


def test_guidance_runs_null_and_conditioned_and_mixes_them():
    cfg = DiffusionConfig()
    image_latent, context = torch.randn(1, 4, 8, 8), torch.randn(1, 50, 16)
    unet = RecordingUNet()
    sample_video_latents(unet, make_scheduler(cfg, "ddim"), context, image_latent, 4, 2, guidance_scale=3.0,
                         generator=torch.Generator().manual_seed(0))
    latents, _, seen_context = unet.calls[0]
    assert latents.shape[0] == 2 and torch.equal(latents[0], latents[1])
    assert torch.equal(seen_context[0], torch.zeros(50, 16)) and torch.equal(seen_context[1], context[0])

    class Split(torch.nn.Module):  # predicts 1 with the image, 0 without: guided eps must be 3
        def forward(self, latents, timesteps, context):
            return (context.abs().sum(dim=(1, 2)) > 0).float().view(-1, 1, 1, 1, 1).expand_as(latents)

    scheduler = make_scheduler(cfg, "ddim")
    steps = []
    original_step = scheduler.step
    scheduler.step = lambda eps, t, x, **kw: steps.append(eps) or original_step(eps, t, x, **kw)
    sample_video_latents(Split(), scheduler, context, image_latent, 4, 2, guidance_scale=3.0)
    assert all(torch.allclose(eps, torch.full_like(eps, 3.0)) for eps in steps)
    unguided = RecordingUNet()
    sample_video_latents(unguided, make_scheduler(cfg, "ddim"), context, image_latent, 4, 2, guidance_scale=1.0)
    assert unguided.calls[0][0].shape[0] == 1


def test_full_faithful_sampling_equals_the_released_loop():
    """1000 ancestral steps through diffusers == the released loop written by hand, same noise draws."""
    cfg = DiffusionConfig()
    gen = torch.Generator().manual_seed(0)
    image_latent, context = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 50, 16, generator=gen)
    unet = RecordingUNet()
    unet.forward = lambda x, t, c: 0.5 * torch.tanh(x) + 0.1 * c.mean()  # no recording: 1000 calls

    ours = sample_video_latents(unet, make_scheduler(cfg, "ddpm"), context, image_latent, num_frames=4,
                                num_inference_steps=1000, generator=torch.Generator().manual_seed(5))

    reference_gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 4, 8, 8, generator=reference_gen)
    x[:, :, 0] = image_latent
    for t in range(999, -1, -1):
        eps = unet(x, torch.tensor([t]), context)
        noise = torch.randn(x.shape, generator=reference_gen) if t > 0 else None
        x = released_ddpm_step(x, eps, t, noise)
        x[:, :, 0] = image_latent
    torch.testing.assert_close(ours, x, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_first_frame_start_noises_the_static_video_and_runs_the_last_steps(sampler):
    """init_strength s < 1: q(x_t | x_0 = frame 0 repeated) at the first kept step, then round(s * steps) steps."""
    cfg = DiffusionConfig()
    image_latent, context = torch.randn(1, 4, 8, 8), torch.randn(1, 50, 16)
    full = make_scheduler(cfg, sampler)
    full.set_timesteps(10)
    unet = RecordingUNet()
    out = sample_video_latents(unet, make_scheduler(cfg, sampler), context, image_latent, num_frames=4,
                               num_inference_steps=10, generator=torch.Generator().manual_seed(3), init_strength=0.7)
    seen = torch.stack([t.reshape(-1)[0] for _, t, _ in unet.calls])
    assert torch.equal(seen, full.timesteps[3:])  # the first 3 of 10 steps are skipped
    assert torch.equal(out[:, :, 0], image_latent)
    first_input, t0, _ = unet.calls[0]
    noise = torch.randn((1, 4, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    alpha_bar = make_scheduler(cfg, "ddpm").alphas_cumprod[int(t0.reshape(-1)[0])]
    expected = alpha_bar.sqrt() * image_latent.unsqueeze(2) + (1 - alpha_bar).sqrt() * noise
    torch.testing.assert_close(first_input[:, :, 1:], expected[:, :, 1:])  # frames 1..: noised frame 0


def test_init_strength_one_is_the_released_start_and_bad_values_fail():
    cfg = DiffusionConfig()
    image_latent, context = torch.randn(1, 4, 8, 8), torch.randn(1, 50, 16)
    runs = [sample_video_latents(RecordingUNet(), make_scheduler(cfg, "ddim"), context, image_latent, 4, 3,
                                 generator=torch.Generator().manual_seed(0), **kw) for kw in ({}, {"init_strength": 1.0})]
    assert torch.equal(runs[0], runs[1])
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="init_strength"):
            sample_video_latents(RecordingUNet(), make_scheduler(cfg, "ddim"), context, image_latent, 4, 3,
                                 init_strength=bad)


def test_v_prediction_target_and_zero_terminal_snr():
    """v-prediction trains on v = sqrt(abar) eps - sqrt(1 - abar) x0; zero terminal SNR leaves no signal at T - 1."""
    from fashionflow.config import ConfigError, DiffusionConfig, load_config
    from fashionflow.diffusion import diffusion_loss, make_scheduler

    cfg = DiffusionConfig(prediction_type="v_prediction", rescale_betas_zero_snr=True, loss_reduction="mean")
    scheduler = make_scheduler(cfg)
    assert scheduler.alphas_cumprod[-1] < 1e-6 and scheduler.config.prediction_type == "v_prediction"
    torch.manual_seed(0)
    latents, noise = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8)
    timesteps = torch.tensor([10, 700])
    abar = scheduler.alphas_cumprod[timesteps].view(2, 1, 1, 1, 1)
    noise_target = noise.clone()
    noise_target[:, :, 0] = 0
    v = abar.sqrt() * noise_target - (1 - abar).sqrt() * latents

    def oracle(noisy, t, context):  # predicts v exactly: zero loss
        return v

    assert diffusion_loss(oracle, latents, None, scheduler, cfg, timesteps=timesteps, noise=noise).item() < 1e-10
    with pytest.raises(ConfigError, match="needs diffusion.prediction_type=v_prediction"):
        load_config(None, ["diffusion.rescale_betas_zero_snr=true"])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_zero_snr_v_prediction_samples_from_pure_noise_to_the_data(sampler):
    """With one video as the data, the exact v-predictor takes pure noise to that video through the
    sampling loop, the zero-SNR first step (abar ~ 0 at t = 999, trailing spacing) included; frame 0
    stays the image latent throughout."""
    from fashionflow.config import DiffusionConfig
    from fashionflow.diffusion import make_scheduler, sample_video_latents

    cfg = DiffusionConfig(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    scheduler = make_scheduler(cfg, sampler)
    video = torch.randn(1, 4, 5, 6, 6, generator=torch.Generator().manual_seed(3))  # [b, c, f, h, w]
    abars = scheduler.alphas_cumprod.double()
    seen = []

    def exact_v(noisy, timesteps, context):  # v = sqrt(abar) eps - sqrt(1 - abar) x0, eps read off x_t
        abar = abars[timesteps[0]]
        seen.append(int(timesteps[0]))
        eps = (noisy.double() - abar.sqrt() * video) / (1 - abar).sqrt()
        return (abar.sqrt() * eps - (1 - abar).sqrt() * video).float()

    out = sample_video_latents(exact_v, scheduler, torch.zeros(1, 2, 3), video[:, :, 0], num_frames=5,
                               num_inference_steps=10, generator=[torch.Generator().manual_seed(0)])
    assert seen[0] == 999 and abars[999] < 1e-6  # the first step sees (almost) no signal
    torch.testing.assert_close(out, video, atol=2e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_timestep_spacing_option(sampler):
    from fashionflow.config import DiffusionConfig
    from fashionflow.diffusion import make_scheduler, switch_sampler

    default = make_scheduler(DiffusionConfig(), sampler)
    trailing = make_scheduler(DiffusionConfig(timestep_spacing="trailing"), sampler)
    default.set_timesteps(10)
    trailing.set_timesteps(10)
    assert trailing.timesteps[0] == 999
    assert default.timesteps[0] == (900 if sampler == "ddpm" else 999)  # DDPM's own spacing is "leading", as released
    switched = switch_sampler(default, sampler, "trailing")
    switched.set_timesteps(10)
    assert switched.timesteps[0] == 999
