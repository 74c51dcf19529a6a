"""Stirling/ESRC 3D face database (MICA subset ``STIRLING``).

Layout read (as MICA's creation scripts read it; 3dMD OBJ scans in millimetres, some with malformed
``usemtl``/``newmtl`` lines that onflame's OBJ reader tolerates)::

    <raw>/scans/<group>/<name>.obj    e.g. scans/F/F1001_N.obj, scans/F/f1004b_N.obj (+ .mtl, .bmp)
    <raw>/images/Real_images__Subset_2D_FG2018/HQ/<ACTOR>_<nnn>.jpg    the photos

Actor ids are MICA's: the first five characters of the scan name, upper-cased (``f1004b_N`` -> ``F1004``);
a photo's actor is its name before the first ``_``, upper-cased. Where an actor has several scans MICA
keeps the last in sorted path order (later files overwrote earlier ones), so ``F1004`` is
``f1004b_N`` when ``F1004_N`` is also there. MICA's subject keeps the scan name:
``F1004/f1004b_N.npz``. Scans are found anywhere under ``<raw>``. Axes are FLAME's.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .base import ScanItem, Source, images_in

PHOTO_DIR = Path("Real_images__Subset_2D_FG2018") / "HQ"


def actor_id(name: str) -> str:
    """MICA's Stirling actor id: the first five characters of a scan name, upper-cased."""
    return name[:5].upper()


def _find(raw: Path, source: Source) -> list[ScanItem]:
    photos: dict[str, list[Path]] = defaultdict(list)
    for d in sorted(raw.rglob(PHOTO_DIR.name)):
        if d.parent.name == PHOTO_DIR.parent.name:
            for p in images_in(d):
                photos[p.stem.split("_")[0].upper()].append(p)
    scans: dict[str, Path] = {}
    for p in sorted(raw.rglob("*"), key=str):  # MICA's order (sorted path strings): a later scan wins
        if p.suffix.lower() == ".obj" and p.is_file():
            scans[actor_id(p.stem)] = p
    return [source.item(actor, p.stem, p, photos[actor]) for actor, p in scans.items()]


SOURCE = Source("STIRLING", "Stirling/ESRC 3D", units="mm", finder=_find, actor_id=actor_id,
                layout="scans/<group>/<name>.obj, images/Real_images__Subset_2D_FG2018/HQ/*.jpg")
