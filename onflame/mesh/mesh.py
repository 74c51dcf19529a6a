"""onflame's one mesh type."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Mesh:
    """A triangle mesh in metres (unless a reader says otherwise), with optional texture.

    Vertex order is kept exactly as stored in the file: FLAME-topology meshes rely on it.

    Attributes:
        vertices: (V, 3) float64 positions.
        faces: (F, 3) int64 vertex indices (counter-clockwise seen from outside).
        uv: (T, 2) float64 texture coordinates in [0, 1], or None.
        face_uv: (F, 3) int64 indices into ``uv`` per triangle corner, or None.
        texture: path of the texture image, or None.
        colors: (V, 3) float64 per-vertex RGB in [0, 1], or None.
        source: the file it was read from, for error messages.
        meta: free-form facts a reader found (e.g. units stated by a format).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    face_uv: np.ndarray | None = None
    texture: Path | None = None
    colors: np.ndarray | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)

    @property
    def n_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def n_faces(self) -> int:
        return self.faces.shape[0]

    def with_vertices(self, vertices: np.ndarray) -> "Mesh":
        """A copy with new positions (V, 3) and everything else shared."""
        return replace(self, vertices=np.asarray(vertices, dtype=np.float64))

    def welded(self) -> "Mesh":
        """A copy with exactly coincident vertices made one (the first one's colour kept), the faces
        renumbered: a triangle soup (STL stores every mesh so; some exporters write OBJ or PLY so) becomes
        a connected surface. Vertex order changes: never for a FLAME-topology mesh."""
        v = np.ascontiguousarray(self.vertices)
        key = v.view(np.dtype((np.void, v.dtype.itemsize * 3))).ravel()
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        order = np.argsort(first)  # keep the vertices in the order they first appear
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        keep = first[order]
        return replace(self, vertices=v[keep], faces=rank[inverse.ravel()][self.faces],
                       colors=None if self.colors is None else self.colors[keep])

    def rewound(self) -> "Mesh":
        """A copy with every triangle's winding reversed (its normal turned), texture corners with it."""
        return replace(self, faces=self.faces[:, ::-1].copy(),
                       face_uv=None if self.face_uv is None else self.face_uv[:, ::-1].copy())

    def transformed(self, rotation: np.ndarray | None = None, translation: np.ndarray | None = None,
                    scale: float = 1.0) -> "Mesh":
        """A copy with ``x -> scale * R x + t`` applied (``rotation`` (3, 3), ``translation`` (3,))."""
        v = self.vertices * scale
        if rotation is not None:
            v = v @ np.asarray(rotation).T
        if translation is not None:
            v = v + np.asarray(translation)
        return self.with_vertices(v)

    def extent(self) -> np.ndarray:
        """(3,) size of the axis-aligned bounding box."""
        return self.vertices.max(0) - self.vertices.min(0) if self.n_vertices else np.zeros(3)

    def to_trimesh(self) -> Any:
        """A ``trimesh.Trimesh`` view (vertex order kept, no processing) for trimesh's geometry tools."""
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False, validate=False)
