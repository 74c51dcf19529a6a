"""``onflame evaluate flame``: FLAME-topology predictions against a MICA root's registrations.

The reference build registers two small synthetic releases; their truth (the FLAME meshes and parameters
the raw scans were made from) is written beside them as a MICA root. Scored against it, the build's
registrations must give the registration benchmark's numbers (per-vertex error in the face after a rigid
fit), here recomputed independently with scipy's rotation fit.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from onflame.cli import main
from onflame.dataset.build import build
from onflame.evaluation.flame_scoring import FlameSettings, region_indices
from onflame.evaluation.flame_topology import evaluate_flame
from onflame.evaluation.metrics import per_vertex_error
from onflame.mesh import Mesh, read_mesh, write_obj, write_ply
from onflame.synthetic.head import make_head_model
from onflame.synthetic.raw_releases import write_raw_release, write_truth_root

SUBSETS = ("FRGC", "STIRLING")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """``(folder, model, releases)``: raw releases, their truth root and their build under one folder."""
    root = tmp_path_factory.mktemp("flame_eval")
    model = make_head_model()
    releases = [write_raw_release(name, root / "raw" / name, model, n_actors=2, seed=seed)
                for seed, name in enumerate(SUBSETS)]
    write_truth_root(releases, root / "truth")
    reports = build([(r.source, r.root) for r in releases], root / "mica", model, workers=2)
    assert all(r.exit_code == 0 for r in reports.values())
    return root, model, releases


def independent_face_error_mm(pred: np.ndarray, truth: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Rigid fit on the face with scipy's Kabsch (not onflame's), then per-vertex distances (mm)."""
    a, b = pred[face], truth[face]
    rot, _ = Rotation.align_vectors(b - b.mean(0), a - a.mean(0))
    aligned = rot.apply(pred - a.mean(0)) + b.mean(0)
    return np.linalg.norm(aligned - truth, axis=1) * 1000


