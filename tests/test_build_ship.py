"""What a Ray task without the driver's files is sent (:func:`onflame.dataset.build_ship.ship_inputs`), and how
it finds them in its private folder; the build through a real two-node Ray is ``test_build_ray.py``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from onflame.dataset.build_ship import Shipment, ShippedFiles, ship_inputs
from onflame.dataset.build_task import BuildTask, LocalFiles
from onflame.sources.base import ScanItem


def _write(path: Path, text: str | bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_a_scan_is_sent_with_the_files_it_names_and_those_named_after_it(tmp_path):
    raw = tmp_path / "raw"
    scan = _write(raw / "scans" / "scan1.obj", "mtllib ../materials/skin.mtl\nv 0 0 0\nvt 0 0\nf 1/1 1/1 1/1\n")
    _write(raw / "materials" / "skin.mtl", "newmtl m\nmap_Kd C:\\3dMD\\capture\\Face.BMP\n")  # the capture PC's path
    texture = _write(raw / "materials" / "face.bmp")  # found as the readers find it: by name, any case
    sidecar = _write(raw / "scans" / "scan1.lmk51.npy")
    photo = _write(raw / "scans" / "scan1_0.png")
    for other in ("scan10.png", "scan2.obj", "scans.txt"):  # another capture's, or unrelated
        _write(raw / "scans" / other)
    wrl = _write(raw / "bu" / "F0001_RAW.wrl", 'Shape { appearance Appearance { texture ImageTexture { url "tex/F0001_0.bmp" } } }')
    wrl_texture = _write(raw / "bu" / "tex" / "F0001_0.bmp")

    def shipped(path: Path, landmarks: str = "auto") -> set[str]:
        item = ScanItem("STIRLING", "a", path.stem, path, texture_expected=True)
        files = ship_inputs(BuildTask(item, str(tmp_path / "out"), landmarks=landmarks)).files
        return {os.path.normpath(p) for p in files}  # named as the readers name them: raw/scans/../materials/...

    assert shipped(scan) == {str(p) for p in (scan, raw / "materials" / "skin.mtl", texture, sidecar, photo)}
    assert shipped(scan, landmarks="none") == shipped(scan)  # files named after the scan go anyway
    assert shipped(wrl) == {str(wrl), str(wrl_texture)}
    template = str(raw / "clicks" / "{stem}.pp")
    clicks = _write(raw / "clicks" / "scan1.pp", "<PickedPoints/>")
    assert str(clicks) in shipped(scan, landmarks=template)


def test_a_task_finds_its_shipped_files_where_the_driver_has_them(tmp_path):
    data = np.arange(6.0).tobytes()
    scan = tmp_path / "driver" / "raw" / "s.obj"
    relative = Path("clicks/s.npy")  # a landmark template relative to where the build was started
    files = ShippedFiles(tmp_path / "private", Shipment({str(scan): (data, 1_700_000_000_123_456_789),
                                                         str(relative): (b"clicks", 1_700_000_000_000_000_000)}))
    local = files.locate(scan)
    assert local.read_bytes() == data and local != scan and local.is_relative_to(tmp_path / "private")
    assert local.stat().st_mtime_ns == 1_700_000_000_123_456_789  # fingerprints as on the driver's disk
    assert files.locate(relative).read_bytes() == b"clicks"
    assert not files.locate(scan.with_name("missing.png")).exists()  # not shipped: absent, not the driver's
    # text that names the copies names the driver's files
    assert files.shown(f"{local}: malformed") == f"{scan}: malformed"
    assert files.shown(str(files.locate(relative))) == str(relative)
    assert files.shown(str(local.with_name("s.ppm"))) == str(scan.with_name("s.ppm"))
    assert files.shown_in({"inputs": {str(local): 1}, "reasons": [f"{local}: bad"]}) == \
        {"inputs": {str(scan): 1}, "reasons": [f"{scan}: bad"]}
    assert LocalFiles().locate(scan) == scan and LocalFiles().shown("x") == "x"
