"""BU-3DFE (Binghamton University 3D Facial Expression database, MICA subset ``BU3DFE``).

Layout read (the release's own: one folder per subject, 3dMD VRML 2.0 models in millimetres)::

    <raw>/<actor>/<actor>_NE00<race>_RAW.wrl      the neutral raw capture, e.g. F0001/F0001_NE00WH_RAW.wrl:
                                                  two shapes (one per camera pod), each with its texture
    <raw>/<actor>/<actor>_<EX><nn><race>_RAW_<k>.bmp   the raw captures' textures (k = 0, 1): the photos

``<EX><nn>`` is NE00 or one of AN, DI, FE, HA, SA, SU with intensity 01..04; ``<race>`` is WH, BL, AE,
AM, IN or LA. MICA's subject is the neutral raw capture, ``F0001/F0001_NE00WH_RAW.npz``; its image list
holds all 50 raw textures of the actor (25 captures x 2 cameras). The files are found anywhere under
``<raw>`` (actor = first five characters), so a flat copy works too. Axes are FLAME's.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from .base import IMAGE_SUFFIXES, ScanItem, Source

_NEUTRAL = re.compile(r"^([FM]\d{4})_NE00[A-Z]{2}_RAW$", re.IGNORECASE)
_TEXTURE = re.compile(r"^([FM]\d{4})_[A-Z]{2}\d{2}[A-Z]{2}_RAW_\d+$", re.IGNORECASE)


def _find(raw: Path, source: Source) -> list[ScanItem]:
    photos: dict[str, list[Path]] = defaultdict(list)
    scans: dict[str, Path] = {}
    for p in sorted(raw.rglob("*")):
        m = _NEUTRAL.match(p.stem) if p.suffix.lower() == ".wrl" else None
        if m and m.group(1).upper() not in scans:
            scans[m.group(1).upper()] = p
        t = _TEXTURE.match(p.stem) if p.suffix.lower() in IMAGE_SUFFIXES else None
        if t:
            photos[t.group(1).upper()].append(p)
    return [source.item(actor, p.stem, p, photos[actor]) for actor, p in scans.items()]


SOURCE = Source("BU3DFE", "BU-3DFE", units="mm", finder=_find,
                layout="<actor>/<actor>_NE00<race>_RAW.wrl with <actor>_*_RAW_<k>.bmp textures")