def test_build_registrations_against_their_truths_give_the_benchmarks_numbers(tree, tmp_path, capsys):
    root, model, releases = tree
    out = tmp_path / "out"
    assert main(["evaluate", "flame", "--pred", str(root / "mica"), "--ref", str(root / "truth"),
                 "--label", "onflame build", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    face = model.masks["face"]
    regions = region_indices(model.masks)
    all_face = []
    for release in releases:
        for scan in release.scans:
            reg = read_mesh(root / "mica" / release.source / "registrations" / scan.actor / f"{scan.stem}.obj").vertices
            err = independent_face_error_mm(reg, scan.truth, face)
            got = data["subjects"]["onflame build"][f"{release.source}/{scan.actor}/{scan.stem}"]
            # the truth was written to 1 nm, the registration to 1 µm: they agree to well below a µm
            assert got["face"]["median_mm"] == pytest.approx(np.median(err[face]), abs=1e-5)
            assert got["face"]["mean_mm"] == pytest.approx(err[face].mean(), abs=1e-5)
            # ... which is what the registration benchmark computes
            bench = per_vertex_error(reg, scan.truth, face) * 1000
            assert got["face"]["median_mm"] == pytest.approx(np.median(bench), abs=1e-5)
            cheeks = np.setdiff1d(face, np.concatenate([model.masks[k] for k in ("nose", "eye_region", "lips", "forehead")]))
            assert got["regions"]["cheeks"]["median_mm"] == pytest.approx(np.median(err[cheeks]), abs=1e-5)
            assert got["regions"]["nose"]["median_mm"] == pytest.approx(np.median(err[model.masks["nose"]]), abs=1e-5)
            all_face.append(err[face])
    pooled = np.concatenate(all_face)
    assert data["groups"]["onflame build"]["all"]["face"]["median_mm"] == pytest.approx(np.median(pooled), abs=1e-5)
    assert data["groups"]["onflame build"]["all"]["items"] == 4
    assert sorted(data["groups"]["onflame build"]) == ["FRGC", "STIRLING", "all"]
    assert len(regions["cheeks"]) > 0 and data["missing"]["onflame build"] == []
    rows = (out / "cumulative_face.csv").read_text().splitlines()
    assert rows[0] == "error_mm,onflame build" and (out / "cumulative_face.png").stat().st_size > 1000
    pct_1mm = float(rows[101].split(",")[1])  # 1.00 mm
    assert pct_1mm == pytest.approx(100 * (pooled <= 1.0).mean(), abs=0.01)
    with np.load(out / "per_vertex_onflame_build.npz") as z:
        assert z["errors_mm"].shape == (4, model.n_vertices)


def test_parameter_files_similarity_and_several_methods(tree, tmp_path, capsys):
    root, _, releases = tree
    scaled = tmp_path / "scaled"
    R = Rotation.from_rotvec([0.1, -0.2, 0.05]).as_matrix()
    for release in releases:
        for scan in release.scans:
            write_ply(scaled / release.source / scan.actor / f"{scan.stem}.ply",
                      Mesh(1.1 * scan.truth @ R.T + [0.01, 0.0, -0.02], scan.faces))
    params = tmp_path / "params"  # MICA-style parameter files only: <SUBSET>/FLAME_parameters/<actor>/<name>.npz
    for release in releases:
        for scan in release.scans:
            scan.params.save(params / release.source / "FLAME_parameters" / scan.actor / f"{scan.stem}.npz")
    out = tmp_path / "out"
    args = ["evaluate", "flame", "--pred", str(params), str(scaled), "--label", "truth params", "scaled",
            "--ref", str(root / "truth"), "--model", str(root / "mica" / "model.npz"), "--out", str(out), "--json"]
    assert main(args) == 0
    rigid = json.loads(capsys.readouterr().out)
    assert rigid["groups"]["truth params"]["all"]["face"]["max_mm"] < 1e-3  # FLAME(params) is the truth
    assert rigid["groups"]["scaled"]["all"]["face"]["median_mm"] > 1.0    # 10 % too large, scored
    assert main(args + ["--align", "similarity"]) == 0
    similar = json.loads(capsys.readouterr().out)
    assert similar["groups"]["scaled"]["all"]["face"]["max_mm"] < 1e-4     # a similarity forgives scale
    assert (out / "cumulative_face.csv").read_text().splitlines()[0] == "error_mm,truth params,scaled"


def test_per_image_predictions_unmatched_and_wrong_files(tree, tmp_path, capsys):
    root, _, releases = tree
    pred = tmp_path / "pred"
    scan = releases[0].scans[0]
    for k in range(3):  # several predictions of one actor (one per photo), against its only capture
        write_obj(pred / "FRGC" / scan.actor / f"photo_{k}.obj", Mesh(scan.truth + 0.0001 * k, scan.faces))
    write_obj(pred / "FRGC" / "99999" / "x.obj", Mesh(scan.truth, scan.faces))     # no such actor
    write_obj(pred / "STIRLING" / releases[1].scans[0].actor / "y.obj", Mesh(scan.truth[:100], scan.faces[:10]))
    code = main(["evaluate", "flame", "--pred", str(pred), "--ref", str(root / "truth"), "--out", str(tmp_path / "o"),
                 "--model", str(root / "mica" / "model.npz"), "--json"])
    assert code == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    subj = data["subjects"]["pred"][f"FRGC/{scan.actor}/{scan.stem}"]
    assert subj["items"] == 3 and subj["face"]["max_mm"] < 2e-3  # a shift is no error (OBJ keeps 1 µm)
    err = captured.err.strip().splitlines()
    assert any("x.obj" in ln and "no reference subject for actor '99999'" in ln for ln in err)
    assert any("y.obj" in ln and "100 vertices" in ln for ln in err)
    assert data["missing"]["pred"] == sorted(f"{r.source}/{s.actor}/{s.stem}" for r in releases for s in r.scans[1:])


def test_scan_to_mesh_variant_with_the_raw_releases(tree, tmp_path):
    root, model, releases = tree
    scans = {r.source: r.root for r in releases}
    report = evaluate_flame([("truth", root / "truth"), ("build", root / "mica")], root / "truth", tmp_path / "out",
                            model=model, scans=scans, workers=1, settings=FlameSettings(pred_files="meshes"))
    assert report.exit_code == 0, report.failures
    stirling = report.rows["truth"]["STIRLING"]["scan"]
    assert stirling["items"] == 2 and stirling["median_mm"] < 0.01  # its scan is the truth's own front
    for label in ("truth", "build"):
        s = report.rows[label]["all"]["scan"]
        assert s["items"] == 4 and s["median_mm"] < 0.2
    assert (tmp_path / "out" / "cumulative_scan.png").is_file()
    assert "scan median" in report.format_table()


def test_bad_usage_and_missing_masks(tree, tmp_path, capsys):
    root, _, releases = tree
    base = ["evaluate", "flame", "--pred", str(root / "mica"), "--out", str(tmp_path / "o")]
    assert main(base + ["--ref", str(root / "truth"), "--scans", str(root / "raw" / "FRGC")]) == 2
    assert "--subset" in capsys.readouterr().err
    assert main(base + ["--ref", str(root / "truth"), "--subset", "BP4D"]) == 2  # bad usage, before any work
    assert "--subset BP4D: no such subset here" in capsys.readouterr().err and not (tmp_path / "o").exists()
    bare = tmp_path / "bare"  # a root without model.npz, predictions without one either
    for release in releases:
        for scan in release.scans:
            write_obj(bare / release.source / "registrations" / scan.actor / f"{scan.stem}.obj", Mesh(scan.truth, scan.faces))
            (bare / release.source / "FLAME_parameters" / scan.actor).mkdir(parents=True, exist_ok=True)
            scan.params.save(bare / release.source / "FLAME_parameters" / scan.actor / f"{scan.stem}.npz")
    assert main(["evaluate", "flame", "--pred", str(bare), "--ref", str(bare), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no region masks" in err
