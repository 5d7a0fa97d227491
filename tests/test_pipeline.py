"""FashionFlowPipeline on tiny random components, loaded from a saved folder like real weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from fashionflow.diffusion import switch_sampler
from fashionflow.pipeline import FashionFlowPipeline, load_pipeline, resolve_output_range, save_pipeline
from fashionflow.testing import build_tiny_pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    pipe, cfg = build_tiny_pipeline(folder)
    save_pipeline(pipe, folder / "pipeline", cfg)
    return folder / "pipeline", cfg


@pytest.fixture(scope="module")
def pipe(saved):
    pipe, cfg = load_pipeline(saved[0])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image(seed=0, size=(90, 120)):
    return torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def run(pipe, images, seeds, **kwargs):
    kwargs = {"num_frames": 2, "num_inference_steps": 2, "output_type": "pt", **kwargs}
    return pipe(images, generator=gens(*seeds), **kwargs).frames


def test_folder_round_trip_keeps_components_config_and_outputs(saved, pipe):
    folder, cfg = saved
    assert {p.name for p in folder.iterdir()} >= {"model_index.json", "config.yaml", "unet", "adapter", "vae",
                                                   "image_encoder", "feature_extractor", "scheduler"}
    again, loaded_cfg = load_pipeline(folder)
    again.set_progress_bar_config(disable=True)
    assert loaded_cfg.model == cfg.model and again.config.preprocessing == "correct"
    assert again.config.output_range == "from_minus1" == resolve_output_range(cfg)
    torch.testing.assert_close(run(pipe, image(), [0]), run(again, image(), [0]))


def test_output_types_and_shapes(pipe):
    video = run(pipe, image(), [0])
    assert video.shape == (1, 2, 3, 128, 128) and video.dtype == torch.float32
    assert 0 <= video.min() and video.max() <= 1
    frames = run(pipe, image(), [0], output_type="np")
    assert frames.shape == (1, 2, 128, 128, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], (video[0] * 255).round().byte().permute(0, 2, 3, 1).numpy())
    assert run(pipe, image(), [0], output_type="latent", num_frames=8).shape == (1, 4, 8, 16, 16)


def test_frame_zero_is_the_conditioning_latent(pipe):
    latents = run(pipe, image(), [3], output_type="latent")
    first_frame, _ = pipe.encode_image(pipe.prepare_images(image()), gens(3))
    torch.testing.assert_close(latents[:, :, 0], first_frame)


@pytest.mark.parametrize("sampler", ["ddpm", "dpm"])
def test_seeds_reproduce_and_a_batch_of_two_equals_two_single_runs(pipe, sampler):
    original = pipe.scheduler
    pipe.scheduler = switch_sampler(original, sampler)
    try:
        pair = run(pipe, [image(0), image(1)], [10, 11])
        torch.testing.assert_close(pair[0:1], run(pipe, image(0), [10]), rtol=0, atol=1e-4)
        torch.testing.assert_close(pair[1:2], run(pipe, image(1), [11]), rtol=0, atol=1e-4)
        if sampler == "ddpm":
            assert (pair[0:1] - run(pipe, image(0), [12])).abs().max() > 1e-3
    finally:
        pipe.scheduler = original


def test_chunked_decoding_guidance_and_inputs(pipe, tmp_path):
    whole = run(pipe, image(), [0], decode_chunk_size=8)
    torch.testing.assert_close(run(pipe, image(), [0], decode_chunk_size=1), whole)
    assert (run(pipe, image(), [0], guidance_scale=3.0) - whole).abs().max() > 1e-4

    pixels = (image().permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    from_path = run(pipe, str(tmp_path / "photo.png"), [0])
    from_pil = run(pipe, Image.fromarray(pixels), [0])
    torch.testing.assert_close(from_path, from_pil)
    assert pipe.prepare_images(pixels).equal(pipe.prepare_images(Image.fromarray(pixels)))


def test_bad_arguments_fail_clearly(pipe, tmp_path):
    with pytest.raises(ValueError, match="multiple of 2"):
        run(pipe, image(), [0], num_frames=7)
    with pytest.raises(ValueError, match="one per image"):
        run(pipe, [image(0), image(1)], [0])
    with pytest.raises(TypeError, match="unsupported image input"):
        run(pipe, torch.rand(4, 10), [0])
    with pytest.raises(FileNotFoundError, match="not a FashionFlow pipeline folder"):
        load_pipeline(tmp_path)


def test_released_preprocessing_keeps_the_configured_output_range(tmp_path):
    from fashionflow.config import load_config

    cfg = load_config("configs/tiny.yaml", ["encoders.preprocessing=released"])
    pipe, cfg = build_tiny_pipeline(tmp_path, cfg)
    assert isinstance(pipe, FashionFlowPipeline)
    assert pipe.config.preprocessing == "released" and pipe.config.output_range == "clamp01"


def test_assemble_builds_a_pipeline_folder_from_converted_weights(tmp_path, capsys):
    from fashionflow.assemble import main as assemble_main
    from fashionflow.config import load_config, save_config
    from fashionflow.models import build_models
    from fashionflow.testing import save_tiny_encoders

    cfg = load_config("configs/tiny.yaml", ["encoders.preprocessing=released"])
    unet, adapter = build_models(cfg.model)
    converted = tmp_path / "converted"
    unet.save_pretrained(converted / "unet")
    adapter.save_pretrained(converted / "adapter")
    save_config(cfg, converted / "config.yaml")
    paths = save_tiny_encoders(tmp_path / "weights")

    out = tmp_path / "pipeline"
    base = [str(converted), str(out), "--image-encoder", paths["image_encoder"]]
    assert assemble_main(base + ["--vae", str(tmp_path / "no_vae")]) == 1
    assert "VAE" in capsys.readouterr().err and not out.exists()
    assert assemble_main(base + ["--vae", paths["vae"], "--sampler", "ddpm"]) == 0
    pipe, saved_cfg = load_pipeline(out)
    assert type(pipe.scheduler).__name__ == "DDPMScheduler" and pipe.config.preprocessing == "released"
    assert saved_cfg.encoders.vae == paths["vae"]
    torch.testing.assert_close(pipe.unet.state_dict(), unet.state_dict())
    assert assemble_main(base + ["--vae", paths["vae"]]) == 1 and "already exists" in capsys.readouterr().err

    # the converted folder itself loads too, encoders from its config.yaml (hub ids here: offline)
    from fashionflow.encoders import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="encoders.image_encoder="):
        load_pipeline(converted)
    cfg.encoders.vae, cfg.encoders.vae_subfolder, cfg.encoders.image_encoder = paths["vae"], None, paths["image_encoder"]
    save_config(cfg, converted / "config.yaml")
    direct, _ = load_pipeline(converted, sampler="ddim")
    assert type(direct.scheduler).__name__ == "DDIMScheduler" and direct.image_size == (128, 128)


def test_compile_models_compiles_the_vae_decoder_in_place(pipe):
    """`compile_models` with the cheap "eager" backend (dynamo traces, no code generation): the
    decoder gives the same frames and keeps its state-dict names (the pipeline still saves)."""
    import torch._dynamo

    latents = torch.randn(1, 4, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = pipe.decode(latents)
    names = list(pipe.vae.state_dict())
    torch._dynamo.utils.counters.clear()
    try:
        pipe.compile_models(["vae"], backend="eager")
        torch.testing.assert_close(pipe.decode(latents), expected, rtol=1e-5, atol=1e-6)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1 and list(pipe.vae.state_dict()) == names
    finally:
        pipe.vae.decoder._compiled_call_impl = None  # back to eager for the other tests
    with pytest.raises(ValueError, match="cannot compile 'clip'"):
        pipe.compile_models(["clip"])
