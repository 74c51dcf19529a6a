"""Liverpool-York Head Model data (Headspace; MICA subset ``LYHM``).

Layout read (as MICA's creation scripts read it; 3dMD head scans in millimetres)::

    <raw>/<actor>/scan/<capture>.obj    e.g. 00001/scan/130925161618.obj (+ .mtl and texture)
    <raw>/<actor>/*.png                 the two camera photos, 1C.png and 2C.png

MICA's subject: ``00001/130925161618.npz``. The scans' axes are turned against FLAME's: MICA rotates
them by -45° about X, then by -45° about Y (after centring), which :data:`SOURCE`'s rotation does.
"""
from __future__ import annotations

from pathlib import Path

from .base import ScanItem, Source, axis_rotation, images_in

#: Scan axes -> FLAME axes: -45° about X first, then -45° about Y (MICA's LYHM transform).
ROTATION = axis_rotation("y", -45.0) @ axis_rotation("x", -45.0)


def _find(raw: Path, source: Source) -> list[ScanItem]:
    items = []
    for actor in sorted(p for p in raw.iterdir() if p.is_dir()):
        scans = sorted((actor / "scan").glob("*.obj"))
        if scans:
            items.append(source.item(actor.name, scans[0].stem, scans[0], images_in(actor, "*.png")))
    return items


SOURCE = Source("LYHM", "Liverpool-York Head Model", units="mm", finder=_find, rotation=ROTATION,
                layout="<actor>/scan/<capture>.obj, <actor>/{1C,2C}.png")
