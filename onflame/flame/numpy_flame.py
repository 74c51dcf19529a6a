"""FLAME in numpy: one head at a time, without torch, for registration's hot path.

The same arithmetic as :mod:`.lbs` and :class:`.layer.FLAME` (blendshapes, joints from their own
blendshape basis, Rodrigues, the joint tree, pose correctives, linear blend skinning), kept apart so
that ``onflame register`` never imports torch (whose import alone would dominate a short call). The
tests hold it to the torch layer within 1e-6 m.

One choice differs: the blendshape offsets are summed in float32. They are millimetres to centimetres,
so float32's 1e-7 relative precision leaves errors of nanometres, and the product, which reads the
whole (C, 3V) basis, is memory-bound: float32 halves it. Everything after (joints, posing, skinning)
is float64. Shapes: V vertices, J joints, C = S + E coefficients, B poses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import FlameModel

#: Below this squared angle (rad²) Rodrigues' coefficients use their Taylor series (as in :mod:`.lbs`).
_SMALL_ANGLE2 = 1e-8


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) in radians (Rodrigues' formula,
    ``R = I + a K + b K²``, as :func:`.lbs.axis_angle_to_matrix`)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta2 = (aa * aa).sum(-1, keepdims=True)
    small = theta2 < _SMALL_ANGLE2
    theta = np.sqrt(np.where(small, 1.0, theta2))
    half_sinc = np.sin(theta / 2) / (theta / 2)
    a = np.where(small, 1 - theta2 / 6, np.sin(theta) / theta)
    b = np.where(small, 0.5 - theta2 / 24, 0.5 * half_sinc * half_sinc)
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    return np.eye(3) + a[..., None] * K + b[..., None] * (K @ K)


def skinning_transforms(rot: np.ndarray, joints: np.ndarray, parents: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint skinning transforms (B, J, 3, 4) and posed joints (B, J, 3) from local rotations
    (B, J, 3, 3) and rest joints (B, J, 3) (as :func:`.lbs.skinning_transforms`; parents come first)."""
    B, J = rot.shape[:2]
    glob_R = np.empty((B, J, 3, 3))
    posed = np.empty((B, J, 3))
    glob_R[:, 0], posed[:, 0] = rot[:, 0], joints[:, 0]
    for j in range(1, J):
        p = parents[j]
        glob_R[:, j] = glob_R[:, p] @ rot[:, j]
        posed[:, j] = posed[:, p] + np.einsum("bik,bk->bi", glob_R[:, p], joints[:, j] - joints[:, p])
    t = posed - np.einsum("bjik,bjk->bji", glob_R, joints)  # a point bound to joint j: R_j (x − J_j) + posed_j
    return np.concatenate([glob_R, t[..., None]], -1), posed


