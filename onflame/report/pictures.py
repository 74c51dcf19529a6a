"""The report's pictures of one subject, drawn with onflame's own rasteriser (:mod:`onflame.render`).

For each subject with a mesh (its registration, or the build's rejected one):

- ``thumb``: front and side of the registration and, where the build's report names a scan that can
  still be read, the scan coloured by its distance to the registration (one strip, ``THUMB`` px high);
- ``views``: the registration from five directions (right profile to left profile), ``VIEW`` px each;
- ``heat``: the scan → registration distance map, front and side, larger;
- ``fit``: the registration coloured by its per-vertex distance to FLAME(params), front and side.

Meshes are drawn in FLAME's frame (the parameters' ``scan_to_flame`` when the registration lies in a
scan's frame), so "front" is the face's front whatever the scanner's axes. JPEG keeps a thousand
subjects' pictures near 100 MB (shaded renders compress poorly as PNG).

Distances from the scan to the registration: exact closest points (:mod:`onflame.mesh.distance`).
"""
from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import confine_writes, read_bounded, read_npy, write_bytes, write_json
from ..mesh import Mesh, read_mesh
from ..mesh.images import IMAGE_MAX_BYTES, open_image
from ..mesh.distance import point_to_surface
from ..render import colormap, framing, render_mesh

#: Bump when the pictures change: it is part of every cache key.
PICTURES_VERSION = "3"
#: Panel sizes (pixels): gallery thumbnails, subject-page views.
THUMB = 150
VIEW = 256
#: Colour scales (mm): scan → registration (as the build's report picture), registration → FLAME(params).
HEAT_MAX_MM = 5.0
FIT_MAX_MM = 2.0
#: Light at zero, dark red at the top: on a page of a thousand thumbnails the few bad ones stand out.
CMAP = "YlOrRd"
#: Viewing directions as yaw about FLAME's +y (degrees; 0 = front, +90 = the subject's left profile).
VIEW_YAWS = (-90.0, -40.0, 0.0, 40.0, 90.0)
SIDE_YAW = 90.0
#: The pictures a subject may have.
KINDS = ("thumb", "views", "heat", "fit")
_JPEG_QUALITY = 88
#: Listed photos larger than this are re-encoded at 448 px at most (aligned crops are copied as they are).
_PHOTO_BYTES = 200_000
_REG_ALBEDO = (0.75, 0.75, 0.78)


@dataclass
class ScanSpec:
    """Where the build's scan is and how it was placed: ``x = scale * rotation @ x_file`` (metres, the
    registration's frame; :meth:`onflame.sources.ScanItem.to_flame_frame`)."""

    path: str
    rotation: np.ndarray
    scale: float


@dataclass
class PictureJob:
    """One subject's pictures to draw (picklable: it crosses to a worker process).

    Attributes:
        key: the content key (:mod:`.cache`); outputs are ``<out>/img/<key[:2]>/<key>-<kind>.jpg``.
        label: the mesh's path, for messages.
        mesh_path: a readable mesh file, or None with ``mesh_bytes`` (a zip member) and ``mesh_suffix``.
        to_flame: (4, 4) registration frame → FLAME's frame, or None (already FLAME's).
        params_vertices: (V, 3) FLAME(params) in the registration's frame (metres), or None.
        scan: the build's scan, or None.
    """

    key: str
    label: str
    out: str
    mesh_path: str | None = None
    mesh_bytes: bytes | None = None
    mesh_suffix: str = ".obj"
    to_flame: np.ndarray | None = None
    params_vertices: np.ndarray | None = None
    scan: ScanSpec | None = None


@dataclass
class PictureResult:
    """What a job drew: image paths relative to the site (``img/..``) and their sizes in bytes (a later run
    reuses them only while they are whole), numbers, notes and problems."""

    key: str
    images: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"key": self.key, "images": self.images, "sizes": self.sizes, "numbers": self.numbers,
                "notes": self.notes, "problems": self.problems, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, d: dict) -> "PictureResult":
        return cls(d["key"], dict(d.get("images") or {}), dict(d.get("sizes") or {}), dict(d.get("numbers") or {}),
                   list(d.get("notes") or []), list(d.get("problems") or []), float(d.get("seconds") or 0.0))


