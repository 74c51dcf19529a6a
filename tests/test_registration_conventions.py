"""Landmark conventions in registration: FLAME's and MICA's 51 points beside one model, clicks in either,
the right one chosen by fitting and said in the terminal, the report and the npz; a wrong one named."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from onflame.cli import main
from onflame.evaluation.metrics import per_vertex_error
from onflame.flame import load_model_with_assets
from onflame.mesh import write_ply
from onflame.registration import register
from onflame.registration.gauss_newton import FitState, make_layer, vertices
from onflame.synthetic.scans import simulate_scan

from conftest import FLAME_FIX


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, flame_pkl):
    """A model folder as FLAME's and MICA's releases leave it: both 51-point embeddings beside the model."""
    d = tmp_path_factory.mktemp("model_dir")
    (d / "generic_model.pkl").symlink_to(flame_pkl)
    for name in ("landmark_embedding.npy", "flame_static_embedding.pkl", "FLAME_masks.pkl"):
        shutil.copy(FLAME_FIX / name, d)
    return d


@pytest.fixture(scope="module")
def both(model_dir):
    return load_model_with_assets(model_dir / "generic_model.pkl")


@pytest.fixture(scope="module")
def head(both):
    rng = np.random.default_rng(11)
    st = FitState(rng.normal(0, 1, 300), rng.normal(0, 1, 100), np.zeros(15), np.zeros(3))
    st.pose[6] = 0.1
    return vertices(make_layer(both), st)


def _scan(both, head, family):
    eyes = np.concatenate([both.masks["left_eyeball"], both.masks["right_eyeball"]])
    clicks = both.landmarks.conventions[f"{family}51"].locate(head, both.faces)
    return simulate_scan(head, both.faces, clicks, eyes, seed=5)


def test_both_conventions_are_loaded_and_listed_by_info(model_dir, capsys):
    assert main(["info", str(model_dir / "generic_model.pkl"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["landmarks"]["conventions"]) == {"flame51", "mica51", "mica68"}
    (pair,) = summary["landmark_conventions_differ"]
    assert {pair["a"], pair["b"]} == {"mica", "flame"} and set(pair["differ"]) == {"brows", "nose"}


@pytest.mark.parametrize("family, other", [("flame", "mica"), ("mica", "flame")])
def test_clicks_in_either_convention_are_recognised(both, head, family, other):
    sim = _scan(both, head, family)
    reg = register(sim.scan, both, landmarks=sim.landmarks)
    info = reg.landmark_info
    assert info["convention"] == family and info["convention_chosen_by"] == "fit"
    res = info["convention_residuals_mm"]
    assert res[family] < 2.5 and res[other] > 2 * res[family]  # the other one's brows sit 5-13 mm off
    assert str(reg.params.extras["landmark_convention"]) == family and reg.verdict == "ok"
    err = per_vertex_error(sim.to_truth_frame(reg.mesh.vertices * sim.scale), head, both.masks["face"]) * 1000
    # measured 0.187 (flame) and 0.179 mm (mica); ±0.02 mm is what rounding-level changes move a head by
    assert np.median(err) < 0.21


def test_a_wrong_convention_forced_is_named_in_the_verdict(both, head):
    sim = _scan(both, head, "flame")
    reg = register(sim.scan, both, landmarks=sim.landmarks, landmark_convention="mica")
    assert reg.landmark_info["convention"] == "mica" and reg.landmark_info["convention_chosen_by"] == "user"
    assert reg.verdict == "suspect"
    text = " ".join(reg.quality.reasons)
    assert "fit the 'flame' convention better than 'mica'" in text
    names = [o["name"] for o in reg.landmark_info["outliers"]]
    assert names and all(n.startswith(("brows", "nose")) for n in names)  # only where the conventions differ


def test_cli_says_which_convention_it_chose(both, head, model_dir, tmp_path, capsys):
    sim = _scan(both, head, "flame")
    write_ply(tmp_path / "scan.ply", sim.scan)
    np.savetxt(tmp_path / "scan.txt", sim.landmarks)
    rc = main(["register", str(tmp_path / "scan.ply"), "--model", str(model_dir / "generic_model.pkl"),
               "--landmarks", str(tmp_path / "scan.txt"), "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "landmarks given (flame, chosen by fit: " in out
    assert not (tmp_path / "out" / "scan_report.png").exists()  # the picture only with --picture
    report = json.loads((tmp_path / "out" / "scan_report.json").read_text())
    assert report["landmarks"]["convention"] == "flame" and report["landmarks"]["file"].endswith("scan.txt")
    with np.load(tmp_path / "out" / "scan.npz") as z:
        assert str(z["landmark_convention"]) == "flame" and str(z["landmark_source"]) == "given"
    # a convention no FLAME file has: bad usage, one line, before any work
    rc = main(["register", str(tmp_path / "scan.ply"), "--model", str(model_dir / "generic_model.pkl"),
               "--landmarks", str(tmp_path / "scan.txt"), "--landmark-convention", "bfm", "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown landmark convention 'bfm'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o2").exists()
