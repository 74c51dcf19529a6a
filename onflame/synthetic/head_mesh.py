"""Meshing the procedural head: rays from inside the head find the surface of :func:`.head_solid.head_sdf`.

The head surface is a grid of columns (fixed directions around the vertical axis, dense at the face and
the ears) and rows (rings from the crown down to the neck's open rim). Along each column the surface is
sampled densely, cut at the rim plane, and the rows are placed at equal *weighted* arc length, so the
face gets small triangles, the back of the head large ones, and steep parts (nose sides, throat) are not
stretched. Rings near the crown and on the neck skip columns so the triangles there are not slivers.
The two eyeballs are separate closed UV spheres whose poles look along +z, as FLAME's.

Vertex order: head (crown vertex, then ring by ring), left eyeball, right eyeball.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import anatomy as A
from .head_regions import sigmoid
from .head_solid import head_sdf

#: Columns around the head (a multiple of 8), rows from the crown to the rim, eyeball rings and segments.
N_COLUMNS = 88
N_ROWS = 64
EYE_RINGS = 12
EYE_SEGMENTS = 18


@dataclass
class HeadMesh:
    """The procedural head's triangle mesh.

    Attributes:
        vertices: (V, 3) float64, metres.
        faces: (F, 3) int64, counter-clockwise seen from outside.
        head: (Vh,) indices of the head surface (vertices ``0 .. Vh-1``).
        eyeballs: (2, Ve) indices of the left then right eyeball.
        rim: indices of the neck's open rim, in ring order.
        ring: (V,) ring number of each head vertex (0 = crown, ``N_ROWS`` = rim), -1 on eyeballs.
    """

    vertices: np.ndarray
    faces: np.ndarray
    head: np.ndarray
    eyeballs: np.ndarray
    rim: np.ndarray
    ring: np.ndarray


def column_angles(n: int = N_COLUMNS) -> np.ndarray:
    """(n,) azimuths in [0, 2 pi), 0 = straight ahead (+z), pi/2 = the subject's left (+x).

    Columns are spaced by equal mass of a density that is about 5x higher at the face and 2x at the
    ears; the set is mirror symmetric (column ``j`` mirrors column ``n - j``).
    """
    phi = np.linspace(0.0, np.pi, 4001)
    dens = 1.0 + 4.0 * np.exp(-0.5 * (phi / 0.62) ** 2) + 1.2 * np.exp(-0.5 * ((phi - np.pi / 2) / 0.22) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(phi))])
    half = np.interp(np.arange(n // 2 + 1) / (n // 2) * cdf[-1], cdf, phi)
    return np.concatenate([half, 2.0 * np.pi - half[-2:0:-1]])


def directions(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) at polar angle ``theta`` from +y and azimuth ``phi`` from +z toward +x."""
    st = np.sin(theta)
    return np.stack(np.broadcast_arrays(st * np.sin(phi), np.cos(theta), st * np.cos(phi)), -1)


def ray_origins(theta: np.ndarray) -> np.ndarray:
    """Origins (..., 3) of the rays at polar angles ``theta``: the head's centre, sliding 9 cm down the
    neck for rays pointing below the jaw, so those meet the throat and neck less obliquely.

    Rays in one column never cross: a lower origin always goes with a steeper downward ray.
    """
    x = np.clip((np.asarray(theta) - np.radians(100.0)) / (np.pi - np.radians(100.0)), 0.0, 1.0)
    drop = 0.09 * x * x * (3.0 - 2.0 * x)
    return A.RAY_ORIGIN - drop[..., None] * np.array([0.0, 1.0, 0.0])


