"""The procedural head as an implicit solid: a function that is negative inside the head.

The head is a smooth union of simple parts (skull, face, jaw, neck, cheeks, brow ridge, nose, lips, chin,
ears) with the eye sockets, the open eyes and the mouth line carved out. Each part's value is an
approximate signed distance in metres, which is all the smooth blending and the ray sampling in
:mod:`.head_mesh` need. Paired parts are evaluated on ``|x|``, so the solid is exactly left-right
symmetric. No library builds faces from primitives like this, hence the hand-written distance functions.
"""
from __future__ import annotations

import numpy as np

from . import anatomy as A


def ellipsoid(p: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance (N,) from points (N, 3) to an axis-aligned ellipsoid."""
    q = (p - centre) / radii
    k0 = np.sqrt(np.einsum("ij,ij->i", q, q))
    q /= radii
    k1 = np.sqrt(np.einsum("ij,ij->i", q, q))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def round_cone(p: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Approximate signed distance (N,) to a capsule from ``a`` (radius ``ra``) to ``b`` (radius ``rb``)."""
    ab = b - a
    pa = p - a
    t = np.clip((pa @ ab) / (ab @ ab), 0.0, 1.0)
    pa -= t[:, None] * ab
    return np.sqrt(np.einsum("ij,ij->i", pa, pa)) - (ra + t * (rb - ra))


def smooth_union(d1: np.ndarray, d2: np.ndarray, k: float) -> np.ndarray:
    """Union of two solids with a fillet of about ``k`` metres (polynomial smooth minimum)."""
    h = np.maximum(k - np.abs(d1 - d2), 0.0) / k
    return np.minimum(d1, d2) - h * h * k * 0.25


def smooth_subtract(d: np.ndarray, cut: np.ndarray, k: float) -> np.ndarray:
    """Solid ``d`` with solid ``cut`` removed, edges rounded over about ``k`` metres."""
    return -smooth_union(-d, cut, k)


def _rot(axis: int, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = np.eye(3)
    R[i, i] = R[j, j] = c
    R[i, j], R[j, i] = -s, s
    return R


#: Radius (m) of the eyelids around the eyeball's centre, where the eye opening is measured.
EYELID_RADIUS = A.EYEBALL_RADIUS + 0.0016

#: The ear's frame: tilted back 12 degrees and turned 15 degrees to face forward-out.
_EAR_ROT = _rot(1, 15.0) @ _rot(0, 12.0)


def eye_opening(p: np.ndarray) -> np.ndarray:
    """Signed value (N,) of the almond-shaped eye opening in front view, < 0 inside (either eye)."""
    dx = np.abs(np.abs(p[:, 0]) - A.EYE_CENTRE[0]) / A.EYE_HALF_WIDTH
    dy = p[:, 1] - (A.EYE_CENTRE[1] - A.EYE_OPEN_DROP)
    half = np.where(dy > 0, A.EYE_OPEN_UP, A.EYE_OPEN_DOWN)
    # |dx|^1.5 + (dy/h)^2 < 1: pointed corners, round lids
    return (dx**1.5 + (dy / half) ** 2 - 1.0) * A.EYE_OPEN_DOWN * 0.5


def eye_sockets(s: np.ndarray) -> np.ndarray:
    """Bound (< 0 allowed) that presses the skin in front of each eye onto the eyelid sphere.

    In front of the eyeball's centre the head may reach ``EYELID_RADIUS`` from it near the eye's axis,
    more the farther out (a bowl that meets the brow, nose and cheek), so the lids hug the eyeball.
    """
    rel = s - A.EYE_CENTRE
    r = np.sqrt(np.einsum("ij,ij->i", rel, rel))
    # the bowl climbs faster toward the brow and much faster toward the nose, which it must not cut
    up = np.where(rel[:, 1] > 0, 1.3, 1.0)
    medial = np.where(rel[:, 0] < 0, 1.6, 1.0)
    lateral = np.hypot(rel[:, 0] * medial, rel[:, 1] * up)
    allowed = EYELID_RADIUS + 60.0 * np.maximum(lateral - 0.009, 0.0) ** 2
    return np.where(rel[:, 2] > 0, r - allowed, -1.0)


def eye_openings(s: np.ndarray) -> np.ndarray:
    """The region cut away to open the eyes (< 0 inside), evaluated on ``|x|``.

    Seen from the eyeball's centre, directions that pass through the almond (:func:`eye_opening`) are
    cleared from 22 mm down to 2.5 mm inside the eyeball, so the separate eyeball shows there; the skin around is
    the eyelids. The cut's depth rises smoothly over a 1.2 mm margin, so the lid edges slope instead of
    being walls that the meshing rays would graze.
    """
    rel = s - A.EYE_CENTRE
    r = np.sqrt(np.einsum("ij,ij->i", rel, rel))
    on_lid = A.EYE_CENTRE + rel * (EYELID_RADIUS / np.maximum(r, 1e-9))[:, None]
    x = np.clip(eye_opening(on_lid) / 0.0012 + 0.5, 0.0, 1.0)  # 0 inside the opening, 1 outside
    depth = (A.EYEBALL_RADIUS - 0.0025) + 0.05 * x * x * (3.0 - 2.0 * x)
    depth = np.where(on_lid[:, 2] > A.EYE_CENTRE[2], depth, 1.0)  # only in front
    return np.maximum(depth - r, r - 0.022)  # and only near the eye


def head_sdf(p: np.ndarray) -> np.ndarray:
    """Signed value (N,) of points ``p`` (N, 3) in metres: < 0 inside the head (eyeballs not included)."""
    p = np.asarray(p, dtype=np.float64).reshape(-1, 3)
    s = p.copy()
    s[:, 0] = np.abs(s[:, 0])  # paired parts: evaluate the left one on |x|
    bent = s.copy()
    bent[:, 2] = bent[:, 2] + A.mouth_arch_z(bent[:, 0])  # lips follow the dental arch
    E, C, U, v = ellipsoid, round_cone, smooth_union, np.array

    d = E(p, v([0.0, 0.020, -0.050]), v([0.077, 0.108, 0.104]))                    # skull
    d = U(d, E(p, v([0.0, -0.010, -0.004]), v([0.066, 0.076, 0.052])), 0.02)      # face
    d = U(d, E(p, v([0.0, -0.051, -0.006]), v([0.054, 0.040, 0.050])), 0.015)     # jaw
    d = U(d, _neck(p), 0.025)
    # mandible: ramus from the hinge down to the jaw angle, body forward to the chin
    d = U(d, C(s, A.CONDYLE + [0.0, 0.0, 0.004], A.GONION, 0.010, 0.010), 0.02)
    d = U(d, C(s, A.GONION, v([0.018, -0.084, 0.028]), 0.010, 0.010), 0.02)
    d = U(d, E(p, A.MENTON + [0.0, 0.0095, -0.0135], v([0.019, 0.0145, 0.0145])), 0.012)  # chin
    # cheekbones, cheeks, the upper-lip base (maxilla)
    d = U(d, E(s, v([0.046, 0.004, 0.030]), v([0.020, 0.013, 0.017])), 0.014)
    d = U(d, E(s, v([0.036, -0.030, 0.032]), v([0.019, 0.020, 0.017])), 0.02)
    d = U(d, E(p, v([0.0, -0.030, 0.036]), v([0.030, 0.020, 0.019])), 0.012)
    # brow ridge
    d = U(d, C(s, A.BROW_INNER, A.BROW_OUTER, 0.0085, 0.0075), 0.012)
    # nose: bridge to tip, wings, columella
    d = U(d, C(p, A.NASION + [0.0, 0.0, -0.0065], A.NOSE_TIP + [0.0, 0.0, -0.011], 0.0062, 0.0105), 0.006)
    d = U(d, E(s, A.ALA, v([0.0085, 0.0080, 0.0095])), 0.005)
    d = U(d, C(p, A.NOSE_TIP + [0.0, -0.004, -0.007], A.SUBNASALE + [0.0, 0.001, -0.004], 0.0055, 0.004), 0.004)
    # lips, and the mouth line between them
    m = A.MOUTH_Y
    d = U(d, E(bent, v([0.0, m + 0.0058, 0.0525]), v([0.0255, 0.0062, 0.0090])), 0.005)
    d = U(d, E(bent, v([0.0, m - 0.0058, 0.0515]), v([0.0235, 0.0068, 0.0094])), 0.005)
    d = smooth_subtract(d, E(bent, v([0.0, m, 0.0640]), v([A.MOUTH_HALF_WIDTH, 0.0011, 0.0125])), 0.0015)
    # ears: a flattened, turned ellipsoid with a bowl (concha) pressed into its outer face
    q = (s - A.EAR_CENTRE) @ _EAR_ROT
    d = U(d, E(q, np.zeros(3), v([0.0120, 0.0300, 0.0180])), 0.010)
    d = smooth_subtract(d, E(q, v([0.0125, -0.0040, 0.0030]), v([0.0060, 0.0120, 0.0085])), 0.003)
    # eye sockets: skin near the eyes hugs the eyeballs; then open the eyes
    d = smooth_subtract(d, -eye_sockets(s), 0.003)
    return np.maximum(d, -eye_openings(s))


def _neck(p: np.ndarray) -> np.ndarray:
    """An elliptic neck leaning slightly forward, flaring toward the shoulders, ending inside the head."""
    y = p[:, 1]
    zc = -0.062 + 0.25 * (y + 0.10)
    flare = 0.008 * np.logaddexp(0.0, (-0.150 - y) / 0.015)
    a, b = 0.056 + flare, 0.060 + 0.5 * flare
    k = np.hypot(p[:, 0] / a, (p[:, 2] - zc) / b)
    side = (k - 1.0) * np.minimum(a, b)
    return np.maximum(side, y + 0.005)  # capped inside the skull
