"""Source modules: which files each finds in its release layout, and the names they get (MICA's)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MICA_LISTS

from onflame.errors import InputError
from onflame.mesh import Mesh
from onflame.sources import SOURCES, ScanItem, get_source, mica_subjects
from onflame.synthetic.raw_releases import MICA_FACTS


def _touch(root: Path, *names: str) -> None:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def _names(items: list[ScanItem]) -> list[str]:
    return [it.name for it in items]


def test_registry_names_and_aliases():
    assert sorted(SOURCES) == ["BP4D", "BU3DFE", "D3DFACS", "FACEWAREHOUSE", "FLORENCE", "FRGC", "LYHM", "STIRLING"]
    assert get_source("BU-3DFE").name == "BU3DFE"
    assert get_source("FaceWarehouse").name == "FACEWAREHOUSE"
    assert get_source("bp4d+").name == "BP4D"
    with pytest.raises(KeyError, match="known"):
        get_source("BFM")


def test_frgc_leaves_out_spring2003range_and_filters_with_mica_list(tmp_path):
    _touch(tmp_path, "nd1/Fall2003range/02463d546.abs.gz", "nd1/Fall2003range/02463d546.ppm",
           "nd1/Spring2004range/02463d600.abs", "nd1/Spring2003range/02463d400.abs.gz",
           "nd1/Fall2003/02463d567.jpg", "nd1/Spring2003range/02463d401.jpg", "nd1/Fall2003range/04200d74.abs.gz")
    items = get_source("FRGC").find_scans(tmp_path)
    assert _names(items) == ["02463/02463d546", "02463/02463d600", "04200/04200d74"]
    # every photo is listed; MICA's photo rules (onflame.training.rules) drop the Spring2003range ones
    assert [p.name for p in items[0].photos] == ["02463d567.jpg", "02463d401.jpg"]
    assert get_source("FRGC").photo_rules.exclude == ("Spring2003range",)
    assert items[0].params_relpath == "02463/02463d546.npz" and items[0].units == "mm"
    only = get_source("FRGC").find_scans(tmp_path, only={"02463": "02463d546", "04200": "04200d74"})
    assert _names(only) == ["02463/02463d546", "04200/04200d74"]


def test_stirling_actor_ids_and_later_scan_wins(tmp_path):
    hq = "images/Real_images__Subset_2D_FG2018/HQ"
    _touch(tmp_path, "scans/F/F1001_N.obj", "scans/F/F1004_N.obj", "scans/F/f1004b_N.obj", "scans/M/m1044_NH.obj",
           f"{hq}/F1004_001.jpg", f"{hq}/f1004_002.jpg", f"{hq}/M1044_001.jpg")
    items = get_source("STIRLING").find_scans(tmp_path)
    assert _names(items) == ["F1001/F1001_N", "F1004/f1004b_N", "M1044/m1044_NH"]
    assert [p.name for p in items[1].photos] == ["F1004_001.jpg", "f1004_002.jpg"]
    assert items[0].photos == ()


def test_bu3dfe_neutral_raw_capture_and_its_textures(tmp_path):
    _touch(tmp_path, "F0001/F0001_NE00WH_RAW.wrl", "F0001/F0001_HA01WH_RAW.wrl", "F0001/F0001_NE00WH_F3D.wrl",
           "F0001/F0001_NE00WH_RAW_0.bmp", "F0001/F0001_HA01WH_RAW_1.bmp", "F0001/F0001_NE00WH_F2D.bmp",
           "M0044/M0044_NE00IN_RAW.wrl")
    items = get_source("BU3DFE").find_scans(tmp_path)
    assert _names(items) == ["F0001/F0001_NE00WH_RAW", "M0044/M0044_NE00IN_RAW"]
    assert [p.name for p in items[0].photos] == ["F0001_HA01WH_RAW_1.bmp", "F0001_NE00WH_RAW_0.bmp"]


def test_florence_prefers_frontal1(tmp_path):
    _touch(tmp_path, "subject_01/Model/frontal1/vrml/110920150452.wrl",
           "subject_01/Model/frontal2/vrml/110920151111.wrl", "subject_02/Model/frontal2/obj/110921110609.obj",
           "subject_01/Video/PTZ-Outdoor/frame_0001.jpg", "subject_01/Video/Indoor-Cooperative/frame_0002.jpg")
    items = get_source("FLORENCE").find_scans(tmp_path)
    assert _names(items) == ["subject_01/110920150452", "subject_02/110921110609"]
    assert len(items[0].photos) == 2


def test_facewarehouse_lyhm_bp4d_d3dfacs_layouts(tmp_path):
    fw = tmp_path / "fw"
    t1 = "FaceWarehouse_Data_0/Tester_1"
    _touch(fw, f"{t1}/TrainingPose/pose_0.obj", f"{t1}/TrainingPose/pose_0.land", f"{t1}/TrainingPose/pose_1.obj",
           f"{t1}/TrainingPose/pose_3.png", f"{t1}/Blendshape/shape_0.obj",
           "FaceWarehouse_Data_0/Tester_2/TrainingPose/pose_0.obj")
    items = get_source("FACEWAREHOUSE").find_scans(fw)
    assert _names(items) == ["Tester_1/pose_0", "Tester_2/pose_0"]
    assert items[0].landmarks_path.name == "pose_0.land" and items[1].landmarks_path is None
    assert items[0].units is None and items[0].metres_per_unit is None

    ly = tmp_path / "ly"
    _touch(ly, "00001/scan/130925161618.obj", "00001/1C.png", "00001/2C.png", "00002/notes.txt")
    items = get_source("LYHM").find_scans(ly)
    assert _names(items) == ["00001/130925161618"] and len(items[0].photos) == 2

    bp = tmp_path / "bp"
    _touch(bp, "scans/F001.obj", "images/F001/0491.jpg")
    assert _names(get_source("BP4D").find_scans(bp)) == ["F001/F001"]
    d3 = tmp_path / "d3"
    _touch(d3, "scans/Adrian.obj", "images/Adrian/texture_2C_061.jpg")
    assert _names(get_source("D3DFACS").find_scans(d3)) == ["Adrian/Adrian"]


def test_missing_or_empty_release(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        get_source("LYHM").find_scans(tmp_path / "nope")
    with pytest.raises(InputError, match="scan/<capture>.obj") as ei:
        get_source("LYHM").find_scans(tmp_path)
    assert str(ei.value).startswith(str(tmp_path))


def test_lyhm_rotation_is_micas():
    """MICA turns LYHM scans by -45° about X, then -45° about Y: (0, 0, 1) mm -> (-1/2, √½, 1/2) mm."""
    item = get_source("LYHM").item("00001", "130925161618", Path("x.obj"))
    out = item.to_flame_frame(Mesh(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), np.zeros((0, 3))))
    s = np.sqrt(0.5)
    np.testing.assert_allclose(out.vertices, [[-0.0005, s * 1e-3, 0.0005], [s * 1e-3, 0.0, s * 1e-3]], atol=1e-15)
    assert out.meta["units"] == "m" and out.meta["units_read"] == "mm"


def test_mica_facts_match_micas_lists():
    """The ids embedded in the synthetic releases are MICA's (checked against its real image lists)."""
    for subset, facts in MICA_FACTS.items():
        listing = MICA_LISTS / f"{subset}.npy"
        if not listing.is_file():
            pytest.skip(f"{listing} not found")
        subjects = mica_subjects(listing)
        from onflame.dataset.image_paths import read_image_paths

        images = read_image_paths(listing)
        for actor, stem, photos in facts:
            assert subjects[actor] == stem
            assert images[actor][1] == f"{actor}/{stem}.npz"
            listed = {Path(p).name for p in images[actor][0]}
            assert set(photos) <= listed, (subset, actor)
