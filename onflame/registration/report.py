"""The registration report picture: scan, registration and a scan-to-registration error heat map.

Three renders from the same camera side by side (the scan, textured when it has a texture, else shaded;
the registration, shaded; the scan coloured by each point's distance to the registration) and a colour
bar in millimetres. Laid out with matplotlib (Agg, no display needed) when it is installed, else with
PIL alone (same panels, a plainer colour bar).
"""
from __future__ import annotations

import io
import os

import numpy as np

from ..fileio import write_bytes
from ..mesh import Mesh
from ..render import colormap, framing, render_mesh

#: Colour map of the heat map (matplotlib's name; a built-in blue-to-red ramp without matplotlib).
CMAP = "turbo"
#: Default top of the colour scale (mm): the quality verdict calls a scan-to-mesh p95 above 3 mm suspect.
DEFAULT_MAX_MM = 5.0


def scan_to_mesh_distances_mm(scan_points_m: np.ndarray, mesh: Mesh) -> np.ndarray:
    """(N,) distance in mm from each scan point (N, 3) (metres) to the nearest point of ``mesh``'s surface
    (exact closest points: :mod:`onflame.mesh.distance`)."""
    from ..mesh.distance import point_to_surface

    return point_to_surface(scan_points_m, mesh.vertices, mesh.faces) * 1000.0


def _view(scan: Mesh, scan_to_flame: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(facing, up)``: FLAME's +z and +y in the scan's frame when the registration's transform is known,
    else the scan's mean normal and the up direction closest to +y."""
    if scan_to_flame is not None:
        A = np.asarray(scan_to_flame, dtype=np.float64)[:3, :3]  # rows: FLAME's axes in scan coordinates
        return A[2], A[1]
    from .landmark_views import scan_facing

    f = scan_facing(scan.vertices, scan.faces)
    f = np.array([0.0, 0.0, 1.0]) if f is None else f
    up = np.array([0.0, 1.0, 0.0]) if abs(f[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
    return f, up - (up @ f) * f


def render_report_panels(scan: Mesh, registration_mesh: Mesh, scan_to_mesh_distances_mm: np.ndarray,
                         scan_to_flame: np.ndarray | None = None, max_mm: float = DEFAULT_MAX_MM,
                         size: int = 512) -> list[np.ndarray]:
    """The three (size, size, 3) uint8 panels: scan, registration, heat map (see the module docstring).

    ``scan`` and ``registration_mesh`` must share a frame and unit (the registration's output frame:
    the scan's, metres).
    """
    dist = np.asarray(scan_to_mesh_distances_mm, dtype=np.float64).ravel()
    if dist.shape != (scan.n_vertices,):
        raise ValueError(f"need one distance per scan vertex ({scan.n_vertices}), got {dist.shape}")
    facing, up = _view(scan, scan_to_flame)
    cam = framing(np.vstack([scan.vertices, registration_mesh.vertices]), facing, up, size, margin=0.03)
    texture = {}
    if scan.texture is not None and scan.uv is not None and scan.face_uv is not None:
        texture = {"uv": scan.uv, "face_uv": scan.face_uv, "texture": scan.texture}
    try:
        scan_img = render_mesh(scan.vertices, scan.faces, cam, colors=scan.colors, **texture).image
    except (OSError, ValueError):  # an unreadable texture: show the shape
        scan_img = render_mesh(scan.vertices, scan.faces, cam, colors=scan.colors).image
    reg_img = render_mesh(registration_mesh.vertices, registration_mesh.faces, cam, albedo=(0.75, 0.75, 0.78)).image
    heat = render_mesh(scan.vertices, scan.faces, cam, colors=colormap(dist, 0.0, max_mm, CMAP), ambient=0.55).image
    return [scan_img, reg_img, heat]


def save_report_picture(path: str | os.PathLike, scan: Mesh, registration_mesh: Mesh,
                        scan_to_mesh_distances_mm: np.ndarray, scan_to_flame: np.ndarray | None = None,
                        max_mm: float = DEFAULT_MAX_MM, title: str | None = None, size: int = 512) -> None:
    """Write the report picture (PNG) atomically.

    Args:
        path: output ``.png``.
        scan: the scan, in the registration's frame and unit (metres, the scan's frame).
        registration_mesh: the registration (FLAME topology), same frame.
        scan_to_mesh_distances_mm: (N,) per scan vertex, e.g. :func:`scan_to_mesh_distances_mm`; NaN
            for points not to colour (drawn grey).
        scan_to_flame: (4, 4) the registration's ``params.extras["scan_to_flame"]``: shows the face from
            the front, upright; None to guess from the scan's normals.
        max_mm: top of the colour scale; larger distances get the top colour.
        title: a line above the panels (e.g. the scan's name and verdict).
        size: panel size in pixels.
    """
    panels = render_report_panels(scan, registration_mesh, scan_to_mesh_distances_mm, scan_to_flame, max_mm, size)
    try:
        png = _layout_matplotlib(panels, max_mm, title)
    except ImportError:
        png = _layout_pil(panels, max_mm, title)
    write_bytes(path, png)


_LABELS = ("scan", "registration", "scan → registration distance")


def _layout_matplotlib(panels: list[np.ndarray], max_mm: float, title: str | None) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3 * 4 + 1, 4.6), dpi=max(100, len(panels[0]) / 3.6), layout="constrained")
    FigureCanvasAgg(fig)  # a figure of its own: no pyplot state, no display
    axes = fig.subplots(1, 3)
    for ax, img, label in zip(axes, panels, _LABELS):
        ax.imshow(img)
        ax.set_title(label)
        ax.axis("off")
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, max_mm), CMAP), ax=axes, fraction=0.025, extend="max")
    bar.set_label("distance (mm)")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _layout_pil(panels: list[np.ndarray], max_mm: float, title: str | None) -> bytes:
    from PIL import Image, ImageDraw

    size = panels[0].shape[0]
    top, bar_w, label_w = 40, 24, 70
    canvas = Image.new("RGB", (3 * size + bar_w + label_w + 20, size + top + 10), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, label) in enumerate(zip(panels, _LABELS)):
        canvas.paste(Image.fromarray(img), (i * size, top))
        draw.text((i * size + 10, top - 16), label.replace("→", "->"), fill="black")  # PIL's default font: ASCII
    if title:
        draw.text((10, 4), title, fill="black")
    ramp = colormap(np.linspace(max_mm, 0.0, size), 0.0, max_mm, CMAP)  # top of the bar = largest distance
    bar = np.repeat((ramp * 255).astype(np.uint8)[:, None, :], bar_w, axis=1)
    x = 3 * size + 10
    canvas.paste(Image.fromarray(bar), (x, top))
    for frac in np.linspace(0.0, 1.0, 6):
        y = top + int(round((1 - frac) * (size - 1)))
        draw.line([(x + bar_w, y), (x + bar_w + 4, y)], fill="black")
        draw.text((x + bar_w + 6, y - 6), f"{frac * max_mm:.1f} mm", fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
