"""MICA roots: folders and zips, safe extraction, validation, export and the CLI.

Every test builds a small MICA tree in tmp_path: parameter files written with FlameParams.save and
registrations that are FLAME(params) of the session's synthetic model, written with write_obj.
"""
from __future__ import annotations

import csv
import json
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from onflame.cli import main
from onflame.dataset import (
    export_params, extract_subset, open_root, validate_root, write_image_paths,
)
from onflame.errors import InputError, UsageError
from onflame.flame import FlameParams
from onflame.flame.layer import FLAME
from onflame.mesh import Mesh, write_obj

# subset -> actor -> capture names
TREE = {"BP4D": {"F001": ["F001", "F001_b"], "M002": ["M002"]}, "STIRLING": {"F1001": ["F1001_N"]}}


def _params(rng: np.random.Generator) -> FlameParams:
    pose = np.zeros(15)
    pose[:3] = rng.normal(scale=0.1, size=3)    # global
    pose[6:9] = rng.normal(scale=0.05, size=3)  # jaw
    return FlameParams.from_mica(rng.normal(scale=0.5, size=400), pose, rng.normal(scale=0.01, size=3))


@pytest.fixture(scope="module")
def layer(flame_model):
    return FLAME(flame_model, dtype=torch.float64)


def _vertices(layer, p: FlameParams) -> np.ndarray:
    with torch.no_grad():
        return layer(p).vertices[0].numpy()


@pytest.fixture(scope="module")
def tree(tmp_path_factory, layer, flame_model):
    """A clean MICA root; returns (root, {(subset, actor, name): (params, vertices)})."""
    root = tmp_path_factory.mktemp("mica")
    rng = np.random.default_rng(7)
    truth = {}
    for subset, actors in TREE.items():
        for actor, names in actors.items():
            for name in names:
                p = _params(rng)
                v = _vertices(layer, p)
                p.save(root / subset / "FLAME_parameters" / actor / f"{name}.npz")
                write_obj(root / subset / "registrations" / actor / f"{name}.obj", Mesh(v, flame_model.faces))
                truth[(subset, actor, name)] = (p, v)
    return root, truth


def _copy(tree, tmp_path) -> tuple[Path, dict]:
    root, truth = tree
    dst = tmp_path / "root"
    shutil.copytree(root, dst)
    return dst, truth


def _zip_subset(folder: Path, zip_path: Path, top: str | None) -> None:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder).as_posix()
            zf.write(f, f"{top}/{rel}" if top else rel)


def _keys(root) -> list[tuple[str, str, str]]:
    return [(s.subset, s.actor, s.name) for s in root.subjects()]


# --- layout -----------------------------------------------------------------------------------------------

def test_folder_root_iterates_every_subject_with_its_params_and_registration(tree):
    root_path, truth = tree
    with open_root(root_path) as root:
        assert list(root.subsets) == ["BP4D", "STIRLING"]
        assert root.subsets["BP4D"].actors() == ["F001", "M002"]
        assert _keys(root) == sorted(truth)
        for s in root.subjects():
            p, v = truth[(s.subset, s.actor, s.name)]
            np.testing.assert_array_equal(s.params.betas, p.betas)
            np.testing.assert_array_equal(s.params.pose, p.pose)
            np.testing.assert_array_equal(s.params.trans, p.trans)
            mesh = s.registration()
            assert mesh.n_vertices == 5023
            np.testing.assert_allclose(mesh.vertices, v, atol=1e-6)  # write_obj keeps micrometres
            assert s.registration_path.endswith(f"registrations/{s.actor}/{s.name}.obj")


def test_training_targets_are_micas_conversion(tree):
    root_path, truth = tree
    s = next(open_root(root_path).subjects())
    p, _ = truth[(s.subset, s.actor, s.name)]
    t = s.training_targets()
    betas, pose = p.betas, p.pose
    np.testing.assert_array_equal(t["shape_params"], betas[:300])
    np.testing.assert_array_equal(t["expression_params"], betas[300:])
    np.testing.assert_array_equal(t["pose_params"], np.r_[pose[0], pose[1], pose[2], pose[6], pose[7], pose[8]])


