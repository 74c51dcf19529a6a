"""FRGC v2.0 (Face Recognition Grand Challenge, MICA subset ``FRGC``).

Layout read (the release's own)::

    <raw>/nd1/<session>range/<capture>.abs.gz   range images (or .abs), millimetres, e.g. 02463d546.abs.gz
    <raw>/nd1/<session>range/<capture>.ppm      the colour photo taken with each range image
    <raw>/nd1/<session>/<capture>.jpg           still photos, e.g. nd1/Fall2003/02463d567.jpg

The actor is the capture id before ``d`` (``02463``); MICA's subject names the capture:
``02463/02463d546.npz``. As in MICA, scans of the ``Spring2003range`` session are left out (its photos
are listed; the subset's photo rules, :mod:`onflame.training.rules`, leave them out of training).
The release has several range captures per actor; MICA kept one (which one is not derivable from the
release), so every capture is listed unless ``find_scans(raw, only=mica_subjects(list))`` narrows it.
Axes are FLAME's (scanner: +y up, face towards +z).
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ..mesh.frgc_abs import abs_stem
from .base import ScanItem, Source

#: Session whose scans MICA leaves out.
EXCLUDED_SESSION = "Spring2003range"
_CAPTURE = re.compile(r"^(\d+)d\d+$")


def _find(raw: Path, source: Source) -> list[ScanItem]:
    photos: dict[str, list[Path]] = defaultdict(list)
    scans: list[tuple[str, Path]] = []
    for p in sorted(raw.rglob("*")):
        if not p.is_file():
            continue
        name = p.name.lower()
        if name.endswith((".abs", ".abs.gz")):
            if EXCLUDED_SESSION in p.relative_to(raw).parts:
                continue
            m = _CAPTURE.match(abs_stem(p))
            if m:
                scans.append((m.group(1), p))
        elif name.endswith(".jpg"):
            m = _CAPTURE.match(p.stem)
            if m:
                photos[m.group(1)].append(p)
    return [source.item(actor, abs_stem(p), p, photos[actor]) for actor, p in scans]


SOURCE = Source("FRGC", "FRGC v2.0", units="mm", finder=_find,
                layout="nd1/<session>range/<capture>.abs[.gz] + .ppm, nd1/<session>/<capture>.jpg")
