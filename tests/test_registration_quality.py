"""What a registration reports about itself: the exact scan-to-registration distance over its stated
points, one flipped-triangle test, one rigid fit, and units mismatches blamed on the landmark file."""
from __future__ import annotations

import igl
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from onflame.errors import InputError
from onflame.geometry import face_normals, flipped_against, nearest_rotations, rigid_fit
from onflame.mesh import Mesh, read_mesh
from onflame.mesh.landmark_files import read_landmarks
from onflame.registration import register
from onflame.registration.correspond import ScanIndex
from onflame.registration.gauss_newton import FitState, make_layer, vertices
from onflame.registration.quality import COVERAGE_GAP, SCAN_SAMPLE, assess, face_coverage
from onflame.synthetic.scans import simulate_scan

from conftest import FLAME_FIX


@pytest.fixture(scope="module")
def head_scan(flame_model):
    """An in-model head (metres, FLAME frame) and its simulated scan (millimetres, posed)."""
    rng = np.random.default_rng(7)
    st = FitState(rng.normal(0, 1, 300), rng.normal(0, 1, 100), np.zeros(15), np.zeros(3))
    truth = vertices(make_layer(flame_model), st)
    eyes = np.concatenate([flame_model.masks["left_eyeball"], flame_model.masks["right_eyeball"]])
    sim = simulate_scan(truth, flame_model.faces, flame_model.landmarks.static51.locate(truth, flame_model.faces),
                        eyes, seed=21)
    return truth, sim


def test_scan_to_mesh_numbers_are_exact_distances_over_the_stated_points(flame_model, head_scan):
    """The verdict's median / p95 are libigl's exact point-to-triangle distances (computed here without
    onflame's code) from an even sample of the scan's vertices off its border whose closest point lies
    on a face triangle. The nearest-vertex point-to-plane approximation they replace read 0.18 mm on
    these scans where the exact median is 0.145 (the simulated 0.2 mm noise alone gives 0.135)."""
    truth, sim = head_scan
    scan = sim.to_truth_frame(sim.scan.vertices)  # the truth's frame, metres: the truth is a registration
    index = ScanIndex.build(scan, sim.scan.faces)
    q = assess(truth, truth, flame_model.faces, index, flame_model.masks["face"])

    off = np.flatnonzero(~index.border)
    pts = off[np.linspace(0, len(off) - 1, SCAN_SAMPLE).round().astype(int)] if len(off) > SCAN_SAMPLE else off
    sq, tri, _ = igl.point_mesh_squared_distance(scan[pts], truth, flame_model.faces.astype(np.int64))
    in_face = np.isin(flame_model.faces, flame_model.masks["face"]).all(1)[tri]
    d_mm = np.sqrt(sq[in_face]) * 1000
    assert q.numbers["face_scan_points"] == in_face.sum() > 3000
    assert q.numbers["scan_to_mesh_median_mm"] == pytest.approx(np.median(d_mm), rel=1e-9)
    assert q.numbers["scan_to_mesh_p95_mm"] == pytest.approx(np.percentile(d_mm, 95), rel=1e-9)
    # the truth is the surface the scan was sampled from: its distance is the scan's own 0.2 mm noise
    assert 0.11 < q.numbers["scan_to_mesh_median_mm"] < 0.16


def _exact_coverage(reg: np.ndarray, face_idx: np.ndarray, scan: np.ndarray, scan_faces: np.ndarray) -> float:
    """Share of ``reg[face_idx]`` within the gap of the scan's surface: libigl's exact point-to-triangle
    distance, without onflame's code."""
    sq, _, _ = igl.point_mesh_squared_distance(reg[face_idx], scan, scan_faces.astype(np.int64))
    return float((np.sqrt(sq) <= COVERAGE_GAP).mean())


def test_coverage_is_the_face_over_the_scan_surface_on_dense_and_coarse_scans(flame_model, head_scan):
    """Coverage (docs/registration.md) against the exact point-to-surface share (libigl): within 0.015 on
    the dense simulated scan, with and without a 15 mm hole (measured 0.001 and 0.007), and 0.05 on the
    real 3dMD capture at ~4 mm spacing (measured 0.006; a plain 2 mm radius around scan vertices read
    0.56 there against 0.95 and made the verdict suspect). A hole is not papered over; pinholes are not
    taken for missing face."""
    face = flame_model.masks["face"]
    truth, sim = head_scan
    scan = sim.to_truth_frame(sim.scan.vertices)
    index = ScanIndex.build(scan, sim.scan.faces)
    dense = face_coverage(truth, flame_model.faces, index, face)
    assert dense == pytest.approx(_exact_coverage(truth, face, scan, sim.scan.faces), abs=0.015)
    # a hole of 15 mm around the nose tip: those face vertices are no longer covered
    tip = truth[face][np.argmax(truth[face, 2])]
    keep = ~(np.linalg.norm(scan - tip, axis=1) < 0.015)[sim.scan.faces].any(1)
    holed = ScanIndex.build(scan, sim.scan.faces[keep])
    lost = face_coverage(truth, flame_model.faces, holed, face)
    assert lost == pytest.approx(_exact_coverage(truth, face, scan, sim.scan.faces[keep]), abs=0.015)
    in_hole = float((np.linalg.norm(truth[face] - tip, axis=1) < 0.015).mean())  # measured 0.05 of the face
    assert lost < dense - 0.8 * in_hole and in_hole > 0.03
    # a pinhole every fifty triangles (registration's matches skip their rims): the face is still covered
    pin = np.random.default_rng(0).random(len(sim.scan.faces)) > 0.02
    pinholed = face_coverage(truth, flame_model.faces, ScanIndex.build(scan, sim.scan.faces[pin]), face)
    assert pinholed == pytest.approx(dense, abs=0.01)

    james = FLAME_FIX.parent / "scans" / "3dmd_james"
    capture = read_mesh(james / "james.obj", check_texture=False)
    reg = register(capture, flame_model, landmarks=read_landmarks(james / "james.ljson"))
    points = capture.vertices * 0.001  # millimetres; the registration is in metres, the scan's frame
    index = ScanIndex.build(points, capture.faces)
    assert index.spacing > 0.003  # a coarse scan: the case the plain vertex radius got wrong
    coarse = reg.quality.numbers["coverage"]
    assert coarse == face_coverage(reg.mesh.vertices, flame_model.faces, index, face)
    assert coarse == pytest.approx(_exact_coverage(reg.mesh.vertices, face, points, capture.faces),
                                   abs=0.05)
    assert coarse > 0.85 and reg.verdict == "ok", reg.quality.reasons