@pytest.mark.parametrize("top", [None, "SUBSET"])
def test_zip_root_iterates_the_same_subjects(tree, tmp_path, top):
    root_path, truth = tree
    zroot = tmp_path / "zips"
    zroot.mkdir()
    for subset in TREE:
        _zip_subset(root_path / subset, zroot / f"{subset}.zip", top and subset)
    (zroot / "unrelated.zip").write_bytes(b"not a zip: ignored, it is no subset")
    with open_root(zroot) as root, open_root(root_path) as folder_root:
        assert list(root.subsets) == ["BP4D", "STIRLING"] and not root.problems
        assert all(s.is_zip for s in root.subsets.values())
        assert _keys(root) == _keys(folder_root)
        for s in root.subjects():
            p, v = truth[(s.subset, s.actor, s.name)]
            np.testing.assert_array_equal(s.params.betas, p.betas)
            np.testing.assert_allclose(s.registration().vertices, v, atol=1e-6)
            assert ".zip/" in s.params_path
    assert not [p for p in zroot.rglob("*") if p.suffix in (".npz", ".obj")]  # nothing extracted


def test_single_subset_folder_and_single_zip_open(tree, tmp_path):
    root_path, truth = tree
    assert _keys(open_root(root_path / "STIRLING")) == [k for k in sorted(truth) if k[0] == "STIRLING"]
    _zip_subset(root_path / "BP4D", tmp_path / "bp4d.zip", "BP4D")
    with open_root(tmp_path / "bp4d.zip") as root:
        assert list(root.subsets) == ["BP4D"]
        assert _keys(root) == [k for k in sorted(truth) if k[0] == "BP4D"]


def test_open_root_without_subsets_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no MICA subsets"):
        open_root(tmp_path / "empty")
    with pytest.raises(InputError, match="no such"):
        open_root(tmp_path / "missing")


def test_unreadable_subset_zip_is_a_problem_not_a_crash(tree, tmp_path):
    root, _ = _copy(tree, tmp_path)
    (root / "FRGC.zip").write_bytes(b"PK\x03\x04 truncated")
    with open_root(root) as r:
        assert list(r.subsets) == ["BP4D", "STIRLING"]
        assert len(r.problems) == 1 and "FRGC.zip" in str(r.problems[0])


def _cannot_enter(monkeypatch, folder: Path) -> None:
    """Paths below ``folder`` raise EACCES on stat, as under a folder of mode 000 without root's override."""
    real = Path.is_dir

    def is_dir(self: Path) -> bool:
        if self.parent == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)