def image_rel(key: str, kind: str) -> str:
    """Site-relative path of a subject's picture."""
    return f"img/{key[:2]}/{key}-{kind}.jpg"


def result_path(out: str | os.PathLike, key: str) -> Path:
    """Where a job's result is kept (written last: its presence means the job finished)."""
    return Path(out) / ".cache" / "results" / key[:2] / f"{key}.json"


def yaw_direction(yaw_deg: float) -> np.ndarray:
    """(3,) unit vector from the head towards a camera turned ``yaw_deg`` about FLAME's +y from the front."""
    a = np.deg2rad(yaw_deg)
    return np.array([np.sin(a), 0.0, np.cos(a)])


def _to_frame(vertices: np.ndarray, to_flame: np.ndarray | None) -> np.ndarray:
    if to_flame is None:
        return np.asarray(vertices, dtype=np.float64)
    A = np.asarray(to_flame, dtype=np.float64)
    return vertices @ A[:3, :3].T + A[:3, 3]


def _panel(vertices: np.ndarray, faces: np.ndarray, frame_points: np.ndarray, yaw: float, size: int,
           colors: np.ndarray | None = None, ambient: float = 0.25) -> np.ndarray:
    """(size, size, 3) uint8: ``vertices`` seen from ``yaw``, framed on ``frame_points`` (both FLAME's frame)."""
    cam = framing(frame_points, yaw_direction(yaw), [0.0, 1.0, 0.0], size, margin=0.04)
    kw = {"albedo": _REG_ALBEDO} if colors is None else {"colors": colors, "ambient": ambient}
    return render_mesh(vertices, faces, cam, **kw).image


