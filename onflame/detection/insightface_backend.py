"""insightface detector (SCRFD / RetinaFace on onnxruntime), for parity with MICA's own preparation.

MICA aligned its training photos with insightface's ``antelopev2`` detector (``scrfd_10g_bnkps.onnx``) at a
224×224 detection size. Those weights are not redistributable inside a pip package, so this detector
needs the user's model folder (``antelopev2`` or ``buffalo_l``), given as ``model_dir`` or through the
``ONFLAME_INSIGHTFACE_MODELS`` environment variable.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Detection, DetectorUnavailable, check_image

INSTALL_HINT = 'pip install -e ".[insightface]"  (insightface and onnxruntime)'
_DETECTOR_PREFIXES = ("scrfd", "det_", "retinaface")


def find_detection_model(model_dir: str | os.PathLike) -> Path:
    """The detection ``.onnx`` inside an insightface model folder, or :class:`DetectorUnavailable`."""
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise DetectorUnavailable(
            f"{folder}: insightface model folder not found; download antelopev2 or buffalo_l yourself and pass "
            "its folder (--detector-models or ONFLAME_INSIGHTFACE_MODELS)")
    candidates = sorted(p for p in folder.glob("*.onnx") if p.name.lower().startswith(_DETECTOR_PREFIXES))
    if not candidates:
        found = ", ".join(sorted(p.name for p in folder.glob("*.onnx"))) or "no .onnx files"
        raise DetectorUnavailable(
            f"{folder}: no face detection model (scrfd_*.onnx, det_*.onnx or retinaface*.onnx) in it; found {found}")
    return candidates[0]


class InsightFaceDetector:
    """insightface's SCRFD/RetinaFace as a :class:`~onflame.detection.base.FaceDetector` (5 keypoints, no landmarks).

    Args:
        model_dir: the model folder; default ``$ONFLAME_INSIGHTFACE_MODELS``.
        det_size: detector input size; MICA used (224, 224).
        min_detection_score: the detector's own cut-off (insightface's default 0.5).
    """

    name = "insightface"

    def __init__(self, model_dir: str | os.PathLike | None = None, det_size: tuple[int, int] = (224, 224),
                 min_detection_score: float = 0.5):
        model_dir = model_dir or os.environ.get("ONFLAME_INSIGHTFACE_MODELS")
        if not model_dir:
            raise DetectorUnavailable(
                "the insightface detector needs a model folder (antelopev2 or buffalo_l): pass model_dir / "
                "--detector-models or set ONFLAME_INSIGHTFACE_MODELS")
        model_file = find_detection_model(model_dir)
        try:
            from insightface.model_zoo import get_model
        except ImportError as exc:
            raise DetectorUnavailable(
                f"the insightface detector needs insightface ({exc}); install: {INSTALL_HINT}") from None
        self.model_file = model_file
        self._model = get_model(str(model_file), providers=["CPUExecutionProvider"])
        if self._model is None:
            raise DetectorUnavailable(f"{model_file}: insightface could not load this model")
        self._model.prepare(ctx_id=-1, input_size=tuple(det_size), det_thresh=float(min_detection_score))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image`` (H, W, 3) uint8 RGB."""
        bgr = np.ascontiguousarray(check_image(image)[:, :, ::-1])  # insightface works on OpenCV's BGR
        boxes, kpss = self._model.detect(bgr, max_num=0, metric="default")
        out = []
        for i in range(0 if boxes is None else boxes.shape[0]):
            if kpss is None:
                continue  # no keypoints, nothing to align with
            out.append(Detection(box=np.asarray(boxes[i, :4], dtype=np.float64), score=float(boxes[i, 4]),
                                 kps5=np.asarray(kpss[i], dtype=np.float64)))
        return out
