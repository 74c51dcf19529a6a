"""Automatic 3D landmarks on scans (render, detect, lift) and their use in registration.

Ground truth: FLAME's own 51-landmark embedding located on the real FLAME mean head and on a real
registration (FLAME topology), independent of the detector. The detector sees shaded, skin-coloured
geometry only (no texture). Tests that need MediaPipe (the ``detect`` extra) skip, saying so, when it is
not installed.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import trimesh
from conftest import FLAME_FIX, IMAGES
from scipy.spatial.transform import Rotation

from onflame.detection import Detection, DetectorUnavailable, get_detector
from onflame.detection.correspondence import LandmarkTransfer, load_correspondence
from onflame.errors import InputError
from onflame.evaluation.metrics import per_vertex_error
from onflame.flame import LandmarkEmbedding, load_landmark_embedding
from onflame.mesh import Mesh, read_mesh
from onflame.registration import autolandmarks, landmark_detection, register
from onflame.registration.autolandmarks import choose_landmarks
from onflame.registration.landmark_correction import SWITCH
from onflame.registration.landmark_detection import DetectedLandmarks, detect_scan_landmarks
from onflame.registration.landmark_views import coarse_views
from onflame.registration.units import detect_units
from onflame.synthetic.scans import simulate_scan

#: Bounds on the median 3D landmark error (mm) against FLAME's own 51 points, each the value measured
#: here (in the comment) plus ~20% for MediaPipe's arithmetic on other CPUs (its kernels round
#: differently; a pixel in a 384 px view is ~0.5 mm on the face). Through the dense table (the path
#: registrations take): FLAME's mean head (measured 0.81 mm, the table's own training head family),
#: the real registration in a random rotation (2.27 mm) and a simulated scan of it (2.08 mm); without
#: a table the detector's own iBUG points on the mean head (2.92 mm: MediaPipe's brows and lip
#: contours follow its own convention).
MEAN_HEAD_MM = 1.0
REAL_ROTATED_MM = 2.7
REAL_SIMULATED_MM = 2.5
IBUG_MEAN_HEAD_MM = 3.5


@pytest.fixture(scope="module")
def detector():
    try:
        return get_detector("mediapipe")
    except DetectorUnavailable as exc:
        pytest.skip(f"the detect extra is not installed (pip install -e '.[detect]'): {exc}")


@pytest.fixture(scope="module")
def embedding():  # FLAME's own 51 points: the convention closest to the detector's iBUG points
    return load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl").static51


@pytest.fixture(scope="module")
def transfer(embedding):
    """The dense table's transfer onto FLAME's 51 points (FLAME's mean head as the template)."""
    head = read_mesh(FLAME_FIX / "head_template.obj")
    return LandmarkTransfer.build(load_correspondence("mediapipe", head.faces), head.vertices, head.faces, embedding)


def _errors_mm(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(found - truth, axis=1) * 1000


def test_mean_head_rendered_frontally(detector, embedding, transfer):
    head = read_mesh(FLAME_FIX / "head_template.obj")
    truth = embedding.locate(head.vertices, head.faces)
    res = detect_scan_landmarks(head.vertices, head.faces, facing_hint=np.array([0.0, 0.0, 1.0]), detector=detector,
                                transfer=transfer)
    found, info = res.landmarks, res.info
    assert found is not None, info
    err = _errors_mm(found, truth)
    assert np.median(err) < MEAN_HEAD_MM and err.max() < 3.0, err  # max measured 2.28 mm (a brow end)
    assert info["detector"] == "mediapipe" and info["score"] > 0.5 and info["look"] == "relief"
    # left/right kept: FLAME-51 point 19 is the outer corner of the subject's right eye (FLAME −x)
    assert found[19, 0] < found[28, 0]
    # the refined view looks at the face from the front and upright
    assert np.dot(info["facing"], [0, 0, 1]) > 0.9 and np.dot(info["up"], [0, 1, 0]) > 0.9
    # without a table: the detector's own iBUG points
    own = detect_scan_landmarks(head.vertices, head.faces, facing_hint=np.array([0.0, 0.0, 1.0]), detector=detector)
    assert np.median(_errors_mm(own.landmarks, truth)) < IBUG_MEAN_HEAD_MM


def test_real_registration_in_a_random_rotation(detector, embedding, transfer):
    mesh = read_mesh(FLAME_FIX / "registered_mesh.ply")
    truth = embedding.locate(mesh.vertices, mesh.faces)
    R = Rotation.random(random_state=7).as_matrix()
    t = np.array([0.3, -0.2, 1.1])
    res = detect_scan_landmarks(mesh.vertices @ R.T + t, mesh.faces, detector=detector, transfer=transfer)
    found, info = res.landmarks, res.info
    assert found is not None, info
    err = _errors_mm((found - t) @ R, truth)
    assert np.median(err) < REAL_ROTATED_MM, err


def test_simulated_scan_in_millimetres_and_posed(detector, embedding, transfer):
    """A realistic scan: resampled, noisy, holes, millimetres, a random pose; units found from size."""
    mesh = read_mesh(FLAME_FIX / "registered_mesh.ply")
    truth = embedding.locate(mesh.vertices, mesh.faces)
    sim = simulate_scan(mesh.vertices, mesh.faces, truth, np.zeros(0, np.int64), seed=3, units="mm")
    unit, k = detect_units(sim.scan.vertices)
    assert unit == "mm"
    res = detect_scan_landmarks(sim.scan.vertices * k, sim.scan.faces, detector=detector, transfer=transfer)
    found, info = res.landmarks, res.info
    assert found is not None, info
    err = _errors_mm(sim.to_truth_frame(found / k), truth)
    assert np.median(err) < REAL_SIMULATED_MM, err


def test_textured_scan_photo_on_a_plane(detector):
    """The texture path: a hand-annotated photo as the texture of a flat 'scan' at life size; its 51
    annotated points, carried onto the plane through the UV map, are the truth."""
    photo = IMAGES / "imgHQ00039.jpeg"
    annotated = np.load(IMAGES / "imgHQ00039_lmks.npy")  # (51, 2) pixels of the 1024² photo, FLAME-51 order
    uv_of = np.column_stack([annotated[:, 0] / 1024, 1 - annotated[:, 1] / 1024])  # v up (OBJ)
    eyes = np.linalg.norm(uv_of[19:25].mean(0) - uv_of[25:31].mean(0))
    side = 0.063 / eyes  # metres: eye centres 63 mm apart, as on an adult
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])
    vertices = np.column_stack([(uv - 0.5) * side, np.zeros(4)])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    truth = np.column_stack([(uv_of - 0.5) * side, np.zeros(51)])
    res = detect_scan_landmarks(vertices, faces, uv, faces, photo, detector=detector)
    found, info = res.landmarks, res.info
    assert found is not None, info
    assert np.allclose(found[:, 2], 0.0, atol=1e-9)  # on the surface
    err = _errors_mm(found, truth)
    # measured 2.0 mm (MediaPipe ~8 px off these annotations at ~250 px between the eyes); +20% as above
    assert np.median(err) < 2.4, err


