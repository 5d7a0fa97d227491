import pytest
import yaml

from fashionflow.config import ConfigError, config_to_dict, config_to_yaml, load_config

PRESETS = ["configs/fashionflow.yaml", "configs/fashionflow_paper.yaml", "configs/tiny.yaml", "configs/trial.yaml"]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_round_trip(preset, tmp_path):
    from conftest import ROOT

    cfg = load_config(ROOT / preset)
    saved = tmp_path / "config.yaml"
    saved.write_text(config_to_yaml(cfg))
    assert config_to_dict(load_config(saved)) == config_to_dict(cfg)


def test_released_and_paper_presets_differ_where_the_paper_does():
    from conftest import ROOT

    released, paper = load_config(ROOT / PRESETS[0]), load_config(ROOT / PRESETS[1])
    assert (released.train.lr, released.train.betas) == (1e-4, (0.9, 0.999))
    assert (paper.train.lr, paper.train.betas) == (2e-4, (0.5, 0.999))
    assert config_to_dict(released)["model"] == config_to_dict(paper)["model"]


def test_dotted_overrides_are_typed():
    cfg = load_config(None, ["train.lr=3e-4", "train.grad_clip=1", "model.dim_mults=[1,2,4,8]",
                             "train.ema_decay=none", "sample.sampler=dpm"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.grad_clip, float)
    assert cfg.model.dim_mults == (1, 2, 4, 8) and cfg.train.ema_decay is None and cfg.sample.sampler == "dpm"


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown key train.lrr"),
    ("trainer.lr=1", "unknown config section 'trainer'"),
    ("train.lr=fast", "train.lr='fast' must be a number"),
    ("train.batch_size=2.5", "train.batch_size=2.5 must be an integer"),
    ("sample.sampler=euler", "is not one of 'ddpm', 'ddim', 'dpm'"),
    ("data.num_frames=71", "must be a multiple of 2"),
    ("data.height=600", "must be multiples of 128"),
    ("sample.init_strength=0", "sample.init_strength=0.0 must be in (0, 1]"),
    ("sample.routed_init_strength=1.5", "sample.routed_init_strength=1.5 must be in (0, 1]"),
    ("model.dim_mults=[1,2]", "model.resnet_depths has 4 entries but model.dim_mults has 2"),
    ("trainlr", "must look like section.key=value"),
])
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(None, [override])


def test_unknown_key_in_a_preset_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": {"base_width": 64}}))
    with pytest.raises(ConfigError, match="unknown key model.base_width"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text, message", [
    ("model:\n  base_dim: 24\ntrain:\n  lr: 1.0e-4\nmodel:\n  groups: 8\n", "line 1: model given twice"),
    ("model:\n  base_dim: 24\n  base_dim: 32\n", "line 2: base_dim given twice"),
    ("model: [\n", "line 2: expected the node content"),
])
def test_a_preset_with_a_repeated_key_or_broken_yaml_is_one_clear_error(tmp_path, text, message):
    """Plain YAML keeps the last of two equal keys; a section written twice would lose the first."""
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {path}, {message}"):
        load_config(path)


def test_output_range_auto_follows_the_preprocessing_and_explicit_values_win():
    from fashionflow.pipeline import resolve_output_range

    assert resolve_output_range(load_config(None)) == "clamp01"  # released inference clamps to [0, 1]
    assert resolve_output_range(load_config(None, ["encoders.preprocessing=correct"])) == "from_minus1"
    assert resolve_output_range(load_config(None, ["sample.output_range=from_minus1"])) == "from_minus1"
