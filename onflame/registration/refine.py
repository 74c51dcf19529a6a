"""Non-rigid refinement: move the FLAME fit onto the scan's detail where the scan has data.

Unknowns are per-vertex displacements D (V, 3) from the FLAME fit X. Each round pairs fit vertices with
scan points (:mod:`.correspond`) and solves the sparse linear least-squares problem

    Σ_i w_i (n_iᵀ (x_i + d_i − p_i))² + μ Σ_i w_i |x_i + d_i − p_i|²     (point-to-plane + a little point-to-point)
  + α |L D|²                                                            (smooth displacement field)
  + ε Σ_i |d_i|² + β Σ_{i fixed} |d_i|²                                  (stay on the fit; fixed regions stay exactly)

with L the mesh's graph Laplacian. Where the scan has no data only the last two lines act, so the
surface falls back smoothly to the FLAME fit; eyeballs are held fixed and stay round. The stiffness α is
lowered over the rounds, and a round that would flip a triangle is redone stiffer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..geometry import count_flipped, uniform_laplacian, vertex_normals
from .correspond import ScanIndex


@dataclass
class RefineSettings:
    """Schedule of the refinement (distances in metres).

    Attributes:
        stiffness: α per round, relative to the data term.
        radius: correspondence radius per round.
        point_weight: μ, the point-to-point share of the data term.
        anchor: ε, pull towards the FLAME fit everywhere.
    """

    stiffness: tuple[float, ...] = (30.0, 10.0, 3.0, 1.0)
    radius: tuple[float, ...] = (0.004, 0.003, 0.002, 0.002)
    point_weight: float = 0.05
    anchor: float = 1e-3


def refine(fit: np.ndarray, faces: np.ndarray, index: ScanIndex, region: np.ndarray, fixed: np.ndarray,
           settings: RefineSettings | None = None) -> tuple[np.ndarray, dict]:
    """Refine FLAME-fit vertices ``fit`` (V, 3) towards the scan.

    Args:
        fit: (V, 3) FLAME fit, same frame and units (metres) as ``index``.
        faces: (F, 3) model triangles.
        index: the scan.
        region: (V,) weights of vertices allowed to follow scan data (0: never).
        fixed: vertex indices held exactly at the fit (eyeballs).

    Returns:
        ``(vertices (V, 3), info)``; ``info`` has per-round matched counts and any stiffening.
    """
    s = settings or RefineSettings()
    V = len(fit)
    L = uniform_laplacian(faces, V)
    LtL = (L.T @ L).tocsr()
    eye3 = sp.identity(3, format="csr")
    smooth = sp.kron(LtL, eye3, format="csr")  # interleaved (x0, y0, z0, x1, ...) unknowns
    hold = np.full(V, s.anchor)
    hold[fixed] = 1e6
    cur = fit.copy()
    info = {"rounds": [], "stiffened": 0}
    for alpha, radius in zip(s.stiffness, s.radius):
        vn = vertex_normals(cur, faces)
        cand = np.flatnonzero(region > 0)
        m = index.match(cur[cand], vn[cand], radius, min_cos=0.6)
        src = cand[m.source]
        w = region[src]
        n = m.normal
        # data blocks: w (n nᵀ + μ I) per matched vertex; right side towards the scan point p
        blocks = w[:, None, None] * (n[:, :, None] * n[:, None, :] + s.point_weight * np.eye(3)[None])
        rows = (3 * src[:, None, None] + np.arange(3)[None, :, None]).repeat(3, 2)
        cols = (3 * src[:, None, None] + np.arange(3)[None, None, :]).repeat(3, 1)
        A_data = sp.coo_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * V, 3 * V)).tocsr()
        resid = m.target - cur[src]  # the displacement each matched vertex should take
        b = np.zeros(3 * V)
        np.add.at(b, (3 * src[:, None] + np.arange(3)).ravel(), np.einsum("kij,kj->ki", blocks, resid).ravel())
        scale = max(float(w.sum()), 1.0) / V  # keep α comparable whatever the coverage
        base = cur - fit  # displacement so far; regularisers act on the total displacement from the fit
        for attempt in range(4):
            a = alpha * scale * (4.0**attempt)
            A = A_data + a * smooth + sp.diags(np.repeat(hold * scale, 3))
            rhs = b - (a * smooth + sp.diags(np.repeat(hold * scale, 3))) @ base.ravel()
            step = spla.spsolve(A.tocsc(), rhs).reshape(V, 3)
            new = cur + step
            flips = count_flipped(faces, fit, new)
            if flips == 0:
                break
            info["stiffened"] += 1
        if flips:
            break  # keep the last flip-free surface
        cur = new
        info["rounds"].append({"alpha": alpha, "radius_m": radius, "matched": int(len(src))})
    return cur, info
