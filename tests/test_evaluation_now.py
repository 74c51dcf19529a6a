"""``onflame evaluate now``: the NoW protocol on NoW-format trees written here by code.

Golden cases with answers known in closed form: a prediction that is the scan moved by a known
similarity scores 0; a sphere of radius r against a scan sphere of radius R scores |R − r| (within the
facets' sag, computed from the mesh); a sphere displaced along its normals by a known field scores that
field's statistics; the crop keeps exactly the points inside the stated ball. Then what silently breaks
NoW's own code: wrong landmark count or order, mirrored landmarks, NaN, vertex colours, quads and
degenerate triangles.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from onflame.cli import main
from onflame.evaluation import now_landmarks, scan_to_mesh
from onflame.evaluation.crop import crop_mesh, face_ball, inside_ball
from onflame.evaluation.now import NowSettings, evaluate_now
from onflame.mesh import Mesh, write_obj
from onflame.synthetic.head import make_head_model

#: Unit directions of the 7 landmarks on a sphere, in NoW's order, placed like a face looking along +z
#: (subject's right at −x): outer eye corners nearly opposite, so the crop ball holds the whole sphere.
SPHERE_LANDMARKS = np.array([[-0.98, 0.2, 0.0], [-0.3, 0.3, 0.9], [0.3, 0.3, 0.9], [0.98, 0.2, 0.0],
                             [0.0, -0.8, 0.6], [-0.5, -0.6, 0.62], [0.5, -0.6, 0.62]])
SPHERE_LANDMARKS /= np.linalg.norm(SPHERE_LANDMARKS, axis=1, keepdims=True)


# --- writing NoW trees ---------------------------------------------------------------------------------------

def write_pp(path: Path, points: np.ndarray) -> None:
    """A MeshLab picked-points file, as NoW ships its scan landmarks."""
    rows = "\n".join(f'  <point x="{float(p[0])!r}" y="{float(p[1])!r}" z="{float(p[2])!r}" active="1" name="{i + 1}"/>'
                     for i, p in enumerate(points))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<!DOCTYPE PickedPoints>\n<PickedPoints>\n <DocumentData>\n  <DataFileName name=\"scan.obj\"/>\n"
                    f" </DocumentData>\n{rows}\n</PickedPoints>\n")


def write_gt(gt: Path, subject: str, scan: Mesh, landmarks: np.ndarray) -> None:
    write_obj(gt / "scans" / subject / "natural_head_rotation.000001.obj", scan, precision=12)
    write_pp(gt / "scans_lmks_onlypp" / subject / "natural_head_rotation.000001_picked_points.pp", landmarks)


def write_pred(pred: Path, subject: str, challenge: str, image: str, mesh: Mesh, landmarks: np.ndarray,
               lmk_format: str = "npy") -> Path:
    stem = pred / subject / challenge / Path(image).stem
    write_obj(stem.with_suffix(".obj"), mesh, precision=12)
    if lmk_format == "npy":
        np.save(stem.with_suffix(".npy"), landmarks)
    else:
        np.savetxt(stem.with_suffix(".txt"), landmarks)
    return stem


def write_list(gt: Path, entries: list[str], split: str = "validation") -> None:
    (gt / f"imagepaths{split}.txt").write_text("".join(f"{e}\n" for e in entries))


def sphere(radius: float, subdivisions: int) -> Mesh:
    ico = trimesh.creation.icosphere(subdivisions)
    return Mesh(np.asarray(ico.vertices) * radius, np.asarray(ico.faces))


def sag(mesh: Mesh, radius: float) -> float:
    """How far inside the sphere ``radius`` the mesh's facets reach at most (closed form per triangle)."""
    v, f = mesh.vertices, mesh.faces
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    plane = np.abs((n * v[f[:, 0]]).sum(1)) / np.linalg.norm(n, axis=1)
    return float(radius - plane.min())


@pytest.fixture(scope="module")
def head():
    """The procedural head (metres) and its NoW landmarks."""
    model = make_head_model()
    v = model.v_template
    return Mesh(v, model.faces), now_landmarks.from_flame(v, model.faces, model.landmarks)


