"""Smooth region functions of position on the procedural head (values in [0, 1]).

Masks, skinning weights and the shape / expression / pose-corrective bases are all built from these, so
they agree on where the lips, the jaw or the neck are. Each takes points ``p`` (N, 3) in metres in the
mean head's frame and returns (N,) weights; paired regions cover both sides.
"""
from __future__ import annotations

import numpy as np

from . import anatomy as A
from .head_solid import _EAR_ROT, ellipsoid


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, 0 -> 0.5 (written with tanh so large inputs do not overflow)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x)))


def gaussian(p: np.ndarray, centre: np.ndarray, sigma: float | np.ndarray, paired: bool = False) -> np.ndarray:
    """exp(-|p - centre|^2 / 2 sigma^2); with ``paired`` also around the mirrored centre (x -> -x)."""
    q = np.array(p, dtype=np.float64, copy=True)
    if paired:
        q[:, 0] = np.abs(q[:, 0])
    return np.exp(-0.5 * np.sum(((q - centre) / sigma) ** 2, axis=-1))


def _side_line(p: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Signed distance (m) of each point from the line a -> b in the side view (z, y); > 0 below/left."""
    az, ay = a
    bz, by = b
    dz, dy = bz - az, by - ay
    n = np.hypot(dz, dy)
    return ((p[:, 2] - az) * dy - (p[:, 1] - ay) * dz) / n


def socket_weight(p: np.ndarray) -> np.ndarray:
    """The eyelids and socket skin around each eyeball: 1 within 15 mm of an eye's centre, 0 beyond 24 mm."""
    return sigmoid((0.0195 - np.linalg.norm(_left(p) - A.EYE_CENTRE, axis=1)) / 0.0015)


def _left(p: np.ndarray) -> np.ndarray:
    q = np.array(p, dtype=np.float64, copy=True)
    q[:, 0] = np.abs(q[:, 0])
    return q


def rim_height(p: np.ndarray) -> np.ndarray:
    """Height (m) of each point above the neck's rim plane."""
    return (p - A.NECK_RIM_POINT) @ A.NECK_RIM_NORMAL


def root_weight(p: np.ndarray) -> np.ndarray:
    """Skinning weight of the root joint: the bottom 3.5 cm of the neck, fading over about 4 cm."""
    return sigmoid((0.035 - rim_height(p)) / 0.010)


def jaw_weight(p: np.ndarray) -> np.ndarray:
    """Skinning weight of the jaw: lower lip, chin, lower cheeks and the underside of the jaw.

    Below a line from the jaw hinge to the mouth corner (the mouth line itself in front of the
    corners, with a 1.2 mm wide transition there so the lips part cleanly), in front of the ramus,
    and above a line from the jaw angle to the throat.
    """
    hinge = (A.CONDYLE[2], A.CONDYLE[1])
    corner = (A.MOUTH_CORNER_Z, A.MOUTH_Y)
    below_cheek_line = _side_line(p, hinge, corner)  # > 0 below the hinge-corner line
    below_mouth = np.where(p[:, 2] > corner[0], A.MOUTH_Y - p[:, 1], below_cheek_line)
    width = 0.0012 + 0.006 * np.clip((np.abs(p[:, 0]) - 0.8 * A.MOUTH_HALF_WIDTH) / 0.02, 0.0, 1.0)
    lower = sigmoid(below_mouth / width)
    front_of_ramus = sigmoid((p[:, 2] - (A.CONDYLE[2] + 0.004)) / 0.006)
    above_throat = sigmoid(-_side_line(p, (A.GONION[2] - 0.01, A.GONION[1] + 0.004), (0.006, -0.106)) / 0.006)
    return lower * front_of_ramus * above_throat


def face_weight(p: np.ndarray) -> np.ndarray:
    """Where the face is (1) and is not (0): front of the head between the hairline and the chin.

    Zero on the back of the head, the ears and the neck; used for expression blendshapes.
    """
    front = sigmoid((p[:, 2] + 0.036) / 0.006)
    below_hairline = sigmoid((0.075 - p[:, 1]) / 0.008)
    above_neck = np.maximum(sigmoid((p[:, 1] + 0.092) / 0.005), jaw_weight(p))
    return front * below_hairline * above_neck * (1.0 - ear_weight(p))


def ear_weight(p: np.ndarray) -> np.ndarray:
    """The ears (1 inside a slightly grown copy of the ear's ellipsoid)."""
    s = np.array(p, dtype=np.float64, copy=True)
    s[:, 0] = np.abs(s[:, 0])
    q = (s - A.EAR_CENTRE) @ _EAR_ROT
    return sigmoid(-ellipsoid(q, np.zeros(3), np.array([0.0150, 0.0330, 0.0210])) / 0.002)


def neck_weight(p: np.ndarray) -> np.ndarray:
    """The neck below the jaw (1) fading out toward the chin and the back of the skull."""
    return sigmoid((-0.075 - p[:, 1]) / 0.008) * (1.0 - jaw_weight(p))


def lips_weight(p: np.ndarray) -> np.ndarray:
    """Both lips: an ellipse around the mouth line, in front."""
    dx = p[:, 0] / (A.MOUTH_HALF_WIDTH + 0.005)
    dy = (p[:, 1] - A.MOUTH_Y) / 0.0125
    return sigmoid((1.0 - np.hypot(dx, dy)) / 0.08) * sigmoid((p[:, 2] - 0.036) / 0.003)


def upper_lip_weight(p: np.ndarray) -> np.ndarray:
    """The upper lip only (above the mouth line)."""
    return lips_weight(p) * sigmoid((p[:, 1] - A.MOUTH_Y) / 0.0008)


def lower_lip_weight(p: np.ndarray) -> np.ndarray:
    """The lower lip only (below the mouth line)."""
    return lips_weight(p) * sigmoid((A.MOUTH_Y - p[:, 1]) / 0.0008)


def nose_weight(p: np.ndarray) -> np.ndarray:
    """The nose: between the eyes' inner corners down to the nostrils, widening toward the wings."""
    t = np.clip((A.NASION[1] - p[:, 1]) / (A.NASION[1] - A.SUBNASALE[1]), 0.0, 1.0)
    half_width = 0.009 + 0.016 * t**1.5
    inside = sigmoid((half_width - np.abs(p[:, 0])) / 0.0015)
    above_base = sigmoid((p[:, 1] - (A.SUBNASALE[1] - 0.0005)) / 0.0008)
    vertical = above_base * sigmoid((A.NASION[1] - 0.004 - p[:, 1]) / 0.002)
    return inside * vertical * sigmoid((p[:, 2] - 0.038) / 0.003)


def eye_region_weight(p: np.ndarray, side: int = 0) -> np.ndarray:
    """Around one eye (``side`` +1 left, -1 right) or both (0): lids and the skin to the brow and cheek."""
    x = p[:, 0] if side == 0 else side * p[:, 0]
    dx = (np.abs(x) - (A.EYE_CENTRE[0] + 0.002)) / 0.021
    dy = (p[:, 1] - (A.EYE_CENTRE[1] + 0.004)) / 0.0165
    w = sigmoid((1.0 - np.hypot(dx, dy)) / 0.05) * sigmoid((p[:, 2] - 0.012) / 0.003)
    return w if side == 0 else w * sigmoid(x / 0.001)


def forehead_weight(p: np.ndarray) -> np.ndarray:
    """The forehead: above the brows, below the hairline, in front."""
    return (sigmoid((p[:, 1] - 0.046) / 0.002) * sigmoid((0.090 - p[:, 1]) / 0.002)
            * sigmoid((0.066 - np.abs(p[:, 0])) / 0.003) * sigmoid((p[:, 2] + 0.004) / 0.004))


def scalp_weight(p: np.ndarray) -> np.ndarray:
    """Where hair grows: the top and back of the head down to the nape (not the ears)."""
    top = sigmoid((p[:, 1] - 0.084) / 0.004)
    back = sigmoid((-0.045 - p[:, 2] - 0.3 * np.maximum(p[:, 1], 0.0)) / 0.006) * sigmoid((p[:, 1] + 0.135) / 0.004)
    return np.maximum(top, back) * (1.0 - ear_weight(p))