@dataclass
class NumpyFlame:
    """A FLAME model's arrays laid out for evaluation (see the module docstring).

    Attributes:
        v_template: (V, 3) float64 mean head.
        shape_dirs, expr_dirs: (3V, S) and (3V, E) float32 identity and expression blendshapes; row 3i + k
            is vertex i's coordinate k (``shape_dirs.reshape(V, 3, S)[i]`` is one vertex's block, as
            Jacobians gather it).
        j_template: (J, 3) rest joints of the mean head; j_dirs: (C, 3J) their blendshapes (float64).
        pose_basis: (9 (J − 1), 3V) pose correctives; weights: (V, J) skinning weights.
        parents: parent of each joint (−1 for the root); faces: (F, 3).
    """

    v_template: np.ndarray
    shape_dirs: np.ndarray
    expr_dirs: np.ndarray
    j_template: np.ndarray
    j_dirs: np.ndarray
    pose_basis: np.ndarray
    weights: np.ndarray
    parents: list[int]
    faces: np.ndarray
    n_shape: int
    n_expression: int
    _last: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, model: FlameModel) -> "NumpyFlame":
        V = model.n_vertices
        j_dirs = np.concatenate([_regressed(model.J_regressor, model.shapedirs),
                                 _regressed(model.J_regressor, model.exprdirs)])
        return cls(np.asarray(model.v_template, dtype=np.float64),
                   model.shapedirs.reshape(3 * V, -1).astype(np.float32),
                   model.exprdirs.reshape(3 * V, -1).astype(np.float32),
                   model.J_regressor @ model.v_template, j_dirs,
                   np.ascontiguousarray(model.posedirs.reshape(3 * V, -1).T, dtype=np.float64),
                   np.asarray(model.weights, dtype=np.float64), model.parents.tolist(),
                   np.asarray(model.faces, dtype=np.int64), model.n_shape, model.n_expression)

    @property
    def n_vertices(self) -> int:
        return len(self.v_template)

    @property
    def n_joints(self) -> int:
        return len(self.parents)

    def coefficients(self, shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """(C,) identity then expression coefficients, zero-padded to the model's counts."""
        c = np.zeros(self.n_shape + self.n_expression)
        c[:len(shape)] = shape
        c[self.n_shape:self.n_shape + len(expression)] = expression
        return c

    def shaped(self, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The head before posing: vertices (V, 3) and joints (J, 3) for coefficients (C,).

        Only the rows up to each block's last non-zero coefficient are read: a fit's early stages hold
        most identity components at zero. The last result is kept (a fit evaluates a step's state, then
        linearises at it): callers must not write into it.
        """
        if self._last is not None and np.array_equal(self._last[0], coeffs):
            return self._last[1], self._last[2]
        offsets = np.zeros(self.shape_dirs.shape[0], dtype=np.float32)
        for dirs, c in ((self.shape_dirs, coeffs[:self.n_shape]), (self.expr_dirs, coeffs[self.n_shape:])):
            nz = np.flatnonzero(c)
            if nz.size:
                end = nz[-1] + 1
                offsets += dirs[:, :end] @ c[:end].astype(np.float32)
        v = self.v_template + offsets.reshape(-1, 3)
        joints = self.j_template + (coeffs @ self.j_dirs).reshape(-1, 3)
        self._last = (np.array(coeffs, dtype=np.float64), v, joints)
        return v, joints

    def posed(self, v_shaped: np.ndarray, joints: np.ndarray, pose: np.ndarray,
              trans: np.ndarray) -> np.ndarray:
        """Posed vertices (B, V, 3) of one shaped head (:meth:`shaped`) under B poses (B, 3J) and
        translations (B, 3): pose correctives, then linear blend skinning."""
        B, J = len(pose), self.n_joints
        rot = axis_angle_to_matrix(pose.reshape(B, J, 3))
        feature = (rot[:, 1:] - np.eye(3)).reshape(B, -1)
        v = v_shaped[None] + (feature @ self.pose_basis).reshape(B, -1, 3)
        A, _ = skinning_transforms(rot, np.broadcast_to(joints, (B, J, 3)), self.parents)
        T = (self.weights @ A.transpose(1, 0, 2, 3).reshape(J, -1)).reshape(-1, B, 3, 4)  # (V, B, 3, 4)
        v = v.transpose(1, 0, 2)                                                          # (V, B, 3)
        out = T[..., 3] + T[..., 0] * v[..., 0:1] + T[..., 1] * v[..., 1:2] + T[..., 2] * v[..., 2:3]
        return out.transpose(1, 0, 2) + trans[:, None, :]

    def vertices(self, shape: np.ndarray, expression: np.ndarray, pose: np.ndarray, trans: np.ndarray) -> np.ndarray:
        """(V, 3) vertices of FLAME(shape, expression, pose (3J,), trans (3,)), metres."""
        v, j = self.shaped(self.coefficients(shape, expression))
        return self.posed(v, j, np.asarray(pose, dtype=np.float64)[None], np.asarray(trans, dtype=np.float64)[None])[0]

    def root(self, shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """(3,) the root joint's rest position for these coefficients (global rotations turn about it)."""
        return self.shaped(self.coefficients(shape, expression))[1][0]


def _regressed(J_regressor: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """(C, 3J) the joints' own blendshapes: the regressor (J, V) applied to each blendshape of ``dirs``
    (V, 3, C)."""
    V, _, C = dirs.shape
    joints = J_regressor @ dirs.reshape(V, 3 * C)                                         # (J, 3C)
    return joints.reshape(-1, 3, C).transpose(2, 0, 1).reshape(C, -1)


_CACHE: dict[int, tuple[FlameModel, NumpyFlame]] = {}


def numpy_flame(model: FlameModel) -> NumpyFlame:
    """The model's :class:`NumpyFlame`, kept for the last couple of models (a build registers many scans
    with one model: its layout is made once)."""
    hit = _CACHE.get(id(model))
    if hit is None or hit[0] is not model:
        if len(_CACHE) >= 2:
            _CACHE.clear()
        hit = (model, NumpyFlame.from_model(model))
        _CACHE[id(model)] = hit
    return hit[1]
