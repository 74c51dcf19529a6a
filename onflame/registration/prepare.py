"""Step 1 of registration: the scan read and checked, turned outward and welded where it needs it, sized in
metres (:mod:`.units`), with the user's landmarks, and indexed for search (:mod:`.correspond`)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..geometry import wound_inward
from ..mesh import Mesh, check_mesh, read_mesh
from ..mesh.landmark_files import ScanLandmarks, landmarks_from_array, read_landmarks
from .correspond import ScanIndex
from .plausibility import check_landmarks_against_scan, check_scan_extent
from .units import resolve_units, units_mismatch


@dataclass
class PreparedScan:
    """A scan ready to register: ``mesh`` as given (its triangles turned outward where they were wound
    inward: ``rewound``), its ``path`` (for messages), ``unit`` and metres per unit ``k``, ``points`` (N, 3)
    in metres, their search ``index``, and the user's ``clicks`` (scan units)."""

    mesh: Mesh
    path: str
    unit: str
    k: float
    points: np.ndarray
    index: ScanIndex
    clicks: ScanLandmarks | None
    rewound: bool = False


#: Vertices per triangle beyond which a scan is welded first (a connected surface has ~0.5, a soup 3).
SOUP_RATIO = 0.6


def prepare_scan(scan: Mesh | str | os.PathLike, landmarks, units: str) -> PreparedScan:
    """Read and check the scan and the landmarks, size them in metres, and index the scan.

    The checks run before anything is sized from the coordinates (:mod:`.plausibility`). Where they fail
    and the scan and its landmarks are each the size of a head in different units, the error says so,
    naming the landmark file (:func:`.units.units_mismatch`), rather than blaming the scan's size.
    """
    if not isinstance(scan, Mesh):  # given landmarks: the texture is never looked at, so not decoded
        scan = read_mesh(scan, check_texture=landmarks is None)
    path = scan.source or "<scan>"
    check_mesh(scan, path)
    if scan.n_faces == 0:
        raise InputError(path, "scan has no triangles (a point cloud); registration needs a surface")
    clicks = as_clicks(landmarks, scan)  # before welding: a .land file may name the scan's vertices
    if scan.n_vertices > SOUP_RATIO * scan.n_faces:  # a surface has about half as many vertices as triangles
        scan = scan.welded()
    clicked_at = None if clicks is None else clicks.points
    try:
        unit, k = resolve_units(scan.vertices, clicked_at, units, path)
        pts_m = scan.vertices * k
        check_scan_extent(pts_m, path, f"{unit}, {'detected' if units == 'auto' else 'as given'}")
        rewound = wound_inward(pts_m, scan.faces)
        if rewound:  # normals into the head: every match and the detector's shading would be turned
            scan = scan.rewound()
        index = ScanIndex.build(pts_m, scan.faces)
        if clicks is not None:  # before anything is placed or sized by them
            check_landmarks_against_scan(clicked_at * k, index, clicks.source or path)
    except InputError:
        mismatch = None if clicks is None else units_mismatch(scan.vertices, clicked_at, units, path,
                                                              clicks.source or "<landmarks>")
        if mismatch is not None:
            raise mismatch from None
        raise
    return PreparedScan(scan, path, unit, k, pts_m, index, clicks, rewound)


def as_clicks(landmarks: "ScanLandmarks | np.ndarray | str | os.PathLike | None", scan: Mesh) -> ScanLandmarks | None:
    """The user's landmarks as :class:`ScanLandmarks` (scan units): a file of any kind
    :func:`~onflame.mesh.landmark_files.read_landmarks` reads, an array in iBUG order, or as they are."""
    if landmarks is None or isinstance(landmarks, ScanLandmarks):
        return landmarks
    if isinstance(landmarks, (str, os.PathLike)):
        return read_landmarks(landmarks, scan)  # the scan: for .land files of vertex ids
    return landmarks_from_array(landmarks, "<landmarks>")