POSE = Rotation.from_rotvec([0.1, 0.35, -0.2]).as_matrix()


def head_scan(head, subject_dir: Path | None = None) -> tuple[Mesh, np.ndarray]:
    """The head as a NoW scan: millimetres, turned and moved."""
    mesh, lmk = head
    t = np.array([12.0, -30.0, 410.0])
    return Mesh(1000 * mesh.vertices @ POSE.T + t, mesh.faces), 1000 * lmk @ POSE.T + t


def moved(mesh: Mesh, lmk: np.ndarray, scale: float, seed: int) -> tuple[Mesh, np.ndarray]:
    R = Rotation.random(random_state=seed).as_matrix()
    t = np.random.default_rng(seed).normal(0, 0.5, 3)
    return mesh.with_vertices(scale * mesh.vertices @ R.T + t), scale * lmk @ R.T + t


@pytest.fixture(scope="module")
def head_tree(tmp_path_factory, head):
    """A NoW tree: one subject scanned, predictions = the head itself, moved by known similarities."""
    root = tmp_path_factory.mktemp("now")
    gt, pred = root / "gt", root / "pred"
    scan, scan_lmk = head_scan(head, gt)
    write_gt(gt, "FaMoS_1", scan, scan_lmk)
    entries = []
    for k, challenge in enumerate(("multiview_neutral", "multiview_expressions", "selfie")):
        mesh, lmk = moved(*head, scale=1.0 + 0.5 * k, seed=k)
        write_pred(pred, "FaMoS_1", challenge, f"IMG_{k}.jpg", mesh, lmk, "npy" if k else "txt")
        entries.append(f"FaMoS_1/{challenge}/IMG_{k}.jpg")
    write_list(gt, entries)
    return gt, pred, entries


# --- golden cases --------------------------------------------------------------------------------------------

def test_crop_keeps_exactly_the_points_inside_the_stated_ball():
    rng = np.random.default_rng(3)
    lmk = rng.normal(0, 30, (7, 3))
    points = rng.normal(0, 60, (20000, 3))
    # the formula, written out again here
    bottom, bridge = lmk[4], (lmk[1] + lmk[2]) / 2
    centre = bottom + 0.3 * (bridge - bottom)
    for factor in (1.4, 1.2):
        radius = factor * (np.linalg.norm(lmk[0] - lmk[3]) + np.linalg.norm(bridge - bottom)) / 2
        want = np.flatnonzero(((points - centre) ** 2).sum(1) < radius**2)
        c, r = face_ball(lmk, factor)
        assert np.allclose(c, centre) and r == pytest.approx(radius)
        got = np.flatnonzero(inside_ball(points, c, r))
        assert np.array_equal(got, want) and 0 < len(got) < len(points)
    # the cropped mesh keeps those vertices, in order, and only the triangles among them
    tri = trimesh.creation.icosphere(3)
    mesh = Mesh(np.asarray(tri.vertices) * 50, np.asarray(tri.faces))
    keep = mesh.vertices[:, 2] > 10
    cropped = crop_mesh(mesh, keep)
    assert np.array_equal(cropped.vertices, mesh.vertices[keep])
    assert len(cropped.faces) == int(keep[mesh.faces].all(1).sum())


def test_a_prediction_moved_by_a_known_similarity_scores_zero(head_tree, tmp_path):
    gt, pred, _ = head_tree
    report = evaluate_now([("same head", pred)], gt, tmp_path / "out")
    assert report.exit_code == 0 and not report.failures["same head"], report.failures
    assert report.stats["same head"]["all"]["images"] == 3
    assert report.stats["same head"]["all"]["max_mm"] < 1e-5
    for item in report.items["same head"]:
        assert item["landmark_rms"] < 1e-6
    # the outputs NoW users expect: a table, JSON, a cumulative curve per challenge (PNG + CSV)
    data = json.loads((tmp_path / "out" / "now_results.json").read_text())
    assert data["stats"]["same head"]["selfie"]["images"] == 1
    for ch in ("multiview_neutral", "multiview_expressions", "selfie", "all"):
        assert (tmp_path / "out" / f"cumulative_{ch}.png").read_bytes()[:4] == b"\x89PNG"
        rows = (tmp_path / "out" / f"cumulative_{ch}.csv").read_text().splitlines()
        assert rows[0] == "error_mm,same head" and len(rows) == 802  # 0 to 8 mm in 0.01 mm steps
        assert rows[2].startswith("0.0100,100.0")  # every point within 0.01 mm


