"""Shared fixtures: the real material in ../shared and a FLAME-structured model made once per session."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"
MICA_LISTS = SHARED / "fixtures" / "mica" / "image_paths"
IMAGES = SHARED / "fixtures" / "images"


def _make_model(out: Path, plain: bool) -> Path:
    tool = SHARED / "tools" / "make_synthetic_flame.py"
    if not tool.is_file():
        pytest.skip(f"{tool} not found: ../shared must sit beside the project")
    subprocess.run([sys.executable, str(tool), str(out)] + (["--plain"] if plain else []), check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def flame_pkl(tmp_path_factory) -> Path:
    """FLAME-structured generic_model.pkl with a chumpy-pickled ``shapedirs`` (as the official file)."""
    return _make_model(tmp_path_factory.mktemp("flame") / "generic_model.pkl", plain=False)


@pytest.fixture(scope="session")
def flame_plain_pkl(tmp_path_factory) -> Path:
    """The same model with plain numpy ``shapedirs``."""
    return _make_model(tmp_path_factory.mktemp("flame_plain") / "generic_model.pkl", plain=True)


@pytest.fixture(scope="session")
def flame_model(flame_pkl):
    """The synthetic FLAME model with MICA's landmark embedding and FLAME's masks attached."""
    from onflame.flame import load_landmark_embedding, load_masks, load_model

    return load_model(flame_pkl, landmarks=load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy"),
                      masks=load_masks(FLAME_FIX / "FLAME_masks.pkl"))


@pytest.fixture(scope="session")
def procedural_head():
    """onflame's procedural FLAME-structured head (its default model), made once per session."""
    from onflame.synthetic.head import make_head_model

    return make_head_model()
