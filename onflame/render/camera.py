"""Cameras: world points (metres) to image pixels, and pixels back to viewing rays.

Camera axes follow OpenCV: x to the image's right, y down, z forward (into the scene). Pixel ``(i, j)``
(column, row) covers ``[i, i + 1) × [j, j + 1)``; its centre is ``(i + 0.5, j + 0.5)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """An orthographic or pinhole camera.

    Attributes:
        rotation: (3, 3) world → camera; its rows are the camera's x (right), y (down) and z (forward)
            axes in world coordinates.
        position: (3,) the camera's centre in the world (metres). For an orthographic camera only the
            depth origin depends on it.
        width, height: image size in pixels.
        focal: pinhole: focal length in pixels; orthographic: pixels per metre.
        orthographic: parallel projection if True, else pinhole.
        principal: (2,) principal point in pixels; the image centre if None.
    """

    rotation: np.ndarray
    position: np.ndarray
    width: int
    height: int
    focal: float
    orthographic: bool = True
    principal: tuple[float, float] | None = None

    @property
    def centre_px(self) -> np.ndarray:
        """(2,) principal point in pixels."""
        return np.array(self.principal if self.principal is not None else (self.width / 2.0, self.height / 2.0))

    @property
    def forward(self) -> np.ndarray:
        """(3,) viewing direction in the world."""
        return np.asarray(self.rotation)[2]

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points (metres) in camera coordinates (metres)."""
        return (np.asarray(points, dtype=np.float64) - self.position) @ np.asarray(self.rotation).T

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) ``(x_px, y_px, depth_m)`` of world points (N, 3); depth is the camera-z distance."""
        pc = self.to_camera(points)
        z = pc[:, 2]
        if self.orthographic:
            xy = pc[:, :2] * self.focal
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = pc[:, :2] * (self.focal / z)[:, None]
        return np.column_stack([xy + self.centre_px, z])

    def rays(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World rays ``(origins (N, 3), unit directions (N, 3))`` through continuous pixel positions (N, 2)."""
        p = (np.asarray(pixels, dtype=np.float64).reshape(-1, 2) - self.centre_px) / self.focal
        R = np.asarray(self.rotation)
        if self.orthographic:
            origins = self.position + np.column_stack([p, np.zeros(len(p))]) @ R
            return origins, np.broadcast_to(R[2], origins.shape).copy()
        d = np.column_stack([p, np.ones(len(p))]) @ R
        return np.broadcast_to(self.position, d.shape).copy(), d / np.linalg.norm(d, axis=1, keepdims=True)


def look_at(target: np.ndarray, facing: np.ndarray, up: np.ndarray, width: int, height: int, focal: float,
            distance: float = 1.0, orthographic: bool = True) -> Camera:
    """A camera ``distance`` metres from ``target`` along ``facing``, looking back at it, ``up`` upward.

    ``facing`` (3,) points from the target towards the camera (where a face "looks"); ``up`` (3,) is
    made perpendicular to it. The image's right is then the subject's left, as in a photograph.
    """
    f = -np.asarray(facing, dtype=np.float64)
    f /= np.linalg.norm(f)
    u = np.asarray(up, dtype=np.float64)
    u = u - (u @ f) * f
    norm = np.linalg.norm(u)
    if norm < 1e-9:
        raise ValueError("up must not be parallel to facing")
    u /= norm
    down = -u
    right = np.cross(down, f)  # x = y × z keeps the frame right-handed
    R = np.stack([right, down, f])
    position = np.asarray(target, dtype=np.float64) - distance * f
    return Camera(R, position, int(width), int(height), float(focal), orthographic)


def framing(points: np.ndarray, facing: np.ndarray, up: np.ndarray, size: int = 512, margin: float = 0.08,
            orthographic: bool = True, fov_deg: float = 20.0) -> Camera:
    """A square ``size``-pixel camera looking at ``points`` (N, 3) from ``facing`` with all of them in view.

    ``margin``: fraction of the image left empty on each side. A pinhole camera gets ``fov_deg`` of
    horizontal field of view and stands far enough back to see every point.
    """
    pts = np.asarray(points, dtype=np.float64)
    probe = look_at(np.zeros(3), facing, up, size, size, 1.0)
    pc = pts @ np.asarray(probe.rotation).T
    lo, hi = pc.min(0), pc.max(0)
    centre_cam = (lo + hi) / 2.0
    half = max(hi[0] - lo[0], hi[1] - lo[1]) / 2.0
    half = max(half, 1e-9)
    target = centre_cam @ np.asarray(probe.rotation)  # box centre back in world coordinates
    depth = hi[2] - lo[2]
    usable = size * (0.5 - margin)
    if orthographic:
        return look_at(target, facing, up, size, size, usable / half, distance=depth + 0.1)
    focal = (size / 2.0) / np.tan(np.deg2rad(fov_deg) / 2.0)
    distance = focal * half / usable + depth / 2.0  # the nearest points, the widest in the image, still fit
    return look_at(target, facing, up, size, size, focal, distance=distance, orthographic=False)
