"""MICC Florence 2D/3D Hybrid Face Dataset (MICA subset ``FLORENCE``).

Layout read (plausible, documented: the release's models per subject and capture, 3dMD VRML 2.0 in
millimetres; frames extracted from its videos into one folder per video, as MICA's scripts read them)::

    <raw>/subject_<nn>/Model/frontal1/**/<capture>.wrl    e.g. subject_01/.../110920150452.wrl (+ texture)
    <raw>/subject_<nn>/Model/frontal2/**/<capture>.wrl    used when frontal1 has none
    <raw>/subject_<nn>/Video/<video>/*.jpg                 frames; <video> is Indoor-Cooperative,
                                                           PTZ-Indoor or PTZ-Outdoor

An OBJ in place of the VRML file is read as well. MICA's subject is the capture named by its
timestamp: ``subject_01/110920150452.npz``. Frame selection (MICA drops PTZ-Outdoor and samples 1000
frames per subject) is the training side's per-subset rule; all frames are listed here. Axes are FLAME's.
"""
from __future__ import annotations

from pathlib import Path

from .base import IMAGE_SUFFIXES, ScanItem, Source

#: Capture folders in order of preference.
CAPTURES = ("frontal1", "frontal2")


def _find(raw: Path, source: Source) -> list[ScanItem]:
    items = []
    for subject in sorted(p for p in raw.glob("subject_*") if p.is_dir()):
        scan = None
        for capture in CAPTURES:
            found = sorted(p for p in (subject / "Model" / capture).rglob("*") if p.suffix.lower() in (".wrl", ".obj"))
            wrl = [p for p in found if p.suffix.lower() == ".wrl"]
            if found:
                scan = (wrl or found)[0]
                break
        if scan is None:
            continue
        video = subject / "Video"
        photos = sorted(p for p in video.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if video.is_dir() else []
        items.append(source.item(subject.name, scan.stem, scan, photos))
    return items


SOURCE = Source("FLORENCE", "MICC Florence", units="mm", finder=_find,
                layout="subject_<nn>/Model/frontal1/**/<capture>.wrl, subject_<nn>/Video/<video>/*.jpg")
