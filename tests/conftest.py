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