def surface_along_rays(origin: np.ndarray, dirs: np.ndarray, t_max: float = 0.26) -> np.ndarray:
    """Distance (R,) from ``origin`` ((3,) or (R, 3)) to the outermost surface crossing along each unit
    ray ``dirs`` (R, 3).

    Sphere-traces inward from ``t_max`` (the solid's value approximates the distance to its surface;
    steps are 90 % of it, at least 1 mm, so only parts thinner than 1 mm along a ray could be missed),
    then bisects the last step to 1e-6 m. A ray still inside at ``t_max`` (down the neck) returns
    ``t_max``. The origins must be inside the head.
    """
    origin = np.broadcast_to(origin, dirs.shape)
    t_out = np.full(len(dirs), t_max)
    t_in = np.full(len(dirs), np.nan)
    d = head_sdf(origin + t_out[:, None] * dirs)
    idx = np.nonzero(d > 0)[0]
    t_in[d <= 0] = t_max
    for _ in range(80):
        if not idx.size:
            break
        t_new = t_out[idx] - np.maximum(0.9 * d[idx], 1e-3)
        d_new = head_sdf(origin[idx] + t_new[:, None] * dirs[idx])
        hit = d_new <= 0
        t_in[idx[hit]] = t_new[hit]
        t_out[idx[~hit]], d[idx[~hit]] = t_new[~hit], d_new[~hit]
        idx = idx[~hit]
    t_in[idx] = 0.0  # not reached after 80 steps (never seen): bracket with the origin, which is inside
    a, b = t_in, np.where(t_in < t_max, t_out, t_max)  # inside, outside
    for _ in range(12):  # the last step is at most a few mm: 12 halvings reach ~1e-6 m
        m = 0.5 * (a + b)
        ins = head_sdf(origin + m[:, None] * dirs) <= 0
        a, b = np.where(ins, m, a), np.where(ins, b, m)
    return 0.5 * (a + b)


def detail_weight(p: np.ndarray) -> np.ndarray:
    """How densely to sample the surface at ``p`` (N, 3): 1 on the skull and neck, 5 on the face, 7 at the eyes."""
    rel = p - A.RAY_ORIGIN
    rel /= np.linalg.norm(rel, axis=-1, keepdims=True)
    face_axis = np.array([0.0, -0.05, 1.0]) / np.hypot(1.0, 0.05)
    angle = np.arccos(np.clip(rel @ face_axis, -1.0, 1.0))
    q = p.copy()
    q[:, 0] = np.abs(q[:, 0])
    ear = np.exp(-0.5 * np.sum((q - A.EAR_CENTRE) ** 2, -1) / 0.025**2)
    eye = np.exp(-0.5 * np.sum((q - A.EYE_CENTRE) ** 2, -1) / 0.015**2)
    below_chin = sigmoid((-0.094 - p[:, 1]) / 0.004)
    face = np.exp(-0.5 * (angle / 0.62) ** 4) * (1.0 - below_chin) * sigmoid(p[:, 2] / 0.01)
    throat = below_chin * sigmoid((p[:, 2] + 0.03) / 0.015)
    return 1.0 + 4.0 * face + 1.5 * ear + 1.5 * throat + 2.0 * eye


def _row_grid(phis: np.ndarray, n_rows: int, n_dense: int = 160) -> np.ndarray:
    """Positions (columns, n_rows, 3) of rows 1..n_rows of every column (row ``n_rows`` on the rim).

    Each column is sampled at ``n_dense`` polar angles and cut where it first crosses the rim plane;
    rows sit at equal steps of weighted arc length. The rows' polar angles, as fractions of the
    column's length, are then smoothed across neighbouring columns: otherwise a column that runs over
    the nose would have its rows shifted against its neighbours', shearing the triangles between them.
    """
    theta = np.linspace(0.0, np.pi - 0.02, n_dense)
    dirs = directions(theta[None, :], phis[:, None])                       # (C, D, 3)
    origins = np.broadcast_to(ray_origins(theta)[None], dirs.shape)
    t = surface_along_rays(origins.reshape(-1, 3), dirs.reshape(-1, 3)).reshape(len(phis), n_dense)
    pts = origins + t[..., None] * dirs
    side = (pts - A.NECK_RIM_POINT) @ A.NECK_RIM_NORMAL
    ratio = np.empty((len(phis), n_rows))
    theta_rim = np.empty(len(phis))
    for j in range(len(phis)):
        k = int(np.argmax(side[j] < 0))
        f = side[j, k - 1] / (side[j, k - 1] - side[j, k])
        theta_rim[j] = theta[k - 1] + f * (theta[k] - theta[k - 1])
        th = np.append(theta[:k], theta_rim[j])
        p = np.concatenate([pts[j, :k], [pts[j, k - 1] + f * (pts[j, k] - pts[j, k - 1])]])
        w = detail_weight(0.5 * (p[1:] + p[:-1])) * np.linalg.norm(np.diff(p, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(w)])
        ratio[j] = np.interp(np.arange(1, n_rows + 1) / n_rows * s[-1], s, th) / theta_rim[j]
    # circular Gaussian smoothing over columns (sigma: 3 columns); row n_rows stays exactly on the rim
    off = np.arange(-9, 10)
    kern = np.exp(-0.5 * (off / 3.0) ** 2)
    kern /= kern.sum()
    ratio = sum(kv * np.roll(ratio, o, axis=0) for o, kv in zip(off, kern))
    ratio[:, -1] = 1.0
    out = np.empty((len(phis), n_rows, 3))
    for j in range(len(phis)):
        th = ratio[j] * theta_rim[j]
        for i in range(3):
            out[j, :, i] = np.interp(th, theta, pts[j, :, i])
    return out


