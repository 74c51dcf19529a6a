"""The command line as a user meets it: info on every kind of file, and the demo end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FLAME_FIX, MICA_LISTS
from onflame.cli import main
from onflame.flame import FlameParams


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_info_on_a_chumpy_flame_pickle(capsys, flame_pkl):
    assert main(["info", str(flame_pkl), "--json"]) == 0
    s = _json(capsys)
    assert s["kind"] == "flame_model"
    assert (s["vertices"], s["faces"], s["shape_components"], s["expression_components"], s["joints"]) == (
        5023, 9976, 300, 100, 5)
    assert s["parents"] == [-1, 0, 1, 1, 1]


def test_info_on_mica_image_list(capsys):
    assert main(["info", str(MICA_LISTS / "LYHM.npy"), "--json"]) == 0
    s = _json(capsys)
    assert (s["kind"], s["actors"], s["images"]) == ("image_paths", 1211, 2422)


def test_info_on_embedding_masks_and_params(capsys, tmp_path):
    assert main(["info", str(FLAME_FIX / "landmark_embedding.npy"), "--json"]) == 0
    assert _json(capsys)["dynamic"] == [79, 17]
    assert main(["info", str(FLAME_FIX / "FLAME_masks.pkl"), "--json"]) == 0
    assert _json(capsys)["regions"]["face"] == 1787
    p = FlameParams.zeros()
    p.pose[6] = 0.25
    p.save(tmp_path / "x.npz")
    assert main(["info", str(tmp_path / "x.npz"), "--json"]) == 0
    assert _json(capsys)["pose"]["jaw"] == [0.25, 0.0, 0.0]


def test_info_names_the_file_on_bad_input(capsys, tmp_path):
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"\x80\x02}q\x00")  # truncated pickle
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"onflame: {bad}: not a readable pickle") and len(err.splitlines()) == 1


def test_demo_runs_end_to_end_and_validates(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["validate"]["ok"] and summary["validate"]["errors"] == 0
    assert summary["export"]["subjects"] == 24
    reg = summary["registration"]
    assert reg["units"] == "mm" and reg["verdict"] == "ok"
    assert reg["per_vertex_error_vs_truth"]["median_mm"] < 1.0
    scored = summary["evaluation"]  # the build's 24 registrations against the meshes their scans came from
    assert scored["registrations"] == 24 and not scored["failures"]
    assert scored["per_vertex_error_face"]["median_mm"] < 0.5
    assert (out / "evaluation" / "cumulative_face.png").read_bytes()[:4] == b"\x89PNG"
    batch = summary["training_inputs"].get("batch")
    if batch is not None:  # the detect extra is installed: photos were aligned and a batch loaded
        assert batch["image"][1:] == [4, 3, 224, 224] and batch["pose_params"][1:] == [4, 6]
    with np.load(out / "all_params.npz") as z:
        assert z["betas"].shape == (24, 400) and set(z["subset"]) >= {"BP4D", "STIRLING"}
    # the validate command agrees, without being told the model (the tree names its own)
    capsys.readouterr()
    assert main(["validate", str(out / "mica"), "--json"]) == 0
    assert _json(capsys)["ok"] is True
    assert (out / "report" / "index.html").is_file()
    # a second run keeps every file and still succeeds; its report draws no picture again
    assert main(["demo", "--out", str(out)]) == 0
    report = json.loads((out / "demo_summary.json").read_text())["report"]
    assert (report["drawn"], report["reused"]) == (0, 24)


def test_fit_mesh_on_the_real_registration(tmp_path, capsys, flame_pkl):
    from onflame.flame import save_model, load_model

    save_model(load_model(flame_pkl), tmp_path / "m.npz")
    assert main(["fit-mesh", str(FLAME_FIX / "registered_mesh.ply"), "--model", str(tmp_path / "m.npz"),
                 "--out", str(tmp_path), "--json"]) == 0
    res = _json(capsys)[0]
    # the synthetic test model cannot explain a real face exactly, but comes within millimetres
    assert res["median_mm"] < 2.0 and res["max_mm"] < 20.0


@pytest.mark.parametrize("argv", [["register"], ["fit-mesh"], ["validate"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("onflame: the following arguments are required") and len(err.splitlines()) == 1
