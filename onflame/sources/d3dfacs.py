"""D3DFACS (dynamic 3D FACS dataset, MICA subset ``D3DFACS``).

Layout read (plausible, documented: the release ships 3dMD sequences per actor and action unit; as in
MICA's processed copy, one neutral frame per actor is exported under the actor's name)::

    <raw>/scans/<actor>.obj                      e.g. scans/Adrian.obj (+ .mtl and texture), millimetres
    <raw>/images/<actor>/texture_<cam>C_<nnn>.jpg    the sequence textures (cameras 1 and 2): the photos

MICA's subject: ``Adrian/Adrian.npz``. Axes are FLAME's (+y up, face +z).
"""
from __future__ import annotations

from pathlib import Path

from .base import ScanItem, Source, images_in


def _find(raw: Path, source: Source) -> list[ScanItem]:
    scans = sorted((raw / "scans").glob("*.obj"))
    return [source.item(p.stem, p.stem, p, images_in(raw / "images" / p.stem)) for p in scans]


SOURCE = Source("D3DFACS", "D3DFACS", units="mm", finder=_find,
                layout="scans/<actor>.obj, images/<actor>/texture_*.jpg")
