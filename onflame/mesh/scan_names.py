"""How a scan's files are named: the stem its outputs take and the landmark file a user puts beside it."""
from __future__ import annotations

import os
from pathlib import Path

#: Names of a landmark file a user puts beside a scan: ``<scan stem><suffix>``, holding FLAME's 51 landmarks
#: (or iBUG's 68) as (51, 3) / (68, 3) points in the scan's own units and axes (``.npy``, or text with one
#: ``x y z`` line per point), e.g. ``nd1/Fall2003range/02463d546.lmk51.npy`` beside ``02463d546.abs.gz``.
LANDMARK_SIDECAR_SUFFIXES = (".lmk51.npy", ".lmk51.txt")


def scan_stem(scan_path: str | os.PathLike) -> str:
    """The scan's file name without its format suffix (and a ``.gz``): ``02463d546.abs.gz`` -> ``02463d546``."""
    name = Path(scan_path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem


def landmark_sidecar(scan_path: str | os.PathLike) -> Path | None:
    """The landmark sidecar of a scan (see :data:`LANDMARK_SIDECAR_SUFFIXES`) if one exists, else None."""
    folder, stem = Path(scan_path).parent, scan_stem(scan_path)
    return next((p for p in (folder / f"{stem}{suffix}" for suffix in LANDMARK_SIDECAR_SUFFIXES) if p.is_file()),
                None)
