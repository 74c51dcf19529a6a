"""The learned landmark correction: the shipped file, its geometry, its limits and its use in a registration.

The correction is a linear map from detected dense points to FLAME vertices (``tools/build_landmark_correction.py``
rebuilds it). Checked here without the detector: it is for FLAME's topology and covers both 51-point
conventions; it moves with the face (a similarity of the detected points moves its answer the same way);
a face far from anything it saw is said to be so; and the registration's policy (when it runs, what the
report and the npz say) with stand-in detections.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import FLAME_FIX
from scipy.spatial.transform import Rotation

from onflame.detection.correction import SHIPPED_CORRECTIONS, load_correction, read_correction
from onflame.detection.correspondence import load_correspondence
from onflame.errors import InputError
from onflame.flame import load_landmark_embedding
from onflame.mesh import read_mesh
from onflame.registration.autolandmarks import detection_doubt, detection_record
from onflame.registration.landmark_correction import SWITCH, correct_detection, correction_enabled
from onflame.registration.landmark_detection import DetectedLandmarks


@pytest.fixture(scope="module")
def head():
    return read_mesh(FLAME_FIX / "head_template.obj")


@pytest.fixture(scope="module")
def correction(head):
    c = load_correction("mediapipe", head.faces)
    assert c is not None, f"no shipped correction ({SHIPPED_CORRECTIONS}) for FLAME's topology"
    return c


@pytest.fixture(scope="module")
def conventions():
    out = dict(load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy").conventions)
    out.update(load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl").conventions)
    return out


def _mean_face(correction, head) -> np.ndarray:
    """(N, 3) dense points of an average face on FLAME's mean head: the correction's mean configuration
    placed by a similarity onto where the dense table puts the points on the head."""
    from onflame.geometry import rigid_fit

    on_head = load_correspondence("mediapipe", head.faces).points.locate(head.vertices, head.faces)
    use = correction.align
    R, t, s = rigid_fit(correction.template[use], on_head[use], scale=True)
    return s * correction.template @ R.T + t


def test_shipped_correction_is_for_flame_and_both_conventions(correction, head, conventions):
    assert correction.fits(head.faces) and not correction.fits(head.faces[:, ::-1])
    for name in ("mica51", "flame51"):
        assert correction.covers(conventions[name], head.faces), name
    # the jaw contour of the 68-point layouts lies outside the predicted vertices
    assert not correction.covers(conventions["mica68"], head.faces)
    assert correction.info["notice"].startswith("derived from FLAME 2023 Open")
    # each landmark's expected error is a few millimetres at most, never zero (measured on faces it had not seen)
    expected = np.median(correction.vertex_error_m)
    assert 0.0005 < expected < 0.004, expected


def test_correction_moves_with_the_face(correction, head, conventions):
    """A similarity of the detected points (any pose, scale, position) moves the landmarks the same way."""
    dense = _mean_face(correction, head)
    rng = np.random.default_rng(3)
    dense = dense + rng.normal(0, 0.0005, dense.shape)  # a face a little off the mean one
    got = correction.landmarks(dense, None, conventions["mica51"], head.faces)
    R = Rotation.from_euler("xyz", [30, -50, 100], degrees=True).as_matrix()
    t, s = np.array([0.3, -1.0, 2.0]), 1000.0  # millimetres
    moved = correction.landmarks(s * dense @ R.T + t, None, conventions["mica51"], head.faces)
    assert np.allclose(moved.points, s * got.points @ R.T + t, atol=1e-6 * s)
    assert np.isclose(moved.distance, got.distance) and np.allclose(moved.expected_error_m, got.expected_error_m)
    # an average face is near the training faces' middle, and its landmarks near FLAME's mean head's
    assert got.distance < 0.5
    truth = conventions["mica51"].locate(head.vertices, head.faces)
    assert np.median(np.linalg.norm(got.points - truth, axis=1)) < 0.004


def test_a_face_unlike_the_training_faces_is_outside(correction, head, conventions):
    dense = _mean_face(correction, head)
    rng = np.random.default_rng(0)
    warped = dense + rng.normal(0, 0.006, dense.shape)  # 6 mm of noise on every point: no face
    assert correction.landmarks(warped, None, conventions["mica51"], head.faces).distance > 1.0
    # too few points to place the face: no answer rather than a guess
    few = np.full_like(dense, np.nan)
    few[:20] = dense[:20]
    assert correction.landmarks(few, None, conventions["mica51"], head.faces) is None


def test_reading_a_wrong_file_names_it(tmp_path):
    path = tmp_path / "table.npz"
    np.savez(path, format=np.array("onflame-dense-correspondence-1"))
    with pytest.raises(InputError, match="table.npz.*not a landmark correction"):
        read_correction(path)


def _detection(dense: np.ndarray, look: str = "relief") -> DetectedLandmarks:
    views = np.stack([dense, dense, dense])
    info = {"detector": "mediapipe", "look": look, "views_used": ["frontal", "yaw-25", "yaw+25"],
            "spread_mm": [1.0] * 51, "spread_median_mm": 1.0, "points_used": 400}
    return DetectedLandmarks(np.zeros((51, 3)), np.full(51, 0.001), dense, info, True, views)


def test_the_correction_is_off_unless_turned_on(correction, head, flame_model, monkeypatch):
    dense = _mean_face(correction, head)
    monkeypatch.delenv(SWITCH, raising=False)
    assert not correction_enabled()  # off by default: on the benchmark's real head it measured worse
    found = correct_detection(_detection(dense), flame_model, head.vertices, head.faces)
    assert not found.info["correction"]["applied"] and SWITCH in found.info["correction"]["reason"]
    assert found.expected_error_m is None
    monkeypatch.setenv(SWITCH, "on")
    assert correction_enabled()
    monkeypatch.setenv(SWITCH, "sometimes")
    with pytest.raises(InputError, match=f"{SWITCH}='sometimes': use on or off"):
        correction_enabled()


def test_policy_applies_the_correction_only_where_it_was_trained(correction, head, flame_model, monkeypatch):
    monkeypatch.setenv(SWITCH, "on")
    dense = _mean_face(correction, head)
    model = replace(flame_model, v_template=head.vertices)
    found = correct_detection(_detection(dense), model, head.vertices, head.faces)
    note = found.info["correction"]
    assert note["applied"] and note["name"] == correction.name and len(note["expected_error_mm"]) == 51
    assert found.expected_error_m.shape == (51,) and np.all(found.expected_error_m > 0)
    rec = detection_record(found.info, found.landmarks)
    assert str(rec["landmark_correction"]) == correction.name and np.isfinite(rec["landmark_expected_error_mm"]).all()
    assert detection_doubt(found.info) is None
    # a textured scan: the detector saw another kind of picture than the correction learned from
    textured = correct_detection(_detection(dense, look="texture"), model, head.vertices, head.faces)
    assert not textured.info["correction"]["applied"] and "texture" in textured.info["correction"]["reason"]
    assert textured.expected_error_m is None and np.array_equal(textured.landmarks, np.zeros((51, 3)))
    rec = detection_record(textured.info, textured.landmarks)
    assert str(rec["landmark_correction"]) == "" and np.isnan(rec["landmark_expected_error_mm"]).all()
    # a face far from the training faces keeps its landmarks, and the verdict says why
    warped = dense + np.random.default_rng(0).normal(0, 0.006, dense.shape)
    far = correct_detection(_detection(warped), model, head.vertices, head.faces)
    assert not far.info["correction"]["applied"] and far.info["correction"]["outside"]
    assert "outside the faces the landmark correction was trained on" in detection_doubt(far.info)
    # another topology: no correction, and that is said too
    other = replace(model, faces=model.faces[:, ::-1])
    assert "no landmark correction" in correct_detection(_detection(dense), other, head.vertices,
                                                         head.faces).info["correction"]["reason"]
