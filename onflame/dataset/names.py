"""The names in a MICA tree: its eight subsets, the folders a subset holds, the files a subject has.

:mod:`.layout` reads a tree by them, :mod:`.stores` keeps a subset's files, the build writes them.
"""
from __future__ import annotations

#: The eight subsets of the MICA dataset.
SUBSETS = ("BP4D", "BU3DFE", "D3DFACS", "FACEWAREHOUSE", "FLORENCE", "FRGC", "LYHM", "STIRLING")
PARAMS_DIR = "FLAME_parameters"
REGISTRATIONS_DIR = "registrations"
#: A subset's build records: manifest, summary, per-scan reports, rejected registrations, locks.
BUILD_DIR = "build"
#: Image folders, in the order they are looked for (MICA reads ``arcface_input``).
IMAGE_DIRS = ("arcface_input", "images")
REGISTRATION_SUFFIXES = (".obj", ".ply")
#: Optional file at a root's top naming the model its registrations use (an onflame ``.npz`` model).
MODEL_FILE = "model.npz"


def canonical_name(name: str) -> str:
    """``bp4d`` -> ``BP4D``; other names are kept as they are."""
    return name.upper() if name.upper() in SUBSETS else name