def test_registration_reports_which_scan_points_its_distances_are_over(flame_model, head_scan):
    _, sim = head_scan
    reg = register(sim.scan, flame_model, landmarks=sim.landmarks)
    report = reg.report()
    assert "face region" in report["scan_to_mesh_points"] and str(SCAN_SAMPLE) in report["scan_to_mesh_points"]
    assert report["face_scan_points"] > 3000


def test_flipped_against_counts_triangles_turned_beyond_a_right_angle():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    turned = v.copy()
    turned[3] = [0.2, 0.2, 0.0]  # the second triangle folds over onto the first
    assert flipped_against(turned, f, v).tolist() == [False, True]
    on_edge = v.copy()
    on_edge[3] = [1, 1, 10.0]  # stands nearly on edge: not flipped, but within a 0.1 margin
    assert not flipped_against(on_edge, f, v).any()
    assert flipped_against(on_edge, f, reference_normals=face_normals(v, f), below=0.1).tolist() == [False, True]


def test_one_rigid_fit_for_batches_and_the_plane():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(4, 30, 3))
    R = Rotation.random(4, random_state=4).as_matrix()
    dst = 0.5 * np.einsum("bij,bnj->bni", R, src) + rng.normal(size=(4, 1, 3))
    R2, t2, s2 = rigid_fit(src, dst, scale=True)
    assert np.abs(R2 - R).max() < 1e-10 and np.allclose(s2, 0.5)
    a = 0.8
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    flat = rng.normal(size=(6, 2))
    R3, t3, s3 = rigid_fit(flat, 2 * flat @ turn.T + [1.0, -2.0], scale=True)
    assert np.abs(R3 - turn).max() < 1e-12 and t3 == pytest.approx([1.0, -2.0]) and s3 == pytest.approx(2.0)


def test_nearest_rotations_agree_with_the_svd_and_never_reflect():
    rng = np.random.default_rng(5)
    cov = rng.normal(size=(500, 3, 3))
    cov[:10] = Rotation.random(10, random_state=6).as_matrix() + 1e-3 * rng.normal(size=(10, 3, 3))
    cov[10] = np.diag([1.0, 1.0, 0.0])  # singular
    R, trace = nearest_rotations(cov)
    U, sv, Vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(U @ Vt))
    U[:, :, 2] *= sign[:, None]
    sv[:, 2] *= sign
    assert np.abs(R - U @ Vt).max() < 1e-9 and np.abs(trace - sv.sum(1)).max() < 1e-9
    assert np.allclose(np.linalg.det(R), 1.0)


@pytest.mark.parametrize("scan_unit, landmark_unit", [("mm", "m"), ("m", "mm")])
def test_landmarks_in_another_unit_than_the_scan_are_blamed_on_their_file(tmp_path, flame_model, head_scan,
                                                                          scan_unit, landmark_unit):
    """A scan in mm with landmarks in metres used to fail as 'vertex … lies 161 m from the centre …
    corrupt coordinates', the reverse as 'RMS radius 0.11 mm … not a head': both blamed the scan."""
    _, sim = head_scan  # millimetres
    per_unit = {"mm": 1.0, "m": 0.001}
    scan = Mesh(sim.scan.vertices * per_unit[scan_unit], sim.scan.faces, source=str(tmp_path / "scan.ply"))
    lmk_file = tmp_path / "clicks.npy"
    np.save(lmk_file, sim.landmarks * per_unit[landmark_unit])
    with pytest.raises(InputError) as err:
        register(scan, flame_model, landmarks=lmk_file)
    line = str(err.value)
    assert line.startswith(f"{lmk_file}: landmarks in {landmark_unit} ") and f"scan {scan.source} in {scan_unit}" in line
    assert "\n" not in line


def test_landmarks_in_another_unit_than_the_scan_s_given_one(tmp_path, flame_model, head_scan):
    _, sim = head_scan
    lmk_file = tmp_path / "clicks.npy"
    np.save(lmk_file, sim.landmarks / 1000)  # metres, while the scan is said to be in mm
    with pytest.raises(InputError, match=r"landmarks in m .*in mm \(as given\)") as err:
        register(Mesh(sim.scan.vertices, sim.scan.faces, source="scan.ply"), flame_model, landmarks=lmk_file, units="mm")
    assert str(err.value).startswith(str(lmk_file))