def test_metrical_scores_the_scale(head, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    scan, scan_lmk = head_scan(head, gt)
    write_gt(gt, "S", scan, scan_lmk)
    write_pred(pred, "S", "selfie", "exact.jpg", *moved(*head, scale=1.0, seed=5))  # metres, rigidly moved
    write_pred(pred, "S", "selfie", "big.jpg", *moved(*head, scale=1.05, seed=6))   # 5 % too large
    write_list(gt, ["S/selfie/exact.jpg", "S/selfie/big.jpg"])
    metrical = evaluate_now([("m", pred)], gt, tmp_path / "metrical", NowSettings(metrical=True, pred_unit="m"))
    free = evaluate_now([("m", pred)], gt, tmp_path / "free", NowSettings())
    by_image = lambda rep: {it["image"].split("/")[-1]: it for it in rep.items["m"]}
    assert by_image(metrical)["exact"]["median_mm"] < 1e-5
    assert by_image(metrical)["big"]["median_mm"] > 0.5  # 5 % of a head is millimetres, spread by the fit
    assert by_image(free)["big"]["median_mm"] < 1e-5     # a similarity forgives it
    # the unit found from the eye corners (auto) is metres
    auto = evaluate_now([("m", pred)], gt, tmp_path / "auto", NowSettings(metrical=True))
    assert {it["pred_unit"] for it in auto.items["m"]} == {"m"}
    assert by_image(auto)["big"]["median_mm"] == pytest.approx(by_image(metrical)["big"]["median_mm"], abs=1e-9)


def test_sphere_of_radius_r_against_a_scan_sphere_of_radius_R_scores_the_difference(tmp_path):
    R, r = 50.0, 45.0
    scan, pred_mesh = sphere(R, 4), sphere(r, 5)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_gt(gt, "S", scan, R * SPHERE_LANDMARKS)
    centre, radius = face_ball(R * SPHERE_LANDMARKS)
    assert inside_ball(scan.vertices, centre, radius).all()  # the crop holds the whole sphere
    write_pred(pred, "S", "multiview_neutral", "a.jpg", pred_mesh, r * SPHERE_LANDMARKS)
    write_list(gt, ["S/multiview_neutral/a.jpg"])
    report = evaluate_now([("sphere", pred)], gt, tmp_path / "out", NowSettings(metrical=True, pred_unit="mm"))
    s = report.stats["sphere"]["all"]
    bound = sag(pred_mesh, r)  # the facets lie up to this much inside the radius-r sphere
    assert bound < 0.02 and s["n"] == scan.n_vertices
    # centred, every scan point would lie between R − r and R − r + sag from the faceted sphere; the
    # facets may pull the best placement off the centre by a fraction of the sag
    d = np.load(tmp_path / "out" / "items" / "sphere" / "S" / "multiview_neutral" / "a.npz")["distances"]
    assert d.min() > R - r - bound and d.max() < R - r + 2 * bound
    assert s["median_mm"] == pytest.approx(R - r, abs=bound)


def test_a_mesh_displaced_along_its_normals_gives_the_fields_statistics(tmp_path):
    R, a = 50.0, 1.0
    base = sphere(R, 4)
    d = base.vertices / R
    h = a * (3 * d[:, 2] ** 2 - 1) / 2  # a quadrupole: no translation, rotation or scale can absorb it
    scan = base.with_vertices((R + h)[:, None] * d)
    pred_mesh = sphere(R, 6)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_gt(gt, "S", scan, R * SPHERE_LANDMARKS)
    write_pred(pred, "S", "multiview_expressions", "a.jpg", pred_mesh, R * SPHERE_LANDMARKS)
    write_list(gt, ["S/multiview_expressions/a.jpg"])
    report = evaluate_now([("field", pred)], gt, tmp_path / "out", NowSettings(metrical=True, pred_unit="mm"))
    s = report.stats["field"]["all"]
    want = np.abs(h)
    tol = sag(pred_mesh, R) + 1e-3
    assert s["n"] == len(h)
    assert s["median_mm"] == pytest.approx(np.median(want), abs=tol)
    assert s["mean_mm"] == pytest.approx(want.mean(), abs=tol)
    assert s["std_mm"] == pytest.approx(want.std(), abs=tol)


def test_refining_on_a_sample_of_a_dense_scan_moves_the_result_by_micrometres(head):
    mesh, lmk = head
    dense = trimesh.remesh.subdivide_loop(mesh.vertices * 1000, mesh.faces, iterations=2)
    noisy = dense[0] + np.random.default_rng(1).normal(0, 0.2, dense[0].shape)
    target = scan_to_mesh.prepare_scan(Mesh(noisy, dense[1]), lmk * 1000)
    assert target.mesh.n_vertices > 1.5 * scan_to_mesh.REFINE_POINTS
    pv = mesh.vertices + 0.002 * np.sin(mesh.vertices * 40)  # a prediction a few mm off
    plm = now_landmarks.from_flame(pv, mesh.faces, make_head_model().landmarks)
    sampled = scan_to_mesh.score_prediction(target, mesh.with_vertices(pv), plm)
    target.sample = np.arange(target.mesh.n_vertices)
    full = scan_to_mesh.score_prediction(target, mesh.with_vertices(pv), plm)
    assert np.median(full.distances) > 0.2
    assert abs(np.median(sampled.distances) - np.median(full.distances)) < 0.005
    assert abs(sampled.distances.mean() - full.distances.mean()) < 0.005


# --- what breaks NoW's own evaluation --------------------------------------------------------------------------

def test_bad_landmarks_fail_their_image_alone_with_the_file_named(head, tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_gt(gt, "FaMoS_1", *head_scan(head, gt))
    mesh, lmk = moved(*head, scale=1.3, seed=9)
    cases = {
        "good": lmk,
        "swapped": lmk[list(now_landmarks.LEFT_RIGHT_SWAPPED)],
        "reordered": lmk[[0, 1, 2, 3, 5, 4, 6]],  # nose bottom and right mouth corner exchanged
        "six": lmk[:6],
        "sixtyeight": np.zeros((68, 3)),
        "nan": np.where(np.arange(21).reshape(7, 3) == 4, np.nan, lmk),
        "other_unit": lmk * 1000,  # landmarks in mm beside a mesh in metres
    }
    for name, points in cases.items():
        write_pred(pred, "FaMoS_1", "selfie", f"{name}.jpg", mesh, points)
    write_list(gt, [f"FaMoS_1/selfie/{name}.jpg" for name in cases] + ["FaMoS_1/selfie/missing.jpg"])
    code = main(["evaluate", "now", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    lines = {name: next((ln for ln in err if f"/{name}." in ln), "") for name in list(cases) + ["missing"]}
    assert lines["good"] == ""
    assert "left and right are swapped" in lines["swapped"] and "swapped.npy" in lines["swapped"]
    assert "order" in lines["reordered"]
    assert "6 landmarks, NoW needs 7" in lines["six"]
    assert "68" in lines["sixtyeight"] and "36, 39, 42, 45, 33, 48, 54" in lines["sixtyeight"]
    assert "NaN" in lines["nan"]
    assert "off the mesh" in lines["other_unit"]
    assert "no predicted mesh" in lines["missing"]
    assert all(ln.startswith("onflame: ") for ln in err if "images done" not in ln)
    data = json.loads((tmp_path / "out" / "now_results.json").read_text())
    label = "pred"
    assert data["stats"][label]["all"]["images"] == 1 and len(data["failures"][label]) == 7


def _quad_pairs(faces: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Greedy pairs of triangles sharing an edge, as quads whose fan split gives back the two triangles."""
    edge_owner: dict[tuple[int, int], int] = {}
    for i, (a, b, c) in enumerate(faces):
        for e in ((a, b), (b, c), (c, a)):
            edge_owner[e] = i
    used = np.zeros(len(faces), bool)
    quads = []
    for i, (a, b, c) in enumerate(faces):
        if used[i]:
            continue
        for x, y, z in ((a, b, c), (b, c, a), (c, a, b)):  # triangle (z, x, y) with edge x→y
            j = edge_owner.get((y, x))
            if j is not None and not used[j] and j != i:
                d = next(v for v in faces[j] if v not in (x, y))
                quads.append([x, d, y, z])  # fans to (x, d, y) and (x, y, z): both original triangles
                used[i] = used[j] = True
                break
    return quads, faces[~used]


def test_vertex_colours_quads_and_degenerate_triangles_are_read(head, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_gt(gt, "S", *head_scan(head, gt))
    mesh, lmk = moved(*head, scale=1.0, seed=2)
    mesh = mesh.with_vertices(mesh.vertices + 0.001 * np.sin(60 * mesh.vertices))  # not a perfect score
    folder = pred / "S" / "selfie"
    write_pred(pred, "S", "selfie", "plain.jpg", mesh, lmk)
    quads, rest = _quad_pairs(mesh.faces)
    assert len(quads) > 1000
    colours = np.random.default_rng(0).integers(0, 255, (mesh.n_vertices, 3))
    v_lines = "".join(f"v {float(x)!r} {float(y)!r} {float(z)!r} {r} {g} {b}\n" for (x, y, z), (r, g, b) in zip(mesh.vertices, colours))
    f_lines = "".join("f " + " ".join(str(i + 1) for i in q) + "\n" for q in quads + rest.tolist())
    (folder / "quads.obj").write_text(v_lines + f_lines)
    np.save(folder / "quads.npy", lmk)
    header = ("ply\nformat ascii 1.0\n"
              f"element vertex {mesh.n_vertices}\nproperty double x\nproperty double y\nproperty double z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(quads) + len(rest)}\nproperty list uchar int vertex_indices\nend_header\n")
    body = "".join(f"{float(x)!r} {float(y)!r} {float(z)!r} {r} {g} {b}\n" for (x, y, z), (r, g, b) in zip(mesh.vertices, colours))
    body += "".join(f"{len(q)} " + " ".join(map(str, q)) + "\n" for q in quads + rest.tolist())
    (folder / "ply_quads.ply").write_text(header + body)
    np.save(folder / "ply_quads.npy", lmk)
    extra = np.array([[0, 0, 1], [5, 5, 5], [0, 1, 1]])  # three zero-area triangles
    write_pred(pred, "S", "selfie", "degenerate.jpg", Mesh(mesh.vertices, np.vstack([mesh.faces, extra])), lmk)
    names = ("plain", "quads", "ply_quads", "degenerate")
    write_list(gt, [f"S/selfie/{n}.jpg" for n in names])
    report = evaluate_now([("m", pred)], gt, tmp_path / "out")
    assert report.exit_code == 0, report.failures
    items = {it["image"].split("/")[-1]: it for it in report.items["m"]}
    assert items["plain"]["median_mm"] > 0.05
    for n in names[1:]:
        assert items[n]["median_mm"] == pytest.approx(items["plain"]["median_mm"], abs=1e-7)
        assert items[n]["mean_mm"] == pytest.approx(items["plain"]["mean_mm"], abs=1e-7)
    assert items["degenerate"]["prediction_degenerate_triangles"] == 3
    assert items["plain"]["prediction_degenerate_triangles"] == 0


# --- several methods, parallel, resume ---------------------------------------------------------------------------

def test_two_methods_give_one_table_and_one_plot_in_parallel(head, head_tree, tmp_path, capsys):
    gt, pred, entries = head_tree
    other = tmp_path / "other"
    for k, entry in enumerate(entries):
        subject, challenge, image = entry.split("/")
        mesh, lmk = moved(*head, scale=2.0, seed=10 + k)
        mesh = mesh.with_vertices(mesh.vertices + 0.002 * np.cos(30 * mesh.vertices))
        write_pred(other, subject, challenge, image, mesh, lmk)
    out = tmp_path / "out"
    args = ["evaluate", "now", "--pred", str(pred), str(other), "--label", "exact", "bumpy", "--gt", str(gt),
            "--out", str(out), "--json"]
    assert main(args + ["--workers", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["labels"] == ["exact", "bumpy"]
    assert data["stats"]["exact"]["all"]["median_mm"] < 1e-5 < data["stats"]["bumpy"]["all"]["median_mm"]
    header = (out / "cumulative_all.csv").read_text().splitlines()[0]
    assert header == "error_mm,exact,bumpy"
    # one process gives the same numbers; a re-run reuses every image's result
    assert main(args + ["--out", str(tmp_path / "serial")]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert serial["stats"] == data["stats"]
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["stats"] == data["stats"]
    table = (out / "now_table.txt").read_text()
    assert "exact" in table and "bumpy" in table and "multiview_expressions" in table


def test_rerun_redoes_only_changed_images_and_check_alignment_writes_meshes(head, head_tree, tmp_path):
    gt, _, entries = head_tree
    pred = tmp_path / "pred"
    for k, entry in enumerate(entries):
        subject, challenge, image = entry.split("/")
        write_pred(pred, subject, challenge, image, *moved(*head, scale=1.0, seed=k))
    first = evaluate_now([("m", pred)], gt, tmp_path / "out")
    assert first.exit_code == 0
    subject, challenge, image = entries[1].split("/")
    mesh, lmk = moved(*head, scale=1.0, seed=1)
    write_pred(pred, subject, challenge, image, mesh.with_vertices(mesh.vertices * 1.02), lmk * 1.02)
    from onflame.evaluation import now

    seen = []
    real = now.score_prediction
    now.score_prediction = lambda *a, **k: (seen.append(1), real(*a, **k))[1]
    try:
        second = evaluate_now([("m", pred)], gt, tmp_path / "out", check_alignment=tmp_path / "check")
        assert len(seen) == 3  # check-alignment redoes every image (it needs the placed meshes)
        seen.clear()
        third = evaluate_now([("m", pred)], gt, tmp_path / "out")
        assert len(seen) == 0
    finally:
        now.score_prediction = real
    assert third.stats == second.stats
    placed = sorted((tmp_path / "check" / "m" / subject).rglob("*.ply"))
    assert len(placed) == 6  # per image: the cropped scan and the placed prediction
    from onflame.mesh import read_mesh

    crop = read_mesh(tmp_path / "check" / "m" / subject / challenge / f"{Path(image).stem}_scan.ply")
    assert 0 < crop.n_vertices < head[0].n_vertices


def test_cli_usage_and_missing_inputs(head, head_tree, tmp_path, capsys):
    gt, pred, _ = head_tree
    assert main(["evaluate", "now", "--pred", str(pred), "--label", "a", "b", "--gt", str(gt),
                 "--out", str(tmp_path / "o")]) == 2
    assert "one distinct --label per --pred" in capsys.readouterr().err
    assert main(["evaluate", "now", "--pred", str(pred), "--gt", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "no such folder" in err
    assert main(["evaluate", "now", "--pred", str(pred), "--gt", str(gt), "--split", "test",
                 "--out", str(tmp_path / "o")]) == 1
    assert "imagepathstest.txt" in capsys.readouterr().err
    assert main(["evaluate", "now", "--pred", str(pred), "--gt", str(gt), "--workers", "0"]) == 2
    bad_pp = tmp_path / "gt2"
    (bad_pp / "scans" / "S").mkdir(parents=True)
    (bad_pp / "scans" / "S" / "s.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (bad_pp / "scans_lmks_onlypp" / "S").mkdir(parents=True)
    (bad_pp / "scans_lmks_onlypp" / "S" / "s.pp").write_text("<PickedPoints><point x='1' y='2'/>")
    write_list(bad_pp, ["S/selfie/a.jpg"])
    write_pred(tmp_path / "p2", "S", "selfie", "a.jpg", *head)
    assert main(["evaluate", "now", "--pred", str(tmp_path / "p2"), "--gt", str(bad_pp), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "s.pp" in err and "Traceback" not in err