def _ring_columns(grid: np.ndarray, crown: np.ndarray, min_ratio: float = 0.55) -> list[np.ndarray]:
    """Which columns each ring keeps, so ring triangles are not much narrower than tall.

    The columns are dense where the face is, which is too dense near the crown (all columns meet there)
    and on the neck (few rows). Walking half a ring from the front midline, a column is kept once it is
    at least ``min_ratio`` times the local row spacing away from the last kept one; the other half
    mirrors it, so the mesh stays left-right symmetric.
    """
    n_cols, n_rows = grid.shape[:2]
    half = n_cols // 2
    prev = np.concatenate([np.broadcast_to(crown, (n_cols, 1, 3)), grid[:, :-1]], 1)
    up = np.linalg.norm(grid - prev, axis=-1)                       # (C, R) distance to the ring above
    down = np.concatenate([up[:, 1:], up[:, -1:]], 1)
    height = 0.5 * (up + down)
    chord = np.linalg.norm(np.roll(grid, -1, axis=0) - grid, axis=-1)  # column j to j + 1
    kept = []
    for r in range(n_rows):
        keep, gap = [0], 0.0
        for j in range(1, half + 1):
            gap += chord[j - 1, r]
            if gap >= min_ratio * height[j, r] or j == half:
                if j == half and keep[-1] != 0 and gap < 0.5 * min_ratio * height[j, r]:
                    keep.pop()  # too close to the back midline, which is always kept
                keep.append(j)
                gap = 0.0
        keep_arr = np.array(keep)
        kept.append(np.concatenate([keep_arr, n_cols - keep_arr[-2:0:-1]]))
    return kept


