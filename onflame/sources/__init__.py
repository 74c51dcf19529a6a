"""The raw source datasets of MICA: one module per source, and this registry.

>>> from onflame.sources import get_source
>>> items = get_source("FRGC").find_scans("/data/FRGC_v2")      # [ScanItem, ...]
>>> mesh = items[0].load()                                       # metres, FLAME's axes

Each :class:`Source` finds a release's scans as :class:`ScanItem` s named as in MICA's image lists
(``<actor>/<stem>.npz``); :func:`mica_subjects` reads such a list to keep exactly MICA's subjects.
"""
from __future__ import annotations

from . import bp4d, bu3dfe, d3dfacs, facewarehouse, florence, frgc, lyhm, stirling
from .base import ScanItem, Source, axis_rotation, mica_subjects

#: MICA subset name -> source.
SOURCES: dict[str, Source] = {m.SOURCE.name: m.SOURCE for m in (bp4d, bu3dfe, d3dfacs, facewarehouse, florence,
                                                               frgc, lyhm, stirling)}


def get_source(name: str) -> Source:
    """The source called ``name``: MICA's subset name, any case, ``-``/``_``/spaces ignored (``"BU-3DFE"``).

    Raises ``KeyError`` listing the known names.
    """
    key = "".join(ch for ch in name.upper() if ch.isalnum())
    key = {"BP4DPLUS": "BP4D", "MICC": "FLORENCE", "MICCFLORENCE": "FLORENCE", "FRGCV2": "FRGC"}.get(key, key)
    if key not in SOURCES:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[key]


__all__ = ["SOURCES", "ScanItem", "Source", "axis_rotation", "get_source", "mica_subjects"]
