"""Point-to-surface distances: closed form on one triangle, and trimesh's ``closest_point`` on a real scan."""
from __future__ import annotations

import time

import numpy as np
import pytest
import trimesh
from conftest import SHARED

from onflame.evaluation.alignment import Similarity, fit_landmarks, refine_to_surface
from onflame.mesh.distance import SurfaceDistance, point_to_surface
from onflame.mesh import read_mesh

JAMES = SHARED / "fixtures" / "scans" / "3dmd_james" / "james.obj"


def test_distances_to_one_triangle_in_closed_form():
    v = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    f = np.array([[0, 1, 2]])
    points = np.array([[1.0, 1.0, 2.5],    # above the inside: the height
                       [-3.0, -4.0, 0.0],  # beyond corner 0: the distance to it
                       [2.0, -2.0, 1.0],   # beside edge 0-1: to the edge
                       [4.0, 3.0, 0.0]])   # beyond the hypotenuse, in the plane
    want = [2.5, 5.0, np.sqrt(5.0), 12.0 / 5.0]  # last: the line 3x + 4y = 12 at (4, 3) is 12/5 away
    assert np.allclose(point_to_surface(points, v, f), want, atol=1e-12)
    # a degenerate triangle (two equal corners) counts as its edge
    assert SurfaceDistance(v, np.array([[0, 1, 1]])).distances(np.array([[2.0, 1.5, 0.0]]))[0] == pytest.approx(1.5)


def test_point_to_surface_equals_trimesh_closest_point_on_a_real_scan_printing_both_times():
    if not JAMES.is_file():
        pytest.skip(f"{JAMES} not found: ../shared must sit beside the project")
    scan = read_mesh(JAMES)  # millimetres
    rng = np.random.default_rng(0)
    near = scan.vertices[rng.integers(0, scan.n_vertices, 30000)] + rng.normal(0, 3.0, (30000, 3))
    far = rng.uniform(scan.vertices.min(0) - 20, scan.vertices.max(0) + 20, (10000, 3))
    points = np.vstack([near, far])

    t0 = time.perf_counter()
    ours, closest, face = SurfaceDistance(scan.vertices, scan.faces).query(points)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs_closest, theirs, _ = trimesh.proximity.closest_point(scan.to_trimesh(), points)
    t_trimesh = time.perf_counter() - t0
    print(f"\n{len(points)} points to a {scan.n_faces}-triangle real scan: onflame (libigl AABB) {t_ours * 1000:.1f} ms, "
          f"trimesh closest_point {t_trimesh * 1000:.1f} ms")
    assert np.abs(ours - theirs).max() < 1e-6  # mm
    # where the closest point is unique (everywhere but ties), both find the same one
    assert np.median(np.linalg.norm(closest - theirs_closest, axis=1)) < 1e-6
    # the closest points lie on the surface, and each on the triangle named for it
    assert np.allclose(point_to_surface(closest[:50], scan.vertices, scan.faces), 0.0, atol=1e-9)
    for k in range(0, len(points), 4000):
        own = point_to_surface(points[k:k + 1], scan.vertices, scan.faces[face[k]:face[k] + 1])[0]
        assert own == pytest.approx(ours[k], abs=1e-9)


def test_refinement_recovers_a_known_rigid_motion_of_a_real_scan():
    if not JAMES.is_file():
        pytest.skip(f"{JAMES} not found: ../shared must sit beside the project")
    scan = read_mesh(JAMES)
    centre = scan.vertices.mean(0)
    face = scan.vertices[np.linalg.norm(scan.vertices - centre, axis=1) < 90]  # a patch, not a whole sphere
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec([0.02, -0.03, 0.015]).as_matrix()
    t = np.array([1.5, -2.0, 0.8])
    moved = (face - centre) @ R.T + centre + t  # scan points moved; the surface stays
    surface = SurfaceDistance(scan.vertices, scan.faces)
    start = fit_landmarks(moved[:5], moved[:5], scale=False)  # identity: the refinement does all the work
    result = refine_to_surface(moved, surface, start, scale=False)
    # the placed surface must carry the patch's own points onto the moved ones
    placed = result.transform.apply(face)
    assert np.abs(placed - moved).max() < 1e-3 and result.rms_after < 1e-4 < result.rms_before
    assert isinstance(result.transform, Similarity) and result.transform.scale == 1.0
