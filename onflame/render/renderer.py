"""Render a mesh to an RGB image, and map image points back onto the mesh surface."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..geometry import ray_triangle_t, vertex_normals
from .camera import Camera
from .raster import Fragments, rasterize
from .shading import SKIN_ALBEDO, lambert, load_texture, sample_texture

#: Default lights in camera coordinates (x right, y down, z forward), from the surface towards the
#: light: a key light above and left of the camera and a weaker fill from the right, so that relief
#: (nose, brows, lips) shows as it does in a studio photo.
DEFAULT_LIGHTS = np.array([[-0.35, -0.45, -0.82], [0.45, -0.1, -0.89]])


@dataclass
class Rendering:
    """An image of a mesh and, per pixel, the surface it shows.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        fragments: visible triangle, barycentric weights and depth per pixel.
        camera: the camera used.
        vertices: (V, 3) the mesh's vertices (metres, world); faces: (F, 3).
    """

    image: np.ndarray
    fragments: Fragments
    camera: Camera
    vertices: np.ndarray
    faces: np.ndarray
    _incidence: sp.csr_matrix | None = field(default=None, init=False, repr=False)

    def _rings(self, faces_idx: np.ndarray) -> np.ndarray:
        """(K, L) every triangle sharing a vertex with row k's triangles ``faces_idx`` (K, C) (-1: none;
        rows padded with -1)."""
        if self._incidence is None:  # vertex -> triangles, built once per rendering when first needed
            F = len(self.faces)
            self._incidence = sp.csr_matrix((np.ones(3 * F), (self.faces.ravel(), np.repeat(np.arange(F), 3))),
                                            shape=(len(self.vertices), F))
        K = len(faces_idx)
        corners = np.where(faces_idx[..., None] >= 0, self.faces[np.maximum(faces_idx, 0)], -1).reshape(K, -1)
        row, col = np.nonzero(corners >= 0)
        # one sparse product: row k's corner vertices -> their triangles
        pick = sp.csr_matrix((np.ones(len(row)), (row, corners[row, col])), shape=(K, len(self.vertices)))
        ring = (pick @ self._incidence).tocsr()
        width = max(1, int(np.diff(ring.indptr).max(initial=0)))
        out = np.full((K, width), -1, dtype=np.int64)
        r = np.repeat(np.arange(K), np.diff(ring.indptr))
        out[r, np.arange(len(r)) - ring.indptr[r]] = ring.indices
        return out

    def lift(self, pixels: np.ndarray, search_px: float = 0.0,
             max_depth: float | np.ndarray = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Surface points (N, 3) seen at continuous pixel positions ``pixels`` (N, 2) ``(x, y)``.

        The viewing ray through each position is intersected with the triangles visible at that pixel
        and its 8 neighbours (and their vertex neighbours if need be); the nearest hit wins, so points
        are exact below the pixel size. A position over background, a hole, or surface deeper than
        ``max_depth`` (camera z, metres: e.g. the inside of an open mouth seen between the lips) takes
        the nearest acceptable pixel within ``search_px`` pixels instead, its surface point at the pixel
        centre. ``max_depth`` is one limit for all positions or one per position (N,). Returns
        ``(points, hit)``, ``hit`` (N,) False where nothing was found (points NaN).
        """
        pix = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        H, W = self.fragments.face.shape
        limit = np.broadcast_to(np.asarray(max_depth, dtype=np.float64), (len(pix),))
        col = np.floor(pix[:, 0]).astype(np.int64)
        row = np.floor(pix[:, 1]).astype(np.int64)
        inside = (col >= 0) & (col < W) & (row >= 0) & (row < H) & np.isfinite(pix).all(1)
        depth, face_buf = self.fragments.depth, self.fragments.face

        def usable_face(r: np.ndarray, c: np.ndarray, lim: np.ndarray) -> np.ndarray:
            r, c = np.clip(r, 0, H - 1), np.clip(c, 0, W - 1)
            return np.where(depth[r, c] <= lim, face_buf[r, c], -1)

        face = np.full(len(pix), -1, dtype=np.int64)
        face[inside] = usable_face(row[inside], col[inside], limit[inside])
        points = np.full((len(pix), 3), np.nan)

        hit = face >= 0
        if hit.any():
            # the pixel's own triangle, or a neighbour's when the exact position lies just past its edge
            rr, cc, lim = row[hit], col[hit], limit[hit]
            cand = np.stack([usable_face(rr + dr, cc + dc, lim) for dr in (0, -1, 1) for dc in (0, -1, 1)],
                            axis=1)  # (K, 9), own first
            origins, dirs = self.camera.rays(pix[hit])
            s_best = _ray_triangle(origins, dirs, self.vertices, self.faces, cand).min(1)
            # triangles smaller than a pixel may be visible at no pixel centre: try the visible
            # triangles' vertex neighbours too (few rays need it)
            miss = np.flatnonzero(~np.isfinite(s_best))
            if len(miss):
                rings = self._rings(cand[miss])
                s_best[miss] = _ray_triangle(origins[miss], dirs[miss], self.vertices, self.faces, rings).min(1)
            # no exact hit (a grazing ray, a silhouette): the pixel centre's surface point
            found = np.isfinite(s_best)
            lifted = np.einsum("nk,nkd->nd", self.fragments.bary[rr, cc], self.vertices[self.faces[face[hit]]])
            lifted[found] = origins[found] + s_best[found, None] * dirs[found]
            points[hit] = lifted

        missing = np.flatnonzero(~hit & np.isfinite(pix).all(1))
        if len(missing) and search_px > 0:
            # the nearest covered pixel within reach, searched in a window around each missed position
            r = int(np.ceil(search_px))
            off = np.arange(-r, r + 1)
            wr = (row[missing, None, None] + off[None, :, None]).repeat(len(off), 2)   # (M, w, w)
            wc = (col[missing, None, None] + off[None, None, :]).repeat(len(off), 1)
            on = (wr >= 0) & (wr < H) & (wc >= 0) & (wc < W)
            wr, wc = np.clip(wr, 0, H - 1), np.clip(wc, 0, W - 1)
            ok = on & (face_buf[wr, wc] >= 0) & (depth[wr, wc] <= limit[missing, None, None])
            dist = np.hypot(wc + 0.5 - pix[missing, 0, None, None], wr + 0.5 - pix[missing, 1, None, None])
            dist = np.where(ok & (dist <= search_px), dist, np.inf).reshape(len(missing), -1)
            best = dist.argmin(1)
            found = np.isfinite(dist[np.arange(len(missing)), best])
            m, b = missing[found], best[found]
            rr, cc = wr.reshape(len(missing), -1)[found, b], wc.reshape(len(missing), -1)[found, b]
            corners = self.vertices[self.faces[face_buf[rr, cc]]]
            points[m] = np.einsum("nk,nkd->nd", self.fragments.bary[rr, cc], corners)
            hit[m] = True
        return points, hit


