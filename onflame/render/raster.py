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

    start = 0
    cum = np.cumsum(counts)
    while start < len(ids):
        # the largest run of triangles whose candidates fit in one chunk (at least one triangle)
        base = cum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, base + _CHUNK, side="right")))
        _raster_chunk(tri, area2, ids[start:stop], counts[start:stop], x0, y0, nx, W, perspective,
                      depth, face_buf, bary_buf)
        start = stop
    return Fragments(face_buf.reshape(H, W), bary_buf.reshape(H, W, 3), depth.reshape(H, W))


def _raster_chunk(tri: np.ndarray, area2: np.ndarray, ids: np.ndarray, counts: np.ndarray, x0: np.ndarray,
                  y0: np.ndarray, nx: np.ndarray, W: int, perspective: bool, depth: np.ndarray,
                  face_buf: np.ndarray, bary_buf: np.ndarray) -> None:
    """Candidates of triangles ``ids`` into the z-buffer (``depth``, ``face_buf``, ``bary_buf`` updated in place)."""
    t = np.repeat(ids, counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(len(t)) - offsets
    px = x0[t] + k % nx[t]
    py = y0[t] + k // nx[t]
    cx, cy = px + 0.5, py + 0.5
    T = tri[t]
    # screen-space barycentrics from edge functions: w0 is the weight of corner 0, etc.
    inv = 1.0 / area2[t]
    w0 = ((T[:, 1, 0] - cx) * (T[:, 2, 1] - cy) - (T[:, 1, 1] - cy) * (T[:, 2, 0] - cx)) * inv
    w1 = ((T[:, 2, 0] - cx) * (T[:, 0, 1] - cy) - (T[:, 2, 1] - cy) * (T[:, 0, 0] - cx)) * inv
    w2 = 1.0 - w0 - w1
    eps = -1e-9
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    w = np.column_stack([w0, w1, w2])[inside]
    T, t = T[inside], t[inside]
    pix = (py * W + px)[inside]
    z = T[:, :, 2]
    if perspective:  # 1/z is affine in screen space; attributes are affine after dividing by z
        wz = w / z
        s = wz.sum(1)
        zz = 1.0 / s
        w = wz / s[:, None]
    else:
        zz = (w * z).sum(1)
    if not len(pix):
        return
    order = np.lexsort((zz, pix))  # by pixel, nearest first
    pix, zz, t, w = pix[order], zz[order], t[order], w[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    pix, zz, t, w = pix[first], zz[first], t[first], w[first]
    nearer = zz < depth[pix]
    pix = pix[nearer]
    depth[pix] = zz[nearer]
    face_buf[pix] = t[nearer]
    bary_buf[pix] = w[nearer]