def test_a_shape_without_a_face_gives_none_with_a_reason(detector):
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    res = detect_scan_landmarks(ball.vertices, ball.faces, detector=detector, size=192)
    found, info = res.landmarks, res.info
    assert found is None and "no face" in info["reason"] and info["views"] == 24  # 6 axes × 4 rolls


def test_coarse_views_cover_all_orientations_without_a_hint():
    sphere = trimesh.creation.icosphere(subdivisions=2)  # normals cancel: no facing direction
    views = coarse_views(sphere.vertices, sphere.faces)
    facings = np.array([f for f, _ in views])
    assert len(views) == 24
    for axis in np.vstack([np.eye(3), -np.eye(3)]):
        assert (facings @ axis > 0.99).sum() == 4  # each axis, four rolls
    for f, u in views:
        assert abs(f @ u) < 1e-9 and abs(np.linalg.norm(u) - 1) < 1e-9
    # a rotation hint puts its own up direction first
    hint = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    f0, u0 = coarse_views(sphere.vertices, sphere.faces, hint)[0]
    assert np.allclose(f0, hint[:, 2]) and np.allclose(u0, hint[:, 1])


@pytest.fixture
def stub_detection(monkeypatch):
    """Replace detection by a stub answering ``outcome[0]``; records its calls."""
    outcome = [DetectedLandmarks(None, info={"views": 24, "reason": "no face found in any view of the scan"})]
    calls = []

    def fake(*args, **kwargs):
        calls.append(kwargs.get("detector"))
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    monkeypatch.setattr(landmark_detection, "detect_scan_landmarks", fake)
    return outcome, calls


