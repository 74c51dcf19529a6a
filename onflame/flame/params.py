"""FLAME parameters: the one params type, and MICA's ``.npz`` file format.

A MICA ``FLAME_parameters/<actor>/<capture>.npz`` holds

    betas (400,)   300 identity coefficients, then 100 expression coefficients
    pose  (15,)    axis-angle (radians) of global, neck, jaw, left eye, right eye
    trans (3,)     translation, metres

and MICA trains on ``shape_params = betas[:300]``, ``expression_params = betas[300:]`` and
``pose_params = concat(pose[:3], pose[6:9])`` (global and jaw). :class:`FlameParams` holds the same
four blocks, with optional leading batch axes, and any extra arrays a writer wants to keep (onflame's
registration adds e.g. the scan-to-model transform).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import IO, Any, Mapping

import numpy as np

from ..errors import InputError
from ..fileio import PARAMS_MAX_BYTES, read_npz, write_npz

N_SHAPE = 300
N_EXPRESSION = 100
N_POSE = 15
#: Arrays every MICA parameter file must have, with their shapes.
MICA_KEYS = {"betas": (N_SHAPE + N_EXPRESSION,), "pose": (N_POSE,), "trans": (3,)}


def mica_training_params(betas: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
    """MICA's conversion from a parameter file to its training targets.

    Args:
        betas: (..., 400) identity then expression coefficients.
        pose: (..., 15) FLAME pose.

    Returns:
        ``shape_params`` (..., 300) = ``betas[:300]``, ``expression_params`` (..., 100) = ``betas[300:]``,
        ``pose_params`` (..., 6) = ``concat(pose[:3], pose[6:9])`` (global and jaw rotation).
    """
    betas, pose = np.asarray(betas), np.asarray(pose)
    return {
        "shape_params": betas[..., :N_SHAPE],
        "expression_params": betas[..., N_SHAPE:],
        "pose_params": np.concatenate([pose[..., :3], pose[..., 6:9]], -1),
    }


@dataclass
class FlameParams:
    """FLAME parameters for one subject (or a batch, with leading axes).

    Attributes:
        shape: (..., 300) identity coefficients.
        expression: (..., 100) expression coefficients.
        pose: (..., 15) axis-angle rotations in radians: global, neck, jaw, left eye, right eye.
        trans: (..., 3) translation in metres.
        extras: further named arrays kept with the parameters (written to and read from ``.npz``).
    """

    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    trans: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def zeros(cls, n_shape: int = N_SHAPE, n_expression: int = N_EXPRESSION) -> "FlameParams":
        """The mean head at rest."""
        return cls(np.zeros(n_shape), np.zeros(n_expression), np.zeros(N_POSE), np.zeros(3))

    @classmethod
    def from_mica(cls, betas: np.ndarray, pose: np.ndarray, trans: np.ndarray | None = None,
                  **extras: np.ndarray) -> "FlameParams":
        """From MICA's arrays: ``betas`` (..., 400), ``pose`` (..., 15), ``trans`` (..., 3)."""
        betas = np.asarray(betas, dtype=np.float64)
        pose = np.asarray(pose, dtype=np.float64)
        trans = np.zeros(pose.shape[:-1] + (3,)) if trans is None else np.asarray(trans, dtype=np.float64)
        return cls(betas[..., :N_SHAPE], betas[..., N_SHAPE:], pose, trans, dict(extras))

    @property
    def betas(self) -> np.ndarray:
        """(..., 400) identity then expression, as MICA stores them."""
        return np.concatenate([self.shape, self.expression], -1)

    @property
    def mica_pose(self) -> np.ndarray:
        """(..., 6) global and jaw rotation: ``concat(pose[:3], pose[6:9])``."""
        return np.concatenate([self.pose[..., :3], self.pose[..., 6:9]], -1)

    def training_targets(self) -> dict[str, np.ndarray]:
        """MICA's training targets (see :func:`mica_training_params`)."""
        return mica_training_params(self.betas, self.pose)

    def to_torch(self, dtype: Any = None, device: Any = None) -> dict[str, Any]:
        """``shape``, ``expression``, ``pose``, ``trans`` as tensors with a batch axis."""
        import torch

        def t(a: np.ndarray) -> Any:
            x = torch.as_tensor(np.asarray(a), dtype=dtype or torch.float32, device=device)
            return x.unsqueeze(0) if x.dim() == 1 else x

        return {"shape": t(self.shape), "expression": t(self.expression), "pose": t(self.pose), "trans": t(self.trans)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """MICA's arrays plus extras: ``betas``, ``pose``, ``trans``, ..."""
        out = {"betas": self.betas, "pose": self.pose, "trans": self.trans}
        out.update(self.extras)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write a MICA-compatible ``.npz`` atomically (float64 ``betas``, ``pose``, ``trans`` + extras)."""
        write_npz(path, **self.to_arrays())


def params_from_arrays(arrays: Mapping[str, Any], path: str | os.PathLike = "<arrays>") -> FlameParams:
    """Check MICA's keys, shapes and finiteness and build :class:`FlameParams`.

    ``betas`` may have 300 to 400 entries (missing expression is zero); a leading axis of length 1
    (``(1, 15)``) is accepted. Raises :class:`InputError` naming ``path`` and every problem found.
    """
    problems = []
    vals: dict[str, np.ndarray] = {}
    for key, (n,) in MICA_KEYS.items():
        if key not in arrays:
            problems.append(f"missing key {key!r}")
            continue
        a = np.asarray(arrays[key])
        if a.ndim == 2 and a.shape[0] == 1:
            a = a[0]
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            problems.append(f"{key} has dtype {a.dtype}, expected float")
            continue
        ok = a.ndim == 1 and (a.shape[0] == n or (key == "betas" and N_SHAPE <= a.shape[0] <= n))
        if not ok:
            problems.append(f"{key} has shape {tuple(np.shape(arrays[key]))}, expected ({n},)")
            continue
        if not np.isfinite(a).all():
            problems.append(f"{key} has NaN or inf")
            continue
        vals[key] = a.astype(np.float64)
    if problems:
        raise InputError(path, "; ".join(problems))
    betas = np.zeros(N_SHAPE + N_EXPRESSION)
    betas[: vals["betas"].shape[0]] = vals["betas"]
    extras = {k: np.asarray(v) for k, v in arrays.items() if k not in MICA_KEYS}
    return FlameParams.from_mica(betas, vals["pose"], vals["trans"], **extras)


def read_params(source: str | os.PathLike | IO[bytes], name: str | None = None) -> FlameParams:
    """Read a MICA parameter ``.npz`` from a path or an open binary file (e.g. a zip member).

    Raises :class:`InputError` naming the file for unreadable files and bad contents (arrays of more
    than :data:`~onflame.fileio.PARAMS_MAX_BYTES` together included).
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<npz>"))
    return params_from_arrays(read_npz(source, label, PARAMS_MAX_BYTES), label)
