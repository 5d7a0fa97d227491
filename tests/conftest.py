import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(2)
    yield


@pytest.fixture
def fixtures_dir():
    """Real UBC Fashion media (videos, photos; research use, not redistributed with the code) in
    ../shared/fixtures beside the repository. Only tests of real media need it; without it
    they skip, naming the folder."""
    if not FIXTURES.is_dir():
        pytest.skip(f"needs real UBC Fashion media in {FIXTURES} (folder not found)")
    return FIXTURES


@pytest.fixture
def restore_library_logging():
    """inference.main quiets diffusers/transformers for the console; give other tests their defaults back."""
    import diffusers
    import transformers

    levels = [library.utils.logging.get_verbosity() for library in (diffusers, transformers)]
    yield
    for library, level in zip((diffusers, transformers), levels):
        library.utils.logging.set_verbosity(level)
        library.utils.logging.enable_progress_bar()


@pytest.fixture
def vae_training_args(tmp_path):
    """`train_vae` arguments for a few steps on 6 tiny synthetic clips (32 x 32, 4 frames), widths 8."""
    from fashionflow import synthetic

    clips = tmp_path / "clips"
    synthetic.main(["--output-dir", str(clips), "--num-videos", "6", "--frames", "4", "--height", "32", "--width", "32"])
    return ["--videos", str(clips), "--batch-size", "2", "--channels", "8", "8", "8", "8", "--threads", "1",
            "--log-every", "100"]