def _jpeg(res: PictureResult, out: Path, kind: str, panels: list[np.ndarray]) -> None:
    """Write one picture of ``res``'s subject and note its path and size in ``res``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.hstack(panels)).save(buf, format="JPEG", quality=_JPEG_QUALITY)
    rel = image_rel(res.key, kind)
    write_bytes(out / rel, buf.getvalue())
    res.images[kind], res.sizes[kind] = rel, len(buf.getvalue())


def _read_job_mesh(job: PictureJob) -> Mesh:
    if job.mesh_path is not None:
        mesh = read_mesh(job.mesh_path)
    else:
        with tempfile.TemporaryDirectory(prefix="onflame-report-") as tmp:
            local = Path(tmp) / f"mesh{job.mesh_suffix}"
            local.write_bytes(job.mesh_bytes or b"")
            try:
                mesh = read_mesh(local)
            except InputError as exc:
                raise InputError(job.label, exc.problem) from None
    if mesh.n_vertices == 0 or mesh.n_faces == 0:
        raise InputError(job.label, "mesh has no triangles")
    return mesh


def _read_scan(spec: ScanSpec) -> Mesh:
    mesh = read_mesh(spec.path)
    return mesh.transformed(rotation=np.asarray(spec.rotation, dtype=np.float64), scale=float(spec.scale))


def draw_subject(job: PictureJob) -> PictureResult:
    """Draw one subject's pictures into ``job.out`` and keep the result beside them (see the module docstring).

    Never raises for bad input: an unreadable mesh or scan becomes a problem line in the result.
    """
    t0 = time.perf_counter()
    res = PictureResult(job.key)
    out = Path(job.out)
    try:
        mesh = _read_job_mesh(job)
    except InputError as exc:
        res.problems.append(str(exc))
        return _finish(res, out, t0)
    reg = _to_frame(mesh.vertices, job.to_flame)
    faces = mesh.faces
    front = _panel(reg, faces, reg, 0.0, VIEW)
    side = _panel(reg, faces, reg, SIDE_YAW, VIEW)
    views = [front if y == 0.0 else side if y == SIDE_YAW else _panel(reg, faces, reg, y, VIEW) for y in VIEW_YAWS]
    _jpeg(res, out, "views", views)
    thumbs = [_shrink(front, THUMB), _shrink(side, THUMB)]

    if job.scan is not None:
        try:
            scan = _read_scan(job.scan)
            dist = point_to_surface(scan.vertices, mesh.vertices, faces) * 1000.0
            pts = _to_frame(scan.vertices, job.to_flame)
            colors = colormap(dist, 0.0, HEAT_MAX_MM, CMAP)
            heat = [_panel(pts, scan.faces, reg, y, VIEW, colors, ambient=0.55) for y in (0.0, SIDE_YAW)]
            _jpeg(res, out, "heat", heat)
            thumbs.append(_shrink(heat[0], THUMB))
        except InputError as exc:
            res.notes.append(f"no heat map: {exc}")
        except OSError as exc:
            res.notes.append(f"no heat map: {job.scan.path}: {exc.strerror or exc}")
    _jpeg(res, out, "thumb", thumbs)

    if job.params_vertices is not None:
        pv = np.asarray(job.params_vertices, dtype=np.float64)
        if pv.shape != mesh.vertices.shape:
            res.problems.append(f"{job.label}: {mesh.n_vertices} vertices, the model has {len(pv)}: "
                                "FLAME(params) cannot be compared (another model? pass --model)")
        else:
            d = np.linalg.norm(pv - mesh.vertices, axis=1) * 1000.0
            res.numbers["params_mean_mm"] = float(d.mean())
            res.numbers["params_max_mm"] = float(d.max())
            colors = colormap(d, 0.0, FIT_MAX_MM, CMAP)
            fit = [_panel(reg, faces, reg, y, VIEW, colors, ambient=0.55) for y in (0.0, SIDE_YAW)]
            _jpeg(res, out, "fit", fit)
    return _finish(res, out, t0)


def _shrink(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def _finish(res: PictureResult, out: Path, t0: float) -> PictureResult:
    res.seconds = time.perf_counter() - t0
    write_json(result_path(out, res.key), res.to_dict())
    return res


def photo_rel(digest: str, suffix: str) -> str:
    """Site-relative path of a copied photo (its own suffix) or of an ArcFace blob drawn as PNG (``.png``)."""
    return f"img/photos/{digest[:2]}/{digest}{suffix.lower()}"


@dataclass
class PhotoJob:
    """A listed photo to copy into the site, or an ArcFace blob to draw there: from ``path`` or ``data``."""

    out: str
    target: str
    label: str
    blob: bool
    path: str | None = None
    data: bytes | None = None


def copy_photo(job: PhotoJob) -> None:
    """Copy a listed photo as it is, or draw an ArcFace ``.npy`` blob (float32 (3, 112, 112),
    ``(pixel - 127.5) / 127.5``) as a PNG. :class:`InputError` naming the file if it cannot be read."""
    from PIL import Image

    try:
        data = job.data if job.data is not None else read_bounded(job.path or "", IMAGE_MAX_BYTES, job.label)
    except OSError as exc:
        raise InputError(job.label, f"cannot read ({exc.strerror or exc})") from None
    if job.blob:
        try:
            arr = read_npy(data, job.label)  # sizes checked before allocating, no pickles
            if arr.ndim != 3 or arr.shape[0] != 3:
                raise ValueError(f"shape {arr.shape}, expected (3, H, W)")
            img = np.clip(np.asarray(arr, dtype=np.float32).transpose(1, 2, 0) * 127.5 + 127.5, 0, 255)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(job.label, f"not an ArcFace input array ({exc})") from None
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
    elif len(data) > _PHOTO_BYTES:  # a full photo (an images/ folder), not a 224 px crop: made smaller
        data = _smaller(data, job.label)
    write_bytes(Path(job.out) / job.target, data)


def _smaller(data: bytes, label: str) -> bytes:
    with open_image(data, label) as im:
        fmt = im.format or "JPEG"
        im = im.convert("RGB")
        im.thumbnail((448, 448))
        buf = io.BytesIO()
        im.save(buf, format=fmt, **({"quality": _JPEG_QUALITY} if fmt == "JPEG" else {}))
    return buf.getvalue()


def run_job(job: PictureJob | PhotoJob) -> PictureResult | None:
    """A worker's entry point: draw a subject's pictures or put a photo in the site (writes confined to
    the site's folder, :func:`onflame.fileio.confine_writes`)."""
    with confine_writes(job.out):
        return draw_subject(job) if isinstance(job, PictureJob) else copy_photo(job)
