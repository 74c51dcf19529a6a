"""Triangle rasterization with a z-buffer, vectorised in numpy.

Every triangle lists the pixel centres inside its screen bounding box (flat arrays, no Python loop per
triangle), tests them with edge functions, and the nearest candidate per pixel wins. Triangles are
processed in chunks that bound the number of candidates held at once, so a 10⁶-triangle scan and a
12-triangle cube that fills the image both run in bounded memory.

A pixel belongs to a triangle when its centre lies inside it or on its edge; pixels on an edge shared by
two triangles go to the nearer one (either, at equal depth), so coverage is exact up to edge pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Candidates (pixel, triangle) evaluated at once; ~100 bytes each.
_CHUNK = 2_000_000


@dataclass
class Fragments:
    """What each pixel sees.

    Attributes:
        face: (H, W) int64 index of the visible triangle, -1 for background.
        bary: (H, W, 3) weights of that triangle's corners at the pixel centre (perspective-correct: they
            interpolate 3D positions and vertex attributes exactly); 0 for background.
        depth: (H, W) camera-z distance (metres) of the visible surface, ``inf`` for background.
    """

    face: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by the mesh."""
        return self.face >= 0

    def interpolate(self, values: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(H, W, C) per-vertex ``values`` (V, C) interpolated at each covered pixel (0 for background)."""
        values = np.asarray(values, dtype=np.float64)
        out = np.zeros(self.face.shape + values.shape[1:])
        m = self.mask
        corners = values[np.asarray(faces)[self.face[m]]]  # (P, 3, C)
        out[m] = np.einsum("pk,pkc->pc", self.bary[m], corners)
        return out


def rasterize(screen: np.ndarray, faces: np.ndarray, width: int, height: int, perspective: bool = False,
              cull_backfaces: bool = False) -> Fragments:
    """Rasterize triangles given in screen space.

    Args:
        screen: (V, 3) vertices as ``(x_px, y_px, depth_m)`` (see :meth:`~onflame.render.camera.Camera.project`).
        faces: (F, 3) vertex indices.
        width, height: image size in pixels.
        perspective: depths come from a pinhole camera: interpolate ``1/depth`` and correct the
            barycentric weights for perspective. Triangles with a corner at or behind the camera are
            dropped (no near-plane clipping: the renderer frames whole objects in front of the camera).
        cull_backfaces: drop triangles whose corners appear clockwise on screen, i.e. counter-clockwise
            triangles (outward normals) facing away from the camera.

    Returns:
        :class:`Fragments`.
    """
    screen = np.asarray(screen, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    H, W = int(height), int(width)
    depth = np.full(H * W, np.inf)
    face_buf = np.full(H * W, -1, dtype=np.int64)
    bary_buf = np.zeros((H * W, 3))

    tri = screen[faces]  # (F, 3 corners, xyz)
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ok = np.isfinite(tri).all((1, 2)) & (np.abs(area2) > 1e-12)
    if perspective:
        ok &= (tri[:, :, 2] > 0).all(1)
    if cull_backfaces:
        ok &= area2 < 0  # y points down: a triangle counter-clockwise seen from the camera has area2 < 0
    # pixel columns/rows whose centres (i + 0.5) may fall inside: i from ceil(min - 0.5) to floor(max - 0.5)
    x0 = np.clip(np.ceil(tri[:, :, 0].min(1) - 0.5), 0, W).astype(np.int64)
    x1 = np.clip(np.floor(tri[:, :, 0].max(1) - 0.5), -1, W - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri[:, :, 1].min(1) - 0.5), 0, H).astype(np.int64)
    y1 = np.clip(np.floor(tri[:, :, 1].max(1) - 0.5), -1, H - 1).astype(np.int64)
    nx, ny = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    ok &= (nx > 0) & (ny > 0)
    ids = np.flatnonzero(ok)
    counts = (nx * ny)[ids]

    # edge functions as affine maps of the pixel centre: w0 = a0 x + b0 y + c0 (weight of corner 0), w1 alike
    x, y = tri[:, :, 0], tri[:, :, 1]
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate triangles are never used
        inv = 1.0 / area2
        coef = np.stack([
            (y[:, 1] - y[:, 2]) * inv, (x[:, 2] - x[:, 1]) * inv, (x[:, 1] * y[:, 2] - y[:, 1] * x[:, 2]) * inv,
            (y[:, 2] - y[:, 0]) * inv, (x[:, 0] - x[:, 2]) * inv, (x[:, 2] * y[:, 0] - y[:, 2] * x[:, 0]) * inv,
        ])

    start = 0
    cum = np.cumsum(counts)
    while start < len(ids):
        # the largest run of triangles whose candidates fit in one chunk (at least one triangle)
        base = cum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, base + _CHUNK, side="right")))
        _raster_chunk(coef, tri[:, :, 2], ids[start:stop], counts[start:stop], x0, y0, nx, W, perspective,
                      depth, face_buf, bary_buf)
        start = stop
    return Fragments(face_buf.reshape(H, W), bary_buf.reshape(H, W, 3), depth.reshape(H, W))


def _raster_chunk(coef: np.ndarray, z: np.ndarray, ids: np.ndarray, counts: np.ndarray, x0: np.ndarray,
                  y0: np.ndarray, nx: np.ndarray, W: int, perspective: bool, depth: np.ndarray,
                  face_buf: np.ndarray, bary_buf: np.ndarray) -> None:
    """Candidates of triangles ``ids`` into the z-buffer (``depth``, ``face_buf``, ``bary_buf`` updated in place).

    ``coef`` (6, F): edge-function coefficients; ``z`` (F, 3): corner depths.
    """
    t = np.repeat(ids, counts)
    k = np.arange(len(t)) - np.repeat(np.cumsum(counts) - counts, counts)
    n = nx[t]
    px = x0[t] + k % n
    py = y0[t] + k // n
    cx, cy = px + 0.5, py + 0.5
    w0 = coef[0, t] * cx + coef[1, t] * cy + coef[2, t]
    w1 = coef[3, t] * cx + coef[4, t] * cy + coef[5, t]
    eps = -1e-9
    inside = (w0 >= eps) & (w1 >= eps) & (w0 + w1 <= 1.0 - eps)
    if not inside.any():
        return
    w0, w1, t = w0[inside], w1[inside], t[inside]
    pix = (py * W + px)[inside]
    w = np.column_stack([w0, w1, 1.0 - w0 - w1])
    zt = z[t]
    if perspective:  # 1/z is affine in screen space; attributes are affine after dividing by z
        wz = w / zt
        s = wz.sum(1)
        zz = 1.0 / s
        w = wz / s[:, None]
    else:
        zz = (w * zt).sum(1)
    # z-test: the buffer keeps each pixel's minimum; a candidate equal to it after the update is visible
    np.minimum.at(depth, pix, zz)
    win = np.flatnonzero(zz <= depth[pix])
    # one winner per pixel (ties at shared edges: any), written through a single index array so that
    # triangle and weights come from the same candidate
    slot = np.full(len(depth), -1, dtype=np.int64)
    slot[pix[win]] = win
    chosen = slot[slot >= 0]
    face_buf[pix[chosen]] = t[chosen]
    bary_buf[pix[chosen]] = w[chosen]