def test_landmark_policy(stub_detection, flame_model):
    outcome, calls = stub_detection
    scan = Mesh(*_quad())
    bare = replace(flame_model, landmarks=LandmarkEmbedding())
    lmk, info = choose_landmarks(scan, scan.vertices, "geometry", flame_model)
    assert lmk is None and info["source"] == "geometry" and not calls  # never tried
    lmk, info = choose_landmarks(scan, scan.vertices, "auto", flame_model)
    assert lmk is None and info["source"] == "geometry" and "no face" in info["reason"] and len(calls) == 1
    with pytest.raises(InputError, match="automatic landmarks failed"):
        choose_landmarks(scan, scan.vertices, "detect", flame_model)
    with pytest.raises(InputError, match="auto_landmarks"):
        choose_landmarks(scan, scan.vertices, "sometimes", flame_model)
    lmk, info = choose_landmarks(scan, scan.vertices, "auto", bare)
    assert lmk is None and "embedding" in info["reason"]
    with pytest.raises(InputError, match="embedding"):
        choose_landmarks(scan, scan.vertices, "detect", bare)
    spread = np.full(51, 0.001)
    spread[0] = np.nan  # seen by one view only
    outcome[0] = DetectedLandmarks(np.ones((51, 3)), spread, info={"score": 0.9}, from_table=True)
    lmk, info = choose_landmarks(scan, scan.vertices, "detect", flame_model, detector="insightface")
    assert info["source"] == "detected" and info["score"] == 0.9 and calls[-1] == "insightface"
    assert not info["correction"]["applied"]  # the stand-in detection has no dense points
    assert np.array_equal(lmk.targets, np.ones((51, 3))) and lmk.source == "detected"
    assert lmk.points.same_as(flame_model.landmarks.static51) and np.array_equal(lmk.ibug, np.arange(17, 68))
    # sigma: the floor and the spread added in quadrature; a landmark one view saw counts as 3 floors' spread
    floor = autolandmarks.DETECTED_SIGMA_FLOOR
    assert np.allclose(lmk.sigma[1:], np.hypot(floor, 0.001)) and np.isclose(lmk.sigma[0], floor * np.sqrt(10))
    # the detector's own points (no table for the topology) are trusted less
    outcome[0] = DetectedLandmarks(np.ones((51, 3)), spread, info={"score": 0.9}, from_table=False)
    lmk, _ = choose_landmarks(scan, scan.vertices, "detect", flame_model)
    assert np.allclose(lmk.sigma[1:], np.hypot(autolandmarks.UNMAPPED_SIGMA_FLOOR, 0.001))


def test_unavailable_detector_falls_back_only_in_auto_mode(stub_detection, flame_model):
    outcome, _ = stub_detection
    outcome[0] = DetectorUnavailable("not installed")
    scan = Mesh(*_quad())
    lmk, info = choose_landmarks(scan, scan.vertices, "auto", flame_model)
    assert lmk is None and info["source"] == "geometry" and "not installed" in info["reason"]
    with pytest.raises(DetectorUnavailable):
        choose_landmarks(scan, scan.vertices, "detect", flame_model)


def test_off_surface_detections_are_not_used():
    """A detector whose landmarks fall outside the rendered scan: no landmarks, not garbage."""
    class Outside:
        name = "outside"

        def detect(self, image):
            pts = np.tile([[2.0, 2.0]], (68, 1))  # the image corner: background
            return [Detection(np.array([0, 0, 5, 5.0]), 0.99, pts[:5], landmarks=pts)]

    v, f = _quad()
    res = detect_scan_landmarks(v, f, facing_hint=np.array([0, 0, 1.0]), detector=Outside(), size=128)
    found, info = res.landmarks, res.info
    assert found is None and info["views"] == 4


