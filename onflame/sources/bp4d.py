"""BP4D+ (Binghamton-Pittsburgh 4D spontaneous expression database, MICA subset ``BP4D``).

Layout read (MICA's creation scripts read this one; the release itself stores 3dMD sequences per
subject and task, from which one neutral frame per subject is exported under the subject's name)::

    <raw>/scans/<actor>.obj        e.g. scans/F001.obj (+ .mtl and texture), millimetres
    <raw>/images/<actor>/*.jpg     video frames of the subject, e.g. images/F001/0491.jpg

MICA's subject: ``F001/F001.npz`` (the stem is the actor id). Axes are FLAME's (+y up, face +z).
Photo sampling (MICA draws 100 frames per actor) is the training side's per-subset rule.
"""
from __future__ import annotations

from pathlib import Path

from .base import ScanItem, Source, images_in


def _find(raw: Path, source: Source) -> list[ScanItem]:
    scans = sorted((raw / "scans").glob("*.obj"))
    return [source.item(p.stem, p.stem, p, images_in(raw / "images" / p.stem)) for p in scans]


SOURCE = Source("BP4D", "BP4D+", units="mm", layout="scans/<actor>.obj, images/<actor>/*.jpg", finder=_find)
