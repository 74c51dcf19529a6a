"""Face detection: layouts, the detector registry, insightface's errors, and MediaPipe on real photos."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGES
from PIL import Image

from onflame.detection import (
    IBUG68_MIRROR,
    MEDIAPIPE_TO_IBUG68,
    Detection,
    DetectorUnavailable,
    available_detectors,
    flame51_from_ibug68,
    get_detector,
    kps5_from_flame51,
    kps5_from_ibug68,
    mirror_ibug68,
    nearest_to_centre,
)
from onflame.training.align import apply_transform, arcface_template, similarity_transform

PHOTOS = sorted(p for p in IMAGES.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
ANNOTATED = sorted(IMAGES.glob("imgHQ*.jpeg"))


def test_layout_tables():
    assert MEDIAPIPE_TO_IBUG68.shape == (68,) and len(set(MEDIAPIPE_TO_IBUG68.tolist())) == 68
    assert MEDIAPIPE_TO_IBUG68.max() < 468  # the base mesh, present with or without the iris points
    assert sorted(IBUG68_MIRROR.tolist()) == list(range(68))
    assert np.array_equal(IBUG68_MIRROR[IBUG68_MIRROR], np.arange(68))  # an involution
    assert IBUG68_MIRROR[36] == 45 and IBUG68_MIRROR[48] == 54 and IBUG68_MIRROR[30] == 30 and IBUG68_MIRROR[8] == 8


def test_kps5_from_layouts():
    rng = np.random.default_rng(1)
    p68 = rng.uniform(0, 500, (68, 2))
    k = kps5_from_ibug68(p68)
    assert np.allclose(k[0], p68[36:42].mean(0)) and np.allclose(k[1], p68[42:48].mean(0))
    assert np.allclose(k[2], p68[30]) and np.allclose(k[3], p68[48]) and np.allclose(k[4], p68[54])
    assert np.allclose(kps5_from_flame51(flame51_from_ibug68(p68)), k)
    assert flame51_from_ibug68(p68).shape == (51, 2)


def test_mirror_twice_is_identity_and_swaps_eyes():
    p68 = np.random.default_rng(2).uniform(0, 300, (68, 2))
    assert np.allclose(mirror_ibug68(mirror_ibug68(p68, 300), 300), p68)
    m = mirror_ibug68(p68, 300)
    assert np.allclose(m[36], [300 - p68[45, 0], p68[45, 1]])


def test_nearest_to_centre_and_registry():
    def det(cx):
        return Detection(box=np.array([cx - 10, 40, cx + 10, 60.0]), score=0.9, kps5=np.zeros((5, 2)))

    faces = [det(20), det(95), det(180)]
    assert nearest_to_centre(faces, (100, 200, 3)).box[0] == 85
    assert nearest_to_centre([], (100, 200, 3)) is None
    assert {"auto", "mediapipe", "insightface"} <= set(available_detectors())
    with pytest.raises(DetectorUnavailable, match="unknown detector"):
        get_detector("no-such-detector")


def test_insightface_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("ONFLAME_INSIGHTFACE_MODELS", raising=False)
    with pytest.raises(DetectorUnavailable, match="model folder"):
        get_detector("insightface")
    with pytest.raises(DetectorUnavailable, match="not found"):
        get_detector("insightface", model_dir=tmp_path / "antelopev2")
    (tmp_path / "glintr100.onnx").write_bytes(b"")
    with pytest.raises(DetectorUnavailable, match="no face detection model.*glintr100.onnx"):
        get_detector("insightface", model_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- MediaPipe

@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("mediapipe", reason='MediaPipe not installed: pip install -e ".[detect]"')
    det = get_detector("mediapipe")
    yield det
    det.close()


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_face_in_every_real_photo(detector):
    assert len(PHOTOS) >= 8
    for path in PHOTOS:
        image = _rgb(path)
        faces = detector.detect(image)
        assert faces, path.name
        face = nearest_to_centre(faces, image.shape)
        assert 0.5 <= face.score <= 1.0
        assert face.kps5.shape == (5, 2) and face.landmarks.shape == (68, 2) and face.dense.shape == (478, 2)
        x0, y0, x1, y1 = face.box
        assert x0 < face.kps5[:, 0].mean() < x1 and y0 < face.kps5[:, 1].mean() < y1
        assert face.kps5[0, 0] < face.kps5[1, 0] and face.kps5[3, 0] < face.kps5[4, 0]  # image-left first


@pytest.mark.parametrize("path", ANNOTATED, ids=lambda p: p.stem)
def test_keypoints_match_annotations(detector, path):
    image = _rgb(path)
    face = nearest_to_centre(detector.detect(image), image.shape)
    reference = kps5_from_flame51(np.load(path.with_name(path.stem + "_lmks.npy")))
    errors = np.linalg.norm(face.kps5 - reference, axis=1)
    assert errors.max() < 12.0, errors
    # the 51 dense points too, looser: brows and lip contours follow different conventions
    dense_err = np.linalg.norm(face.landmarks51 - np.load(path.with_name(path.stem + "_lmks.npy")), axis=1)
    assert np.median(dense_err) < 12.0

    # aligned with the detected keypoints, the annotated eye centres land on ArcFace's 112 template
    # (the 5-point fit itself leaves ~2 px there: faces are not shaped like the template)
    m = similarity_transform(face.kps5, arcface_template(112))
    eyes = apply_transform(m, reference[:2])
    assert np.linalg.norm(eyes - arcface_template(112)[:2], axis=1).max() < 4.0


@pytest.mark.parametrize("path", ANNOTATED[:2], ids=lambda p: p.stem)
def test_eyes_on_template_in_the_written_crop(detector, path):
    from onflame.training.align import align_face

    image = _rgb(path)
    face = nearest_to_centre(detector.detect(image), image.shape)
    crop = align_face(image, face.kps5).crop224
    again = nearest_to_centre(detector.detect(crop), crop.shape)
    assert again is not None
    # found again in the 224 crop, the eyes sit on the template (in its 112 units)
    assert np.linalg.norm(again.kps5[:2] / 2 - arcface_template(112)[:2], axis=1).max() < 4.0


def test_mediapipes_native_logs_do_not_reach_the_terminal():
    """MediaPipe's C++ graph writes W0000 lines to the process's stderr from its own threads; a command's
    terminal shows none of them (run in a child process: its file descriptor 2 is what a terminal sees)."""
    import subprocess
    import sys

    pytest.importorskip("mediapipe", reason='the detect extra is not installed: pip install -e ".[detect]"')
    code = ("import numpy as np; from onflame.detection import get_detector; d = get_detector('mediapipe'); "
            "d.detect(np.full((256, 256, 3), 128, np.uint8)); import time; time.sleep(0.3); print('done')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "done"
    assert out.stderr.strip() == "", out.stderr