def test_a_subset_folder_that_cannot_be_entered_is_named_not_a_path_below_it(tree, tmp_path, monkeypatch, capsys):
    """A subset folder of mode 000: the root's problem names the folder (a stat of its FLAME_parameters raised
    'Permission denied' naming that), the other subsets are read, and report ends in exit 1 saying so."""
    root, _ = _copy(tree, tmp_path)
    _cannot_enter(monkeypatch, root / "BP4D")
    with open_root(root) as r:
        assert list(r.subsets) == ["STIRLING"]
        assert [str(p) for p in r.problems] == [f"{root / 'BP4D'}: cannot read this folder (Permission denied)"]
    assert main(["report", str(root), "--out", str(tmp_path / "site"), "-q"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"onflame: {root / 'BP4D'}: cannot read this folder (Permission denied)"]


# --- extraction -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("top", [None, "BP4D"])
def test_extract_subset_rebuilds_the_folder(tree, tmp_path, top):
    root_path, _ = tree
    _zip_subset(root_path / "BP4D", tmp_path / "BP4D.zip", top)
    out = extract_subset(tmp_path / "BP4D.zip", tmp_path / "dest")
    assert out == tmp_path / "dest" / "BP4D"
    src = sorted(p.relative_to(root_path / "BP4D") for p in (root_path / "BP4D").rglob("*") if p.is_file())
    got = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert got == src
    for rel in src:
        assert (out / rel).read_bytes() == (root_path / "BP4D" / rel).read_bytes()
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["BP4D"]  # no temporary folder left
    # a re-run finds the complete folder and keeps it
    assert extract_subset(tmp_path / "BP4D.zip", tmp_path / "dest") == out


def _evil_zip(path: Path, member: str, symlink: bool = False) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("BP4D/FLAME_parameters/F001/F001.npz", b"fine")
        info = zipfile.ZipInfo(member)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd" if symlink else b"payload")


@pytest.mark.parametrize("member, symlink, why", [
    ("BP4D/../../evil.txt", False, ".."),
    ("/tmp/evil.txt", False, "absolute"),
    ("C:/Windows/evil.txt", False, "drive"),
    ("BP4D\\..\\evil.txt", False, ".."),
    ("BP4D/FLAME_parameters/link", True, "symbolic link"),
])
def test_extract_refuses_unsafe_members(tmp_path, member, symlink, why):
    _evil_zip(tmp_path / "BP4D.zip", member, symlink)
    dest = tmp_path / "dest"
    with pytest.raises(InputError) as err:
        extract_subset(tmp_path / "BP4D.zip", dest)
    assert repr(member) in str(err.value) and why in str(err.value) and "BP4D.zip" in str(err.value)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or not list(dest.iterdir())


# --- validation -------------------------------------------------------------------------------------------

def test_clean_tree_validates_ok(tree):
    root_path, _ = tree
    report = validate_root(root_path)
    assert report.ok and not report.problems, report.format_table()
    bp4d = report.subsets["BP4D"]
    assert (bp4d.actors, bp4d.subjects, bp4d.registrations) == (2, 3, 3)
    assert report.subsets["STIRLING"].subjects == 1
    assert bp4d.mean_mm is None and bp4d.compared == 0  # no model: no distances


def test_validate_with_model_measures_registration_distance_in_mm(tree, tmp_path, flame_model):
    root, truth = _copy(tree, tmp_path)
    # displace every STIRLING registration by exactly 2 mm along x
    for (subset, actor, name), (_, v) in truth.items():
        if subset == "STIRLING":
            write_obj(root / subset / "registrations" / actor / f"{name}.obj",
                      Mesh(v + [0.002, 0.0, 0.0], flame_model.faces))
    report = validate_root(root, model=flame_model, batch_size=2)  # BP4D's 3 subjects take two batches
    assert report.ok, report.format_table()
    bp4d, stir = report.subsets["BP4D"], report.subsets["STIRLING"]
    assert bp4d.compared == 3 and stir.compared == 1
    assert bp4d.mean_mm < 1e-3 and bp4d.max_mm < 1e-3  # exact up to the OBJ's micrometre rounding
    assert stir.mean_mm == pytest.approx(2.0, abs=1e-3) and stir.max_mm == pytest.approx(2.0, abs=1e-3)
    assert stir.worst == "STIRLING/F1001/F1001_N"


def _find(report, file_part: str, words: str):
    hits = [p for p in report.problems if file_part in p.file and words in p.problem]
    assert hits, f"no problem with {file_part!r} / {words!r} in:\n{report.format_table()}"
    return hits[0]


def test_validate_reports_every_problem_with_its_file_and_goes_on(tree, tmp_path, flame_model):
    root, truth = _copy(tree, tmp_path)
    bp, st = root / "BP4D", root / "STIRLING"
    p = truth[("BP4D", "F001", "F001")][0]
    # parameter files: a missing key, a wrong shape, a NaN, truncated bytes
    np.savez(bp / "FLAME_parameters/F001/F001.npz", betas=p.betas, pose=p.pose)
    np.savez(bp / "FLAME_parameters/F001/F001_b.npz", betas=p.betas, pose=p.pose[:12], trans=p.trans)
    betas = p.betas.copy()
    betas[5] = np.nan
    np.savez(bp / "FLAME_parameters/M002/M002.npz", betas=betas, pose=p.pose, trans=p.trans)
    npz = st / "FLAME_parameters/F1001/F1001_N.npz"
    npz.write_bytes(npz.read_bytes()[:300])
    # registrations: garbage, truncated, wrong vertex count, one without parameters
    (bp / "registrations/F001/F001.obj").write_text("v 1 2 x\nf 1 2 3\n")
    obj = bp / "registrations/F001/F001_b.obj"
    obj.write_bytes(obj.read_bytes()[: len(obj.read_bytes()) // 3])
    v = truth[("BP4D", "M002", "M002")][1]
    write_obj(bp / "registrations/M002/M002.obj", Mesh(v[:5000], flame_model.faces[(flame_model.faces < 5000).all(1)]))
    shutil.copy(bp / "registrations/M002/M002.obj", bp / "registrations/M002/M002_extra.obj")
    # an actor with parameters but no registrations folder, and one the other way round
    p.save(bp / "FLAME_parameters/M003/M003.npz")
    write_obj(st / "registrations/F1002/F1002.obj", Mesh(v, flame_model.faces))

    report = validate_root(root, model=flame_model)
    assert not report.ok
    _find(report, "F001/F001.npz", "missing key 'trans'")
    _find(report, "F001/F001_b.npz", "pose has shape (12,)")
    _find(report, "M002/M002.npz", "betas has NaN")
    _find(report, "F1001/F1001_N.npz", "not a readable .npz")
    _find(report, "registrations/F001/F001.obj", "malformed OBJ")
    _find(report, "registrations/F001/F001_b.obj", "")
    _find(report, "registrations/M002/M002.obj", "5000 vertices, expected 5023")
    _find(report, "registrations/M002/M002_extra.obj", "no matching FLAME_parameters/M002/M002_extra.npz")
    _find(report, "FLAME_parameters/M003", "no registrations/M003/*.obj")
    _find(report, "registrations/F1002", "no FLAME_parameters/F1002/*.npz")
    assert all(p.severity == "error" for p in report.problems)
    assert report.subsets["BP4D"].errors == len([p for p in report.problems if p.subset == "BP4D"])
    # the truncated OBJ is one problem line, not one per symptom
    assert len([p for p in report.problems if p.file.endswith("F001_b.obj")]) == 1
    # the run went on: the healthy subject M003 (params without registration) was still read, and the
    # other subset was still checked
    assert report.subsets["BP4D"].subjects == 4 and report.subsets["STIRLING"].actors == 2
    d = report.to_dict()
    assert d["ok"] is False and d["errors"] == len(report.problems)
    json.dumps(d)


def test_validate_zip_root_names_the_zip_member(tree, tmp_path):
    root, _ = _copy(tree, tmp_path)
    npz = root / "STIRLING/FLAME_parameters/F1001/F1001_N.npz"
    npz.write_bytes(npz.read_bytes()[:300])
    zroot = tmp_path / "zips"
    zroot.mkdir()
    for subset in TREE:
        _zip_subset(root / subset, zroot / f"{subset}.zip", subset)
    report = validate_root(zroot)
    assert [p.file for p in report.errors] == [f"{zroot}/STIRLING.zip/STIRLING/FLAME_parameters/F1001/F1001_N.npz"]
    assert report.subsets["BP4D"].subjects == 3


def test_validate_image_lists_against_actors_and_files(tree, tmp_path):
    root, _ = _copy(tree, tmp_path)
    write_image_paths(root / "image_paths" / "BP4D.npy", {
        "F001": (["F001/0001.jpg", "F001/0002.jpg"], "F001/F001.npz"),
        "X999": (["X999/0001.jpg"], "X999/X999.npz"),          # not on disk
    })                                                           # M002 left out
    write_image_paths(root / "STIRLING" / "image_paths" / "STIRLING.npy",
                      {"F1001": (["F1001/a.jpg"], "F1001/missing.npz")})
    for rel in ("F001/0001.jpg", "F001/0001.npy"):
        (root / "BP4D/arcface_input" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "BP4D/arcface_input" / rel).write_bytes(b"x")
    report = validate_root(root)
    _find(report, "arcface_input/F001/0002.jpg", "missing")
    _find(report, "BP4D.npy", "actor 'X999' is listed")
    assert _find(report, "BP4D.npy", "actor 'M002'").severity == "warning"
    _find(report, "STIRLING.npy", "F1001/missing.npz is missing")
    assert report.subsets["BP4D"].images_listed == 3 and report.subsets["BP4D"].images_found == 1
    # STIRLING has no image folder: its images are not checked
    assert report.subsets["STIRLING"].images_found is None
    assert validate_root(root, check_images=False).subsets["BP4D"].images_found is None
    # a list without the arcface .npy beside an existing image is one warning
    (root / "BP4D/arcface_input/F001/0001.npy").unlink()
    assert _find(validate_root(root), "0001.npy", "1 of 1 listed images").severity == "warning"


def test_format_table_has_a_row_per_subset_and_the_problems(tree, tmp_path):
    root, _ = _copy(tree, tmp_path)
    (root / "BP4D/registrations/F001/F001_b.obj").unlink()
    table = validate_root(root).format_table()
    lines = table.splitlines()
    header = next(ln for ln in lines if ln.startswith("subset"))
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split() and ln.split()[0] in ("BP4D", "STIRLING", "total")}
    assert rows["BP4D"][1:4] == ["2", "3", "2"]  # actors, subjects, registrations
    assert len(rows["BP4D"][0]) <= len(header)
    assert any(ln.startswith("ERROR") and "F001/F001_b.npz" in ln and "no matching" in ln for ln in lines)
    assert lines[-1] == "1 errors, 0 warnings"


# --- export -----------------------------------------------------------------------------------------------

def test_export_npz_round_trip(tree, tmp_path):
    root, truth = _copy(tree, tmp_path)
    bad = root / "BP4D/FLAME_parameters/M002/M002.npz"
    bad.write_bytes(b"garbage")
    result = export_params(root, tmp_path / "out" / "params.npz")
    assert result["subjects"] == 3 and result["subsets"] == {"BP4D": 2, "STIRLING": 1}
    assert len(result["skipped"]) == 1 and str(bad) in result["skipped"][0]
    with np.load(tmp_path / "out" / "params.npz", allow_pickle=False) as z:
        assert z["subset"].dtype.kind == "U" and z["betas"].shape == (3, 400)
        keys = list(zip(z["subset"], z["actor"], z["name"]))
        assert keys == sorted(k for k in truth if k != ("BP4D", "M002", "M002"))
        for i, k in enumerate(keys):
            p = truth[k][0]
            np.testing.assert_array_equal(z["betas"][i], p.betas)
            np.testing.assert_array_equal(z["pose"][i], p.pose)
            np.testing.assert_array_equal(z["trans"][i], p.trans)


def test_export_csv_round_trip(tree, tmp_path):
    root_path, truth = tree
    out = tmp_path / "params.csv"
    assert export_params(root_path, out)["skipped"] == []
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    head = rows[0]
    assert head[:4] == ["subset", "actor", "name", "betas_0"] and head[-1] == "trans_2" and len(head) == 3 + 418
    assert len(rows) == 1 + len(truth)
    for row in rows[1:]:
        p = truth[tuple(row[:3])][0]
        vals = np.array(row[3:], dtype=np.float64)
        np.testing.assert_array_equal(vals, np.concatenate([p.betas, p.pose, p.trans]))


def test_export_refuses_unknown_format(tree, tmp_path):
    with pytest.raises(UsageError, match="unknown output format"):
        export_params(tree[0], tmp_path / "params.txt")
    assert not (tmp_path / "params.txt").exists()


# --- command line -----------------------------------------------------------------------------------------

def test_cli_validate_exit_codes_and_json(tree, tmp_path, capsys):
    root_path, _ = tree
    assert main(["validate", str(root_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] is True and set(d["subsets"]) == {"BP4D", "STIRLING"}
    root, _ = _copy(tree, tmp_path)
    (root / "BP4D/registrations/M002/M002.obj").write_text("nonsense")
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "BP4D" in out and "M002.obj" in out
    assert main(["validate", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_cli_export_json(tree, tmp_path, capsys):
    root_path, truth = tree
    out = tmp_path / "all.npz"
    assert main(["export", str(root_path), "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["subjects"] == len(truth) and d["out"] == str(out) and d["skipped"] == []
    with np.load(out) as z:
        assert len(z["name"]) == len(truth)


def test_reading_a_root_does_not_import_the_build_machinery():
    """``import onflame.dataset`` stays light (no torch, no registration); the build names load on use."""
    import subprocess
    import sys

    code = ("import sys, onflame.dataset as d; heavy = 'torch' in sys.modules or 'onflame.registration' in sys.modules; "
            "f = d.build_subset; print(heavy, f.__module__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "onflame.dataset.build"]
