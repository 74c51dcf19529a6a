"""Eyeballs of a registration: kept behind the lids.

A scan never shows the eyeballs' full surface, so the refinement holds FLAME's eyeballs where the fit put
them while the lids follow the scan. Where the scan's eyes sit deeper, or its lids are narrower, than
the fit's, the eyeball then stands out through the lids. :func:`place_eyeballs` finds such an eyeball
(more of its vertices in front of the lid skin than in the fit itself, which is the model's own
consistent state), moves it rigidly with the ring of lid skin around it (the rotation and translation
that ring made from the fit to the registration), and if it still pierces, sets it back along the face's
axis, a quarter millimetre at a time, until it pierces no more than in the fit. Eyeballs that do not
pierce stay at the fit, so the registration stays what its FLAME parameters give there.
"""
from __future__ import annotations

import numpy as np

from ..geometry import ray_triangle_t, rigid_fit

#: Lid skin vertices whose motion an eyeball follows: the ones within this distance (m) of the eyeball.
LID_RING_M = 0.006
#: Step and largest distance (m) an eyeball is set back when its surface still pierces the lids.
SETBACK_STEP_M = 0.00025
MAX_SETBACK_M = 0.004


def piercing(vertices: np.ndarray, eyeball: np.ndarray, lid_faces: np.ndarray) -> np.ndarray:
    """(K,) bool over ``eyeball`` vertex indices: vertices in front of the lid skin.

    A vertex pierces when the segment from it to the eyeball's centre crosses a lid triangle
    (``lid_faces`` (L, 3)); vertices behind the skin, or seen through the eye opening, reach the centre
    without crossing it.
    """
    if len(lid_faces) == 0 or len(eyeball) == 0:
        return np.zeros(len(eyeball), bool)
    pts = vertices[eyeball]
    centre = pts.mean(0)
    tri = vertices[lid_faces]
    reach = np.linalg.norm(pts - centre, axis=1).max()
    near = np.linalg.norm(tri - centre, axis=2).min(1) <= reach  # only these can meet a segment to the centre
    return segments_to_point_cross(pts, centre, tri[near])


def segments_to_point_cross(start: np.ndarray, end: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(K,) bool: segments from each of ``start`` (K, 3) to the one point ``end`` (3,) that cross any of
    ``triangles`` (L, 3, 3).

    Seen from ``end``, a segment is a direction and a triangle covers a patch of directions: only pairs
    whose direction falls within a cone around the triangle (its corners' directions' mean, as wide as
    the farthest corner) can cross, and one (K, 3) × (3, L) product finds them; those few pairs go
    through :func:`onflame.geometry.ray_triangle_t`. A ray query through trimesh would first cost its
    import and an r-tree.
    """
    out = np.zeros(len(start), bool)
    if len(start) == 0 or len(triangles) == 0:
        return out
    seg = _unit(start - end)                                                              # (K, 3)
    corners = _unit(triangles - end)                                                      # (L, 3, 3)
    axis = _unit(corners.sum(1))
    cos_width = (corners * axis[:, None, :]).sum(2).min(1)                               # (L,)
    cos_width = np.where(cos_width > 0.0, cos_width, -2.0)  # a cone of 90° or more: every direction
    k, tri = np.nonzero(seg @ axis.T >= cos_width - 1e-9)
    if len(k):
        t = ray_triangle_t(start[k], end - start[k], triangles[tri])
        out[np.unique(k[(t > 0) & (t < 1)])] = True
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def place_eyeballs(reg: np.ndarray, fit: np.ndarray, faces: np.ndarray, eyeballs: list[np.ndarray],
                   lids: np.ndarray, forward: np.ndarray) -> tuple[np.ndarray, dict]:
    """Keep each eyeball of a registration behind its lids (see the module docstring).

    Args:
        reg: (V, 3) the registration (metres), eyeballs still at the fit's place.
        fit: (V, 3) the FLAME fit it was refined from.
        faces: (F, 3) triangles.
        eyeballs: vertex indices of each eyeball.
        lids: vertex indices of the skin around the eyes (FLAME's ``eye_region`` without the eyeballs).
        forward: (3,) unit direction the face looks (the eyeballs are set back against it).

    Returns:
        ``(vertices (V, 3), info)``; ``info``: per eyeball the ``moved_mm`` (mean shift of its vertices),
        ``setback_mm`` and ``piercing`` (vertices in front of the lids beyond the fit's own).
    """
    out = reg.copy()
    lid_set = np.zeros(len(reg), bool)
    lid_set[lids] = True
    lid_faces = faces[lid_set[faces].all(1)]
    info = []
    for eye in eyeballs:
        if len(eye) == 0:
            continue
        pierce = piercing(out, eye, lid_faces)
        allowed = int(piercing(fit, eye, lid_faces).sum()) if pierce.any() else 0  # the model's own margin
        setback = 0.0
        if pierce.sum() > allowed:
            centre = fit[eye].mean(0)
            reach = np.linalg.norm(fit[eye] - centre, axis=1).max() + LID_RING_M
            ring = lids[np.linalg.norm(fit[lids] - centre, axis=1) < reach]
            if len(ring) >= 6:
                R, t, _ = rigid_fit(fit[ring], reg[ring])
                out[eye] = fit[eye] @ R.T + t
            while (pierce := piercing(out, eye, lid_faces)).sum() > allowed and setback < MAX_SETBACK_M:
                out[eye] -= SETBACK_STEP_M * forward
                setback += SETBACK_STEP_M
        info.append({"moved_mm": round(float(np.linalg.norm(out[eye] - fit[eye], axis=1).mean()) * 1000, 3),
                     "setback_mm": round(setback * 1000, 2), "piercing": max(0, int(pierce.sum()) - allowed)})
    return out, {"eyeballs": info}
