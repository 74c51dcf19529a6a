"""Small geometry helpers shared by registration, evaluation and the synthetic scans.

Rigid fits (Kabsch / Umeyama), normals, boundaries and flipped triangles are a few numpy/scipy lines
each; they work on raw arrays inside registration's inner loops, where building a ``trimesh.Trimesh``
(with its caches and validation) every iteration would cost more than the computation itself.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def rigid_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
              scale: bool = False) -> tuple[np.ndarray, np.ndarray, float | np.ndarray]:
    """Least-squares ``dst ≈ s R src + t`` (Kabsch; Umeyama when ``scale``): the one rigid fit.

    Args:
        src, dst: (..., N, k) corresponding points, k = 2 or 3; leading axes are a batch of fits.
        weights: (..., N) non-negative weights, or None.
        scale: also estimate a uniform scale ``s`` (otherwise ``s = 1``).

    Returns:
        ``(R (..., k, k), t (..., k), s)`` with ``det R = +1``; ``s`` a float, or (...,) for a batch.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    w = np.ones(src.shape[-2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.broadcast_to(w / w.sum(-1, keepdims=True), src.shape[:-1])
    mu_s, mu_d = np.einsum("...n,...nk->...k", w, src), np.einsum("...n,...nk->...k", w, dst)
    a, b = src - mu_s[..., None, :], dst - mu_d[..., None, :]
    R, trace = nearest_rotations(np.einsum("...n,...ni,...nj->...ij", w, b, a))
    s = trace / np.einsum("...n,...n->...", w, (a * a).sum(-1)) if scale else np.ones(trace.shape)
    t = mu_d - s[..., None] * np.einsum("...ij,...j->...i", R, mu_s)
    return R, t, (float(s) if s.ndim == 0 else s)


def nearest_rotations(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotations R (..., k, k) nearest to the matrices ``cov`` (..., k, k) (``argmax trace(Rᵀ cov)``,
    the core of Kabsch's fit), and that trace (...,).

    3 × 3 matrices take Newton's iteration for the polar factor (Higham's, scaled by |det|^(-1/3)), all at
    once: it converges in a few steps where a matrix is near a rotation, as a surface's local frames are,
    and costs half a batched SVD there. Singular matrices, those whose polar factor is a reflection and
    other sizes take the SVD, with the smallest direction turned.
    """
    cov = np.asarray(cov, dtype=np.float64)
    flat = cov.reshape(-1, *cov.shape[-2:])
    X = flat.copy()
    ok = np.zeros(len(X), bool)
    if cov.shape[-2:] == (3, 3):
        size = np.abs(X).reshape(len(X), -1).max(1)
        ok = np.linalg.det(X) > 1e-9 * size**3
        X[~ok] = np.eye(3)
        for _ in range(12):
            c0, c1, c2 = np.cross(X[:, 1], X[:, 2]), np.cross(X[:, 2], X[:, 0]), np.cross(X[:, 0], X[:, 1])
            det = (X[:, 0] * c0).sum(1)
            z = np.abs(det) ** (-1.0 / 3.0)
            new = 0.5 * (z[:, None, None] * X + np.stack([c0, c1, c2], 1) / (det * z)[:, None, None])  # X⁻ᵀ = cof / det
            done = np.abs(new - X).max() < 1e-13
            X = new
            if done:
                break
    trace = (X * flat).sum((1, 2))
    if (~ok).any():
        U, sv, Vt = np.linalg.svd(flat[~ok])
        sign = np.where(np.linalg.det(U @ Vt) < 0, -1.0, 1.0)
        U[:, :, -1] *= sign[:, None]
        sv[:, -1] *= sign
        X[~ok], trace[~ok] = U @ Vt, sv.sum(1)
    return X.reshape(cov.shape), trace.reshape(cov.shape[:-2])


def apply_rigid(points: np.ndarray, R: np.ndarray, t: np.ndarray, s: float = 1.0) -> np.ndarray:
    """``s R p + t`` for points (N, 3)."""
    return s * points @ R.T + t


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals (zero for unreferenced vertices)."""
    return _unit(_area_normals(vertices, faces))


def median_edge_length(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Median length of the triangles' first edges (vertices' units; 0 without triangles): a mesh's spacing."""
    if len(faces) == 0:
        return 0.0
    return float(np.median(np.linalg.norm(vertices[faces[:, 0]] - vertices[faces[:, 1]], axis=1)))


def vertex_adjacency(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, V) symmetric 0/1 sparse matrix with a 1 for every edge of the triangles ``faces`` (F, 3)."""
    A = edge_use(faces, n_vertices)
    A.data[:] = 1.0
    return A


def edge_use(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, V) symmetric sparse matrix: for every edge of the triangles ``faces`` (F, 3), how many
    triangles use it (1 on a border, 2 inside a manifold surface)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    rows, cols = np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))  # duplicates summed


#: Most neighbour-averaging passes :func:`smoothed_vertex_normals` makes (a 2M-vertex scan needs ~100
#: for 3 mm; 50 still average over ~2 mm). Smoothing a vertex-clustered copy instead was faster on a
#: 3.2M-vertex scan (prepare 12 s → 7 s) but its piecewise-constant normals cost accuracy (0.19 → 0.27 mm).
MAX_NORMAL_PASSES = 50


def _area_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) sums of the area-weighted normals of the triangles around each vertex (not normalised)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    n = np.zeros_like(vertices)
    for k in range(3):  # bincount-based scatter: much faster than np.add.at on large scans
        for d in range(3):
            n[:, d] += np.bincount(faces[:, k], weights=fn[:, d], minlength=len(vertices))
    return n


def _unit(n: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def smoothed_vertex_normals(vertices: np.ndarray, faces: np.ndarray, scale: float,
                            adjacency: sp.csr_matrix | None = None, edge: float | None = None) -> np.ndarray:
    """(V, 3) unit vertex normals averaged over about ``scale`` (vertices' units) of surface.

    Each pass replaces a normal by the mean of its own and its neighbours' (along the mesh's edges,
    so the two sides of a thin part do not mix); ``⌊(scale / median edge)²⌋`` passes (at most
    ``MAX_NORMAL_PASSES``) spread it over a patch about ``scale`` across, as diffusion does (none on a
    mesh coarser than ``scale``). On a dense noisy scan the plain vertex normals follow the noise
    (0.2 mm noise at 0.25 mm vertex spacing tilts them by ~28°), while what a fit needs is the
    surface's orientation at the scale of the model's own vertices. ``adjacency`` (:func:`vertex_adjacency`)
    and ``edge`` (:func:`median_edge_length`), where the caller has them.
    """
    n = vertex_normals(vertices, faces)
    if len(faces) == 0 or scale <= 0:
        return n
    edge = median_edge_length(vertices, faces) if edge is None else edge
    passes = _passes(edge, scale, MAX_NORMAL_PASSES)
    return _unit(_smoothed(n, _neighbour_mean(faces, len(vertices), adjacency), passes)) if passes else n


def _neighbour_mean(faces: np.ndarray, n_vertices: int, adjacency: sp.csr_matrix | None = None) -> sp.csr_matrix:
    """(V, V) the mean of each vertex's value and its neighbours' (rows average: magnitudes stay bounded)."""
    A = (vertex_adjacency(faces, n_vertices) if adjacency is None else adjacency) + sp.identity(n_vertices, format="csr")
    return sp.diags(1.0 / np.asarray(A.sum(1)).ravel()) @ A


def _passes(edge: float, scale: float, max_passes: int) -> int:
    """Averaging passes that spread a value over about ``scale`` of a surface whose median edge is ``edge``,
    as diffusion does: ``⌊(scale / edge)²⌋``, at most ``max_passes``."""
    return int(min(max_passes, np.floor((scale / max(edge, 1e-12)) ** 2)))


def _smoothed(values: np.ndarray, mean: sp.csr_matrix, passes: int) -> np.ndarray:
    for _ in range(passes):
        values = mean @ values
    return values


#: Most smoothing passes :func:`relief` makes per scale.
MAX_RELIEF_PASSES = 400


def relief(vertices: np.ndarray, faces: np.ndarray, fine: float, coarse: float) -> np.ndarray:
    """(V,) how far (vertices' units) each vertex stands out of its surroundings: the surface smoothed
    over ``fine`` (below: noise) minus the surface smoothed over ``coarse`` as well, along the coarse
    surface's normals. Positive on ridges and bumps (lips, brow ridges, the nose), negative in creases
    (the lip line, eye corners, nasolabial folds); independent of the tessellation."""
    if len(faces) == 0:
        return np.zeros(len(vertices))
    mean, edge = _neighbour_mean(faces, len(vertices)), median_edge_length(vertices, faces)
    fine_v = _smoothed(np.asarray(vertices, dtype=np.float64), mean, _passes(edge, fine, MAX_RELIEF_PASSES))
    coarse_v = _smoothed(fine_v, mean, _passes(edge, coarse, MAX_RELIEF_PASSES))
    return ((fine_v - coarse_v) * vertex_normals(coarse_v, faces)).sum(1)


def cluster_vertices(vertices: np.ndarray, faces: np.ndarray,
                     cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertex clustering: every vertex in one cube of side ``cell`` (vertices' units) merges into their mean.

    A coarse stand-in for a dense mesh where only its look matters (a render for a face detector): it
    never moves the surface by more than a cube, and it is one sort, not an optimisation like quadric
    decimation. Triangles whose corners fall in fewer than three cubes vanish.

    Returns:
        ``(new vertices (K, 3), new faces (G, 3), cluster of each old vertex (V,), index of each kept
        face in ``faces`` (G,))``; per-vertex data averages over the cluster map (:func:`cluster_mean`),
        per-face data (texture corners) is taken at the kept indices.
    """
    ijk = np.floor((vertices - vertices.min(0)) / cell).astype(np.int64)
    n = ijk.max(0) + 1
    key = (ijk[:, 0] * n[1] + ijk[:, 1]) * n[2] + ijk[:, 2]  # one integer per cube: a 1-D sort
    _, cluster = np.unique(key, return_inverse=True)
    cluster = cluster.ravel()
    merged = cluster_mean(cluster, vertices)
    f = cluster[faces]
    kept = np.flatnonzero((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
    return merged, f[kept], cluster, kept


def cluster_mean(cluster: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(K, C) mean of per-vertex ``values`` (V, C) over each cluster, ``cluster`` (V,) in 0..K-1."""
    count = np.bincount(cluster)
    return np.stack([np.bincount(cluster, weights=values[:, d], minlength=len(count))
                     for d in range(values.shape[1])], 1) / count[:, None]


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit triangle normals (zero for degenerate triangles)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    norm = np.linalg.norm(fn, axis=1, keepdims=True)
    return np.divide(fn, norm, out=np.zeros_like(fn), where=norm > 0)


def boundary_vertices(faces: np.ndarray, n_vertices: int, uses: sp.csr_matrix | None = None) -> np.ndarray:
    """(V,) bool: vertices on an edge used by only one triangle (holes, cut borders); ``uses``:
    :func:`edge_use`, where the caller has it."""
    uses = edge_use(faces, n_vertices) if uses is None else uses
    out = np.zeros(n_vertices, dtype=bool)
    out[np.repeat(np.arange(n_vertices), np.diff(uses.indptr))[uses.data == 1]] = True
    return out


def flipped_against(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray | None = None, *,
                    reference_normals: np.ndarray | None = None, below: float = 0.0) -> np.ndarray:
    """(F,) bool: triangles of ``vertices`` (V, 3) that face against the same triangles of ``reference``
    (V, 3), or against ``reference_normals`` (F, 3): the cosine between the normals is below ``below``
    (0: turned by more than 90°; a small positive margin also catches triangles standing on edge, and
    degenerate ones, whose normal is zero). The one flipped-triangle test of registration, its quality
    check and the benchmarks."""
    ref = face_normals(reference, faces) if reference_normals is None else reference_normals
    return (face_normals(vertices, faces) * ref).sum(1) < below


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) triangle areas (the vertices' unit squared)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    return 0.5 * np.linalg.norm(fn, axis=1)


def count_degenerate(vertices: np.ndarray, faces: np.ndarray, min_area: float = 1e-12) -> int:
    """Triangles with area below ``min_area`` (m²)."""
    return int((triangle_areas(vertices, faces) < min_area).sum())


def fan_triangles(counts: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
    """Fan triangulation of polygons with ``counts`` (P,) corners, the first at ``starts`` (P,) in a flat
    corner list (default: one polygon after the other): (T, 3) positions in that list, corners
    (0, k, k + 1) of each polygon. Polygons with fewer than 3 corners give no triangle."""
    counts = np.asarray(counts, dtype=np.int64)
    if starts is None:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ntri = np.maximum(counts - 2, 0)
    poly = np.repeat(np.arange(len(counts)), ntri)
    k = np.arange(ntri.sum()) - np.repeat(np.cumsum(ntri) - ntri, ntri)
    base = np.asarray(starts, dtype=np.int64)[poly]
    return np.stack([base, base + k + 1, base + k + 2], 1)


def ray_triangle_t(origins: np.ndarray, dirs: np.ndarray, triangles: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Möller–Trumbore: the parameter t at which rays ``origins + t dirs`` (..., 3) meet ``triangles``
    (..., 3, 3), all broadcast against each other (e.g. (K, 1, 3) rays against (L, 3, 3) triangles give
    (K, L)); ``inf`` where a ray misses (barycentric tolerance ``eps``; degenerate triangles miss)."""
    a = triangles[..., 0, :]
    e1, e2 = triangles[..., 1, :] - a, triangles[..., 2, :] - a
    d = np.broadcast_to(dirs, np.broadcast_shapes(np.shape(dirs), e1.shape))
    p = np.cross(d, e2)
    det = (e1 * p).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = origins - a
        u = (s * p).sum(-1) * inv
        q = np.cross(s, e1)
        v = (d * q).sum(-1) * inv
        t = (e2 * q).sum(-1) * inv
    ok = (np.abs(det) > 1e-18) & (u >= -eps) & (v >= -eps) & (u + v <= 1 + eps) & np.isfinite(t)
    return np.where(ok, t, np.inf)


def vertices_around(faces: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """Vertex indices of the ``flipped`` (F,) bool triangles' corners and of every triangle touching them
    (what a refinement holds or stiffens where a step would flip triangles)."""
    return np.unique(faces[np.isin(faces, np.unique(faces[flipped])).any(1)])


def wound_inward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """True when a surface's triangles (F, 3) are wound clockwise seen from outside, their normals
    pointing into the head: the signed volume they enclose with the vertices' median point is negative.
    Some exporters write scans this way. Holds for a whole head, a face or half of one (a camera pod's);
    a small patch of a saddle could go either way. The median keeps stray points from moving the centre;
    an even sample of at most :data:`WINDING_SAMPLE` triangles decides (the sign has a wide margin)."""
    sample = faces[:: max(1, len(faces) // WINDING_SAMPLE)]
    centre = np.median(vertices[sample[:, 0]], axis=0)
    a, b, c = ((vertices[sample[:, k]] - centre).T for k in range(3))
    # a · (b × c), written out: numpy's cross on (F, 3) arrays costs several times more
    volume = (a[0] * (b[1] * c[2] - b[2] * c[1]) + a[1] * (b[2] * c[0] - b[0] * c[2])
              + a[2] * (b[0] * c[1] - b[1] * c[0]))
    return float(volume.sum()) < 0.0


#: Triangles :func:`wound_inward` looks at, at most.
WINDING_SAMPLE = 20000