def test_a_dense_scan_is_drawn_as_a_clustered_copy():
    """Rasterising millions of triangles for every view cost 41 s on a 3.2M-vertex scan; the detector
    sees a copy clustered to 0.7 mm cells (a 512 px view of a head has ~0.5 mm pixels)."""
    from onflame.geometry import cluster_vertices

    n = 520  # a 0.1 m sheet at 0.19 mm spacing: 540k triangles
    x, y = np.meshgrid(np.linspace(-0.05, 0.05, n), np.linspace(-0.05, 0.05, n))
    v = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    assert len(f) > landmark_detection.RENDER_MAX_FACES
    cv, cf, cluster, kept = cluster_vertices(v, f, landmark_detection.RENDER_CELL_M)
    assert len(cf) < len(f) / 10
    assert np.abs(cv[cluster] - v).max() <= np.sqrt(3) * landmark_detection.RENDER_CELL_M  # nothing moves beyond its cell

    class NoFace:
        name = "counting"

        def detect(self, image):
            return []

    res = detect_scan_landmarks(v, f, facing_hint=np.array([0, 0, 1.0]), detector=NoFace(), size=128)
    found, info = res.landmarks, res.info
    assert found is None and info["rendered_faces"] < min(landmark_detection.RENDER_MAX_FACES, len(f) / 10)


def _quad():
    v = np.array([[-0.1, -0.1, 0], [0.1, -0.1, 0], [0.1, 0.1, 0], [-0.1, 0.1, 0.0]])
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_register_with_detected_landmarks(detector, flame_model, tmp_path, monkeypatch):
    """End to end: a simulated scan of a real registration, no clicks given; landmarks are detected, and
    the report and the npz say which views and how many points were used, each landmark's spread and
    which correction ran."""
    from onflame.registration import save_registration

    monkeypatch.delenv(SWITCH, raising=False)  # onflame's default: the learned correction is off

    mesh = read_mesh(FLAME_FIX / "registered_mesh.ply")
    truth_lmk = flame_model.landmarks.static51.locate(mesh.vertices, mesh.faces)  # the fit's convention
    eyes = np.concatenate([flame_model.masks["left_eyeball"], flame_model.masks["right_eyeball"]])
    sim = simulate_scan(mesh.vertices, mesh.faces, truth_lmk, eyes, seed=2)
    reg = register(sim.scan, flame_model, auto_landmarks="detect")
    report = reg.report()
    info = report["landmarks"]
    assert info["source"] == "detected" and info["detector"] == "mediapipe"
    assert info["views_used"][0] == "frontal" and len(info["views_used"]) >= 3 and info["points_used"] > 300
    assert len(info["spread_mm"]) == 51 and info["spread_median_mm"] < autolandmarks.SPREAD_LIMIT_MM
    err = per_vertex_error(sim.to_truth_frame(reg.mesh.vertices * sim.scale), mesh.vertices,
                           flame_model.masks["face"]) * 1000
    # measured 1.42 mm (clicked: 1.28; the model is a synthetic FLAME that cannot explain this face; a
    # geometry-only start of this seed lands ~13 mm off); +20% as above
    assert np.median(err) < 1.7
    # the detected landmarks, in the model's convention, against the truth's: measured 1.74 mm, +20%
    found = sim.to_truth_frame(np.asarray(reg.params.extras["landmarks_detected"]) * sim.scale)
    assert np.median(_errors_mm(found, truth_lmk)) < 2.1
    # which correction ran (none: it is off unless turned on) and why, in the report and the npz
    assert not info["correction"]["applied"] and "off" in info["correction"]["reason"]
    paths = save_registration(reg, tmp_path, "scan", picture=False)
    with np.load(paths["params"]) as z:
        assert list(z["landmark_views"]) == info["views_used"] and int(z["landmark_points_used"]) == info["points_used"]
        assert z["landmark_spread_mm"].shape == (51,) and z["landmarks_detected"].shape == (51, 3)
        assert str(z["landmark_source"]) == "detected"
        assert str(z["landmark_correction"]) == "" and np.isnan(z["landmark_expected_error_mm"]).all()
