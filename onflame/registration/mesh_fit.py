"""FLAME parameters for a mesh already in FLAME's topology (``onflame fit-mesh``)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..mesh import Mesh, check_mesh, read_mesh
from .fit import fit_mesh_vertices
from .gauss_newton import make_layer, vertices
from .plausibility import check_scan_extent
from .threads import single_threaded_blas
from .units import resolve_units


@dataclass
class MeshFit:
    """FLAME parameters fitted to a FLAME-topology mesh, and how well they explain it.

    Attributes:
        params: FLAME parameters (metres, the mesh's frame).
        vertices: (V, 3) FLAME(params).
        error_mm: (V,) per-vertex distance between FLAME(params) and the mesh, millimetres.
    """

    params: FlameParams
    vertices: np.ndarray
    error_mm: np.ndarray

    def summary(self) -> dict:
        e = self.error_mm
        return {"mean_mm": float(e.mean()), "median_mm": float(np.median(e)),
                "p95_mm": float(np.percentile(e, 95)), "max_mm": float(e.max())}


@single_threaded_blas
def fit_mesh(mesh: Mesh | str | os.PathLike, model: FlameModel, units: str = "m", iters: int = 8) -> MeshFit:
    """FLAME parameters for a mesh already in FLAME topology (TEMPEH, CoMA, VOCA, MICA registrations…).

    Vertex-to-vertex Gauss-Newton on shape, expression, global/neck/jaw pose and translation (eyes stay
    at rest). ``units``: the mesh's length unit (``m``, ``cm``, ``mm`` or ``auto``).

    Raises:
        InputError: unreadable mesh, or a vertex count different from the model's.
    """
    if not isinstance(mesh, Mesh):
        mesh = read_mesh(mesh)
    path = mesh.source or "<mesh>"
    check_mesh(mesh, path)
    if mesh.n_vertices != model.n_vertices:
        raise InputError(path, f"has {mesh.n_vertices} vertices; the model's topology has {model.n_vertices}")
    units, k = resolve_units(mesh.vertices, None, units, path)
    target = mesh.vertices * k
    check_scan_extent(target, path, units)
    flame = make_layer(model)
    state = fit_mesh_vertices(flame, target, iters=iters)
    v = vertices(flame, state)
    params = state.to_params()
    params.extras.update(units=np.array(units), scale_to_m=np.array(k))
    return MeshFit(params, v, np.linalg.norm(v - target, axis=1) * 1000)
