"""NoW's 7 landmarks: reading them, taking them from a FLAME embedding, and checking their order.

The order (NoW's, and iBUG-68's indices 36, 39, 42, 45, 33, 48, 54): right eye outer corner, right eye
inner corner, left eye inner corner, left eye outer corner, nose bottom, right mouth corner, left mouth
corner ("right" is the subject's right). Ground truth comes as MeshLab picked points (``.pp``),
predictions as ``.npy`` (7, 3) or (1, 7, 3) or text (7 rows of x y z).

A wrong order does not crash NoW's own evaluation, it mis-aligns the prediction and the score comes out
far from what the method deserves. :func:`orientation_problem` and :func:`order_problem` catch it.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import rigid_fit
from ..mesh.landmark_files import NOW7, read_points

NAMES = ("right eye outer corner", "right eye inner corner", "left eye inner corner", "left eye outer corner",
         "nose bottom", "right mouth corner", "left mouth corner")
#: iBUG-68 indices of the 7 points, in NoW's order.
IBUG68 = tuple(int(i) for i in NOW7)
#: The same order with the subject's left and right exchanged.
LEFT_RIGHT_SWAPPED = (3, 2, 1, 0, 4, 6, 5)


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """NoW's 7 landmarks (7, 3) from ``.pp``, ``.npy`` ((7, 3) or (1, 7, 3)) or text
    (:func:`onflame.mesh.landmark_files.read_points` parses them).

    Raises :class:`InputError` naming the file for a wrong count, NaN or an unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "landmark file not found")
    lmk = read_points(path)
    if lmk.ndim != 2 or lmk.shape[1] != 3:
        raise InputError(path, f"landmarks must be 7 points of x, y, z; got an array of shape {lmk.shape}")
    if len(lmk) != 7:
        hint = " (68 iBUG points? NoW takes indices 36, 39, 42, 45, 33, 48, 54 of them)" if len(lmk) == 68 else ""
        raise InputError(path, f"{len(lmk)} landmarks, NoW needs 7{hint}")
    if not np.isfinite(lmk).all():
        raise InputError(path, "landmarks contain NaN or inf")
    return lmk


def from_flame(vertices: np.ndarray, faces: np.ndarray, embedding) -> np.ndarray:
    """NoW's 7 landmarks (7, 3) of a FLAME-topology mesh, from a :class:`~onflame.flame.LandmarkEmbedding`
    (its 68 points, or the 51 = iBUG-68 without the 17 jaw points). ValueError if it has neither."""
    if embedding is not None and embedding.full68 is not None:
        return embedding.full68.locate(vertices, faces)[list(IBUG68)]
    if embedding is not None and embedding.static51 is not None:
        return embedding.static51.locate(vertices, faces)[[i - 17 for i in IBUG68]]
    raise ValueError("the model has no 51- or 68-point landmark embedding")


def outer_eye_distance(lmk: np.ndarray) -> float:
    """Distance between the outer eye corners (the points' unit): NoW's measure of a face's size."""
    return float(np.linalg.norm(lmk[0] - lmk[3]))


def orientation_problem(lmk: np.ndarray, points: np.ndarray) -> str | None:
    """A message if the landmarks' right and left look exchanged relative to the surface ``points`` (N, 3).

    With the subject's right-to-left axis ``e = outer left − outer right`` and the upward axis ``u`` from
    the mouth to the nose bridge, ``e × u`` points out of the face. The nose bottom lies in front of the
    centroid of a head or face surface, so ``(nose_bottom − centroid) · (e × u) < 0`` means the landmarks
    describe the mirror image: left and right swapped.
    """
    e = lmk[3] - lmk[0]
    up = (lmk[1] + lmk[2]) / 2 - (lmk[5] + lmk[6]) / 2
    out = np.cross(e, up)
    if np.dot(lmk[4] - np.asarray(points).mean(0), out) < 0:
        return ("left and right are swapped: with these points the face would look into the head "
                f"(expected order: {', '.join(NAMES)})")
    return None


_PERMUTATIONS = np.array(list(itertools.permutations(range(7))))


def order_problem(lmk: np.ndarray, reference: np.ndarray) -> str | None:
    """A message if another order of ``lmk`` (7, 3) fits ``reference`` (7, 3) much better than theirs.

    Every one of the 5040 orders is fitted to the reference by a similarity (no reflection); if the given
    order's residual is both large (RMS over a tenth of the outer-eye distance) and 4 times that of the
    best order, the order contradicts the reference.
    """
    a = lmk[_PERMUTATIONS]  # (P, 7, 3)
    R, t, s = rigid_fit(a, np.broadcast_to(reference, a.shape), scale=True)  # every order at once
    fitted = s[:, None, None] * a @ R.transpose(0, 2, 1) + t[:, None, :]
    residual = ((fitted - reference) ** 2).sum((1, 2))  # Umeyama's minimum over rotation, scale, shift
    best = int(np.argmin(residual))
    given = residual[0]  # permutation 0 is the identity
    size = outer_eye_distance(reference)
    if best == 0 or given <= 4 * residual[best] or np.sqrt(max(given, 0.0) / 7) <= 0.1 * size:
        return None
    perm = tuple(int(i) for i in _PERMUTATIONS[best])
    what = "left and right are swapped" if perm == LEFT_RIGHT_SWAPPED else f"they fit the scan in the order {list(perm)}"
    return (f"landmark order contradicts the scan's ({what}; RMS {np.sqrt(max(given, 0) / 7):.1f} vs "
            f"{np.sqrt(max(residual[best], 0) / 7):.1f} in the scan's unit after alignment; expected order: "
            f"{', '.join(NAMES)})")
