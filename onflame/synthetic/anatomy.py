"""Where things are on onflame's procedural head: named points and sizes of the mean head.

Everything is in metres in FLAME's frame: +x is the subject's left, +y up, +z the way the face looks.
The sizes follow FLAME's mean head (about 0.18 m wide with ears, 0.32 m from neck rim to crown, nose tip
at z = 0.076 m). Paired features are given for the left side (x > 0); :func:`mirror` gives the right one.

The implicit solid (:mod:`.head_solid`), the region masks and skinning weights (:mod:`.head_rig`) and the
landmarks (:mod:`.head_landmarks`) all read these numbers, so the parts agree with each other.
"""
from __future__ import annotations

import numpy as np

#: Centre of the left eyeball, and its radius (FLAME's eyeballs are 25 mm across).
EYE_CENTRE = np.array([0.0315, 0.0215, 0.0255])
EYEBALL_RADIUS = 0.0125
#: Half width, and upper / lower half heights of the open eye (palpebral fissure), and how far its
#: centre sits below the eyeball centre.
EYE_HALF_WIDTH = 0.0132
EYE_OPEN_UP = 0.0055
EYE_OPEN_DOWN = 0.0042
EYE_OPEN_DROP = 0.0010

#: The mouth line: its height, half width (corner x) and the forward bow of the dental arch
#: (z drops by ``ARCH_BEND * x**2`` away from the midline).
MOUTH_Y = -0.0440
MOUTH_HALF_WIDTH = 0.0245
ARCH_BEND = 9.0
#: How far forward the lips reach at the mouth corners.
MOUTH_CORNER_Z = 0.0465

#: Nose: root (nasion, between the eyes), tip, and the bottom of the columella (subnasale).
NASION = np.array([0.0, 0.0265, 0.0505])
NOSE_TIP = np.array([0.0, -0.0040, 0.0760])
SUBNASALE = np.array([0.0, -0.0215, 0.0590])
#: Centre of the left nostril wing (ala).
ALA = np.array([0.0125, -0.0150, 0.0510])

#: Chin front-bottom (menton, landmark 8).
MENTON = np.array([0.0, -0.0905, 0.0440])
#: Left jaw hinge (condyle, in front of the ear) and left jaw angle (gonion).
CONDYLE = np.array([0.0600, -0.0150, -0.0420])
GONION = np.array([0.0560, -0.0640, -0.0330])

#: Centre of the left ear and how it is turned.
EAR_CENTRE = np.array([0.0745, -0.0040, -0.0560])

#: Left end of the brow ridge, and its middle (above the nasion).
BROW_OUTER = np.array([0.0480, 0.0385, 0.0260])
BROW_INNER = np.array([0.0000, 0.0370, 0.0440])

#: Origin of the rays that sample the head surface (inside the head, behind the face).
RAY_ORIGIN = np.array([0.0, -0.0050, -0.0350])

#: The neck's open rim lies in the plane ``dot(NECK_RIM_NORMAL, p - NECK_RIM_POINT) = 0``: it slopes
#: from 0.19 m below the eyes at the throat to 0.14 m at the nape, as FLAME's does.
NECK_RIM_POINT = np.array([0.0, -0.1650, -0.0750])
NECK_RIM_NORMAL = np.array([0.0, 1.0, 0.385]) / np.hypot(1.0, 0.385)


def mirror(p: np.ndarray) -> np.ndarray:
    """The point(s) ``p`` (..., 3) reflected to the other side (x -> -x)."""
    q = np.array(p, dtype=np.float64, copy=True)
    q[..., 0] *= -1.0
    return q


def eye_centres() -> np.ndarray:
    """(2, 3) eyeball centres: left (x > 0) then right, FLAME's joint order."""
    return np.stack([EYE_CENTRE, mirror(EYE_CENTRE)])


def mouth_arch_z(x: np.ndarray) -> np.ndarray:
    """How far (m) the dental arch has curved back at lateral offset ``x``: ``ARCH_BEND * x**2``."""
    return ARCH_BEND * np.asarray(x) ** 2