def _ray_triangle(origins: np.ndarray, dirs: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                  cand: np.ndarray) -> np.ndarray:
    """(K, C) ray parameter where ray k meets candidate triangle ``cand[k, c]`` (``inf``: no hit or ``-1``).

    Vectorised over rays and candidates; edges count as hits (a small tolerance).
    """
    tri = vertices[faces[np.maximum(cand, 0)]]  # (K, C, 3, 3)
    return np.where(cand >= 0, ray_triangle_t(origins[:, None], dirs[:, None], tri, eps=1e-9), np.inf)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, camera: Camera, *, colors: np.ndarray | None = None,
                uv: np.ndarray | None = None, face_uv: np.ndarray | None = None,
                texture: np.ndarray | str | os.PathLike | None = None,
                albedo: tuple[float, float, float] = SKIN_ALBEDO, lights: np.ndarray | None = None,
                ambient: float = 0.25, shade: bool = True, background: tuple[int, int, int] = (255, 255, 255),
                cull_backfaces: bool = False, normals: np.ndarray | None = None) -> Rendering:
    """Render a triangle mesh with a z-buffer.

    Colour, first available: ``texture`` looked up through ``uv`` (T, 2) and ``face_uv`` (F, 3); per-vertex
    ``colors`` (V, 3) in [0, 1]; the uniform ``albedo``. With ``shade`` the colour is multiplied by
    Lambert lighting (smooth vertex normals; ``lights`` (L, 3) in camera coordinates, see
    ``DEFAULT_LIGHTS``); without, the flat colour is drawn (e.g. a colour-coded error map).

    Args:
        vertices: (V, 3) metres (any consistent unit works: nothing depends on scale but the camera).
        faces: (F, 3) vertex indices.
        camera: see :class:`~onflame.render.camera.Camera` and :func:`~onflame.render.camera.framing`.
        background: RGB of empty pixels.
        normals: (V, 3) unit vertex normals for the shading; None computes them from the triangles (a
            dense noisy scan renders speckled with those: pass smoothed ones).

    Returns:
        :class:`Rendering`.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    frag = rasterize(camera.project(vertices), faces, camera.width, camera.height,
                     perspective=not camera.orthographic, cull_backfaces=cull_backfaces)
    m = frag.mask
    b = frag.bary[m]
    f = frag.face[m]
    if texture is not None and uv is not None and face_uv is not None:
        tex_uv = np.einsum("pk,pkc->pc", b, np.asarray(uv, dtype=np.float64)[np.asarray(face_uv)[f]])
        colour = sample_texture(load_texture(texture), tex_uv)
    elif colors is not None:
        colour = np.einsum("pk,pkc->pc", b, np.asarray(colors, dtype=np.float64)[faces[f]])
    else:
        colour = np.broadcast_to(np.asarray(albedo, dtype=np.float64), (len(f), 3))
    if shade:
        vn = vertex_normals(vertices, faces) if normals is None else np.asarray(normals, dtype=np.float64)
        normals = np.einsum("pk,pkc->pc", b, vn[faces[f]])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-20
        R = np.asarray(camera.rotation)
        lights_w = (DEFAULT_LIGHTS if lights is None else np.asarray(lights, dtype=np.float64)) @ R
        lights_w /= np.linalg.norm(lights_w, axis=1, keepdims=True)
        if camera.orthographic:
            view = np.broadcast_to(-R[2], normals.shape)
        else:
            view = camera.position - np.einsum("pk,pkc->pc", b, vertices[faces[f]])
        colour = colour * lambert(normals, view, lights_w, ambient)[:, None]
    image = np.empty(m.shape + (3,), dtype=np.uint8)
    image[:] = np.asarray(background, dtype=np.uint8)
    image[m] = np.clip(np.round(colour * 255.0), 0, 255).astype(np.uint8)
    return Rendering(image, frag, camera, vertices, faces)