def _zip_rings(a: np.ndarray, pa: np.ndarray, b: np.ndarray, pb: np.ndarray,
               pos: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangles joining ring ``a`` (azimuths ``pa``, ascending from 0) to the ring ``b`` below it.

    Walks both rings around, always advancing the ring whose next vertex comes first; at ties (a quad)
    the shorter diagonal is used.
    """
    tris = []
    i = j = 0
    na, nb = len(a), len(b)
    dist = lambda u, w: np.linalg.norm(pos[u] - pos[w])  # noqa: E731
    while i < na or j < nb:
        na_phi = pa[i + 1] if i + 1 < na else 2 * np.pi
        nb_phi = pb[j + 1] if j + 1 < nb else 2 * np.pi
        tie = abs(na_phi - nb_phi) <= 1e-12
        if i < na and (j >= nb or na_phi < nb_phi - 1e-12 or (
                tie and dist(a[(i + 1) % na], b[j % nb]) <= dist(a[i % na], b[(j + 1) % nb]))):
            tris.append((a[i % na], b[j % nb], a[(i + 1) % na]))
            i += 1
        else:
            tris.append((a[i % na], b[j % nb], b[(j + 1) % nb]))
            j += 1
    return tris


def uv_sphere(centre: np.ndarray, radius: float, rings: int = EYE_RINGS,
              segments: int = EYE_SEGMENTS) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere, poles on the z axis (front pole first): vertices (N, 3), faces (F, 3) outward."""
    theta = np.arange(1, rings + 1) * np.pi / (rings + 1)
    phi = np.arange(segments) * 2 * np.pi / segments
    t, f = np.meshgrid(theta, phi, indexing="ij")
    ring_pts = np.stack([np.sin(t) * np.cos(f), np.sin(t) * np.sin(f), np.cos(t)], -1).reshape(-1, 3)
    v = np.concatenate([[[0.0, 0.0, 1.0]], ring_pts, [[0.0, 0.0, -1.0]]]) * radius + centre
    faces = []
    idx = lambda r, s: 1 + r * segments + s % segments  # noqa: E731
    for s in range(segments):
        faces.append((0, idx(0, s), idx(0, s + 1)))
        for r in range(rings - 1):
            faces.append((idx(r, s), idx(r + 1, s), idx(r + 1, s + 1)))
            faces.append((idx(r, s), idx(r + 1, s + 1), idx(r, s + 1)))
        faces.append((len(v) - 1, idx(rings - 1, s + 1), idx(rings - 1, s)))
    faces = np.array(faces, dtype=np.int64)
    # make the winding outward whatever the angle conventions above
    tri = v[faces] - centre
    if np.einsum("fi,fi->f", np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), tri.mean(1)).sum() < 0:
        faces = faces[:, ::-1].copy()
    return v, faces


def build_head_mesh(n_columns: int = N_COLUMNS, n_rows: int = N_ROWS) -> HeadMesh:
    """Mesh the mean head and its eyeballs (deterministic; about 0.4 s)."""
    phis = column_angles(n_columns)
    grid = _row_grid(phis, n_rows)  # (columns, rows, 3)
    up = np.array([[0.0, 1.0, 0.0]])
    crown = A.RAY_ORIGIN + surface_along_rays(A.RAY_ORIGIN, up)[:, None] * up
    columns = _ring_columns(grid, crown[0])
    positions = [crown]
    ring_of = [np.zeros(1, dtype=np.int64)]
    rings: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(1, dtype=np.int64), np.zeros(1))]
    count = 1
    for r in range(n_rows):
        cols = columns[r]
        idx = np.arange(count, count + len(cols))
        positions.append(grid[cols, r])
        ring_of.append(np.full(len(cols), r + 1))
        rings.append((idx, phis[cols]))
        count += len(cols)
    v_head = np.concatenate(positions)
    tris: list[tuple[int, int, int]] = []
    first_idx = rings[1][0]
    for j in range(len(first_idx)):  # fan around the crown
        tris.append((0, first_idx[j], first_idx[(j + 1) % len(first_idx)]))
    for r in range(1, n_rows):
        tris += _zip_rings(rings[r][0], rings[r][1], rings[r + 1][0], rings[r + 1][1], v_head)
    f_head = np.array(tris, dtype=np.int64)
    if _signed_volume(v_head, f_head, rings[-1][0]) < 0:
        f_head = f_head[:, ::-1].copy()

    verts, faces, eyeballs = [v_head], [f_head], []
    n = len(v_head)
    for centre in A.eye_centres():
        ve, fe = uv_sphere(centre, A.EYEBALL_RADIUS)
        verts.append(ve)
        faces.append(fe + n)
        eyeballs.append(np.arange(n, n + len(ve)))
        n += len(ve)
    ring = np.full(n, -1, dtype=np.int64)
    ring[: len(v_head)] = np.concatenate(ring_of)
    return HeadMesh(np.concatenate(verts), np.concatenate(faces), np.arange(len(v_head)), np.stack(eyeballs),
                    rings[-1][0], ring)


def _signed_volume(v: np.ndarray, f: np.ndarray, rim: np.ndarray) -> float:
    """Volume enclosed by the head surface with its open rim closed by a fan (positive if outward)."""
    c = v[rim].mean(0)
    t = v[f] - c
    return float(np.einsum("fi,fi->f", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)
