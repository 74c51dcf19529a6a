"""``prepare``: photo selection rules, outputs, skip reasons, resuming; image-list diffs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGES, MICA_LISTS
from PIL import Image

from onflame.dataset import read_image_paths, write_image_paths
from onflame.errors import InputError
from onflame.flame import FlameParams
from onflame.training import PhotoRules, diff_image_paths, format_diff, prepare_subset, select_photos
from onflame.training.photos import output_names
from onflame.training.phototree import make_photo_tree
from onflame.training.prepare import LOW_SCORE, NO_FACE, UNREADABLE


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_select_photos_applies_rules(tmp_path):
    for session in ("Indoor-Cooperative", "PTZ-Outdoor", "PTZ-Indoor"):
        for i in range(6):
            _touch(tmp_path / "subject_01" / session / f"frame_{i:04d}.jpg")
    _touch(tmp_path / "subject_01" / "notes.txt")
    _touch(tmp_path / "subject_02" / "a" / "frame_0001.png")
    rules = PhotoRules(exclude=("PTZ-Outdoor",), extensions=(".jpg",))
    sel = select_photos(tmp_path, rules)
    assert list(sel) == ["subject_01"]  # subject_02 has only a .png
    assert len(sel["subject_01"]) == 12 and not any("PTZ-Outdoor" in str(p) for p in sel["subject_01"])

    sampled = select_photos(tmp_path, PhotoRules(exclude=("PTZ-Outdoor",), extensions=(".jpg",), sample_per_actor=5))
    assert len(sampled["subject_01"]) == 5 and set(sampled["subject_01"]) <= set(sel["subject_01"])
    again = select_photos(tmp_path, PhotoRules(exclude=("PTZ-Outdoor",), extensions=(".jpg",), sample_per_actor=5))
    assert again == sampled  # seeded: reproducible
    other = select_photos(tmp_path, PhotoRules(exclude=("PTZ-Outdoor",), extensions=(".jpg",), sample_per_actor=5,
                                               seed=7))
    assert len(other["subject_01"]) == 5

    with pytest.raises(InputError, match="photo folder not found"):
        select_photos(tmp_path / "missing", rules)


def test_select_photos_by_filename(tmp_path):
    for name in ("F1001_003.jpg", "f1001_004.jpg", "M1002_001.png", "readme.md"):
        _touch(tmp_path / "HQ" / name)
    sel = select_photos(tmp_path, PhotoRules(actor_from="filename"))
    assert {a: [p.name for p in ps] for a, ps in sel.items()} == {
        "F1001": ["F1001_003.jpg", "f1001_004.jpg"], "M1002": ["M1002_001.png"]}


def test_output_names_resolve_collisions(tmp_path):
    actor = tmp_path / "s1"
    photos = [actor / "a" / "frame_1.jpg", actor / "b" / "frame_1.jpg", actor / "c" / "x.jpg"]
    assert output_names("s1", photos, tmp_path / "s1", ".jpg") == ["s1/a_frame_1.jpg", "s1/b_frame_1.jpg", "s1/x.jpg"]


def _params(root: Path, subset: str, actor: str) -> None:
    FlameParams.zeros().save(root / subset / "FLAME_parameters" / actor / f"{actor}.npz")


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    pytest.importorskip("mediapipe", reason='MediaPipe not installed: pip install -e ".[detect]"')
    base = tmp_path_factory.mktemp("prep")
    photos = base / "photos"
    sources = sorted(IMAGES.glob("imgHQ*.jpeg")) + [IMAGES / "carell.jpg"]
    make_photo_tree(sources, photos, actors=2, per_actor=3, seed=3, max_side=640)
    (photos / "actor001" / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (320, 240), (120, 120, 120)).save(photos / "actor001" / "blank.jpg")
    make_photo_tree([IMAGES / "lawrence.jpg"], photos / "_noparams", actors=1, per_actor=1, max_side=640)
    (photos / "_noparams" / "actor000").rename(photos / "noparams")
    (photos / "_noparams").rmdir()
    return photos


def test_prepare_writes_mica_inputs_and_resumes(photo_tree, tmp_path):
    root = tmp_path / "root"
    for actor in ("actor000", "actor001"):
        _params(root, "SYN", actor)
    report = prepare_subset(root, "SYN", photo_tree, workers=1, progress=False)
    c = report.counts
    assert len(report.records) == 9
    assert (c["aligned"], c[UNREADABLE], c[NO_FACE], c[LOW_SCORE]) == (7, 1, 1, 0)
    assert report.actors_left_out == {"noparams": "no .npz under FLAME_parameters/noparams/"}
    assert not report.ok

    listing = read_image_paths(root / "image_paths" / "SYN.npy")
    assert sorted(listing) == ["actor000", "actor001"]
    assert listing["actor000"] == (["actor000/actor000_0000.jpg", "actor000/actor000_0001.jpg",
                                    "actor000/actor000_0002.jpg"], "actor000/actor000.npz")
    assert json.loads((root / "image_paths" / "SYN.json").read_text())["actor001"][1] == "actor001/actor001.npz"
    for images, _ in listing.values():
        for rel in images:
            crop = root / "SYN" / "arcface_input" / rel
            with Image.open(crop) as im:
                assert im.size == (224, 224) and im.mode == "RGB"
            blob = np.load(crop.with_suffix(".npy"))
            assert blob.shape == (3, 112, 112) and blob.dtype == np.float32
            assert -1.0 <= blob.min() and blob.max() <= 1.0
    manifest = json.loads((root / "SYN" / "prepare_manifest.json").read_text())
    reasons = {r["source"]: r["status"] for r in manifest["photos"]}
    assert reasons["actor001/broken.jpg"] == UNREADABLE and reasons["actor001/blank.jpg"] == NO_FACE
    table = report.format_table()
    assert "skipped: no face" in table
    assert re.search(r"K per actor \(min/max\) +3/3", table) and re.search(r"aligned +7", table)

    # a re-run redoes nothing; a higher minimum score skips (and removes) what is now below it
    again = prepare_subset(root, "SYN", photo_tree, workers=1, progress=False)
    assert again.processed == 0 and again.counts == c
    scores = [r.score for r in again.records if r.status == "aligned"]
    strict = prepare_subset(root, "SYN", photo_tree, min_score=max(scores) + 1e-3, progress=False)
    assert strict.processed == 0 and strict.counts[LOW_SCORE] == 7 and strict.image_list == {}
    assert not list((root / "SYN" / "arcface_input").rglob("*.npy"))
    # back to the subset's own minimum: those photos are aligned again
    relaxed = prepare_subset(root, "SYN", photo_tree, progress=False)
    assert relaxed.processed == 7 and relaxed.counts["aligned"] == 7


def test_prepare_with_two_workers_matches_one(photo_tree, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        _params(root, "SYN", "actor000")
    r1 = prepare_subset(one, "SYN", photo_tree, workers=1, progress=False)
    r2 = prepare_subset(two, "SYN", photo_tree, workers=2, progress=False)
    assert r1.image_list == r2.image_list and r1.counts == r2.counts
    crop = "actor000/actor000_0001.npy"
    assert np.array_equal(np.load(one / "SYN" / "arcface_input" / crop), np.load(two / "SYN" / "arcface_input" / crop))


def test_prepare_unknown_detector_touches_nothing(tmp_path):
    _touch(tmp_path / "photos" / "a" / "x.jpg")
    from onflame.detection import DetectorUnavailable

    with pytest.raises(DetectorUnavailable):
        prepare_subset(tmp_path / "root", "SYN", tmp_path / "photos", detector="nope", progress=False)
    assert not (tmp_path / "root").exists()


def test_diff_image_paths(tmp_path):
    a = {"x": (["x/1.jpg", "x/2.jpg"], "x/x.npz"), "y": (["y/1.jpg"], "y/y.npz"), "z": (["z/1.jpg"], "z/z.npz")}
    b = {"x": (["x/2.jpg", "x/3.jpg"], "x/x.npz"), "y": (["y/1.jpg"], "y/other.npz"), "w": (["w/1.jpg"], "w/w.npz")}
    d = diff_image_paths(a, b)
    assert d["same"] is False
    assert d["actors_only_in_a"] == ["z"] and d["actors_only_in_b"] == ["w"]
    assert d["photos_only_in_a"] == {"x": ["x/1.jpg"]} and d["photos_only_in_b"] == {"x": ["x/3.jpg"]}
    assert d["npz_differs"] == {"y": ["y/y.npz", "y/other.npz"]}
    assert d["counts"] == {"actors_a": 3, "actors_b": 3, "actors_common": 2, "photos_a": 4, "photos_b": 4,
                           "photos_common": 2}
    assert "actors only in A (1): z" in format_diff(d)
    assert diff_image_paths(a, dict(reversed(list(a.items()))))["same"] is True


def test_diff_real_mica_list_against_an_edited_copy(tmp_path):
    real = MICA_LISTS / "STIRLING.npy"
    listing = read_image_paths(real)
    edited = dict(listing)
    dropped = min(edited)
    del edited[dropped]
    actor = min(edited)
    images, npz = edited[actor]
    edited[actor] = (images[1:], npz)
    write_image_paths(tmp_path / "STIRLING.npy", edited)
    d = diff_image_paths(real, tmp_path / "STIRLING.npy")
    assert d["actors_only_in_a"] == [dropped] and d["actors_only_in_b"] == []
    assert d["photos_only_in_a"] == {actor: [images[0]]} and not d["photos_only_in_b"]
    assert diff_image_paths(real, real)["same"]
