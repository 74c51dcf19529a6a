"""The CPU renderer: coverage, depth order, colours, light, perspective, textures, lifting pixels to 3D."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from conftest import FLAME_FIX

from onflame.flame import load_landmark_embedding
from onflame.mesh import read_mesh
from onflame.render import Camera, framing, look_at, rasterize, render_mesh

WHITE = (255, 255, 255)


def _centres(W: int, H: int) -> np.ndarray:
    """(H*W, 2) pixel centres, row-major."""
    ys, xs = np.mgrid[0:H, 0:W]
    return np.column_stack([xs.ravel() + 0.5, ys.ravel() + 0.5])


def _inside_triangle(p: np.ndarray, a, b, c) -> np.ndarray:
    """Brute force: the three cross products have one sign (orientation-independent)."""
    def side(u, v):
        return (v[0] - u[0]) * (p[:, 1] - u[1]) - (v[1] - u[1]) * (p[:, 0] - u[0])
    s = np.stack([side(a, b), side(b, c), side(c, a)])
    return (s >= 0).all(0) | (s <= 0).all(0)


def test_triangle_covers_exactly_the_pixel_centres_inside_it():
    a, b, c = (10.2, 10.7), (90.3, 15.1), (30.6, 80.4)
    screen = np.array([[*a, 1.0], [*b, 1.0], [*c, 1.0]])
    frag = rasterize(screen, np.array([[0, 1, 2]]), 100, 90)
    expected = _inside_triangle(_centres(100, 90), a, b, c).reshape(90, 100)
    assert np.array_equal(frag.mask, expected)
    area = 0.5 * abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    assert abs(frag.mask.sum() - area) < 0.05 * area
    # same pixels whichever way the triangle is wound, and none when back faces are culled
    flipped = rasterize(screen, np.array([[0, 2, 1]]), 100, 90)
    assert np.array_equal(flipped.mask, expected)
    culled = [rasterize(screen, np.array(f), 100, 90, cull_backfaces=True).mask.sum()
              for f in ([[0, 1, 2]], [[0, 2, 1]])]
    assert sorted(culled) == [0, expected.sum()]


def test_nearer_triangle_wins_whatever_the_order_and_depth_is_interpolated():
    near = [[0, 0, 2.0], [60, 0, 2.0], [0, 60, 2.0]]
    far = [[0, 0, 5.0], [60, 0, 5.0], [0, 60, 5.0]]
    screen = np.array(far + near)
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        frag = rasterize(screen, np.array(faces), 64, 64)
        winner = frag.face[frag.mask]
        assert (np.array(faces)[winner][:, 0] == 3).all()  # the near triangle's vertices
        assert np.allclose(frag.depth[frag.mask], 2.0)
    # a tilted triangle: depth = 1 + x / 100 exactly at each pixel centre (orthographic: affine in screen space)
    tilted = np.array([[0, 0, 1.0], [100, 0, 2.0], [0, 100, 1.0]])
    frag = rasterize(tilted, np.array([[0, 1, 2]]), 100, 100)
    xs = np.nonzero(frag.mask)[1] + 0.5
    assert np.allclose(frag.depth[frag.mask], 1 + xs / 100)
    assert np.isinf(frag.depth[~frag.mask]).all() and (frag.face[~frag.mask] == -1).all()


def _coloured_cube():
    """A 1 m cube whose six sides each have their own vertices and colour (+x red, +y green, +z blue, ...)."""
    box = trimesh.creation.box(extents=(1, 1, 1))
    v, f = box.vertices[box.faces].reshape(-1, 3), np.arange(3 * len(box.faces)).reshape(-1, 3)
    normals = np.repeat(box.face_normals, 3, axis=0)
    palette = {(1, 0, 0): (1, 0, 0), (0, 1, 0): (0, 1, 0), (0, 0, 1): (0, 0, 1),
               (-1, 0, 0): (1, 1, 0), (0, -1, 0): (0, 1, 1), (0, 0, -1): (1, 0, 1)}
    colors = np.array([palette[tuple(np.round(n).astype(int))] for n in normals], dtype=np.float64)
    return v, f, colors


def test_cube_from_a_corner_shows_three_sides_in_their_colours_with_correct_areas():
    v, f, colors = _coloured_cube()
    view = np.array([1.0, 1.0, 1.0]) / np.sqrt(3)
    scale = 100.0  # pixels per metre
    cam = look_at(np.zeros(3), view, [0, 1, 0], 400, 400, scale, distance=5.0)
    r = render_mesh(v, f, cam, colors=colors, shade=False)
    img = r.image.reshape(-1, 3)
    counts = {c: int((img == c).all(1).sum()) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
                                                         (0, 255, 255), (255, 0, 255), WHITE]}
    # each visible side projects to 1 m² × cos(55°) = 1/√3 m²; the hidden sides (behind) never show
    side = scale**2 / np.sqrt(3)
    for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]:
        assert abs(counts[c] - side) < 0.03 * side
    assert counts[(255, 255, 0)] == counts[(0, 255, 255)] == counts[(255, 0, 255)] == 0
    assert counts[WHITE] + 3 * side == pytest.approx(400 * 400, rel=0.01)
    # the nearest point is the corner (0.5, 0.5, 0.5), 5 − √3/2 from the camera
    assert r.fragments.depth.min() == pytest.approx(5 - np.sqrt(3) / 2, abs=0.02)


def test_lambert_light_follows_the_cosine():
    quad = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    cam = look_at(np.zeros(3), [0, 0, 1], [0, 1, 0], 50, 50, 20.0)
    albedo = (0.8, 0.6, 0.4)
    head_on = render_mesh(quad, faces, cam, albedo=albedo, lights=np.array([[0, 0, -1.0]]), ambient=0.2)
    assert np.allclose(head_on.image[25, 25], np.round(np.array(albedo) * 255), atol=1)
    slanted = render_mesh(quad, faces, cam, albedo=albedo, lights=np.array([[0, -np.sin(np.pi / 3), -0.5]]),
                          ambient=0.2)
    assert np.allclose(slanted.image[25, 25], np.round(np.array(albedo) * (0.2 + 0.8 * 0.5) * 255), atol=1)
    # seen from behind, the two-sided light still lights it
    behind = look_at(np.zeros(3), [0, 0, -1], [0, 1, 0], 50, 50, 20.0)
    assert np.allclose(render_mesh(quad, faces, behind, albedo=albedo, lights=np.array([[0, 0, -1.0]])).image[25, 25],
                       head_on.image[25, 25], atol=1)


def test_texture_lookup_keeps_the_image_upright():
    quad = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])  # OBJ convention: v = 1 is the image's top row
    tex = np.zeros((2, 2, 3), np.uint8)
    tex[0, 0], tex[0, 1], tex[1, 0], tex[1, 1] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    cam = look_at(np.zeros(3), [0, 0, 1], [0, 1, 0], 40, 40, 18.0)
    img = render_mesh(quad, faces, cam, uv=uv, face_uv=faces, texture=tex, shade=False).image
    # well inside each quadrant the bilinear lookup returns the texel itself
    assert tuple(img[8, 8]) == (255, 0, 0) and tuple(img[8, 31]) == (0, 255, 0)
    assert tuple(img[31, 8]) == (0, 0, 255) and tuple(img[31, 31]) == (255, 255, 0)


def test_pinhole_camera_projects_and_interpolates_with_perspective():
    # a plane tilted in depth: z = 3 + 0.5 y, seen by a pinhole camera at the origin looking along +z
    xs, ys = np.meshgrid(np.linspace(-1, 1, 11), np.linspace(-1, 1, 11))
    verts = np.column_stack([xs.ravel(), ys.ravel(), 3 + 0.5 * ys.ravel()])
    faces = trimesh.geometry.triangulate_quads(
        [[i * 11 + j, i * 11 + j + 1, (i + 1) * 11 + j + 1, (i + 1) * 11 + j] for i in range(10) for j in range(10)])
    cam = Camera(np.diag([1.0, 1.0, 1.0]), np.zeros(3), 200, 200, 150.0, orthographic=False)
    r = render_mesh(verts, faces, cam)
    rows, cols = np.nonzero(r.fragments.mask)
    # the ray through pixel centre (u, v) is (x, y, 1) z with y = (v − 100) / 150; meeting z = 3 + 0.5 y z
    # gives z = 3 / (1 − 0.5 (v − 100) / 150): checks the 1/z interpolation, not an affine one
    vy = (rows + 0.5 - 100) / 150
    assert np.allclose(r.fragments.depth[rows, cols], 3 / (1 - 0.5 * vy), rtol=1e-9)
    # and lifting a pixel gives the ray's point on the plane, which projects back onto that pixel
    px = np.column_stack([cols + 0.37, rows + 0.61])[::97]
    pts, hit = r.lift(px)
    assert hit.all()
    assert np.allclose(pts[:, 2], 3 + 0.5 * pts[:, 1])
    assert np.allclose(cam.project(pts)[:, :2], px, atol=1e-6)


@pytest.fixture(scope="module")
def head():
    return read_mesh(FLAME_FIX / "head_template.obj")


def test_flame_head_frontal_nearest_pixel_is_the_nose_tip(head):
    cam = framing(head.vertices, [0, 0, 1], [0, 1, 0], 256)
    r = render_mesh(head.vertices, head.faces, cam)
    assert r.image.shape == (256, 256, 3) and r.fragments.mask.mean() > 0.3
    # the whole head is in view: nothing covered at the border
    assert not r.fragments.mask[[0, -1]].any() and not r.fragments.mask[:, [0, -1]].any()
    row, col = np.unravel_index(np.argmin(r.fragments.depth), r.fragments.depth.shape)
    embedding = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl").static51
    nose = embedding.locate(head.vertices, head.faces)[13]
    lifted, hit = r.lift(np.array([[col + 0.5, row + 0.5]]))
    assert hit.all()
    assert np.linalg.norm(lifted[0] - nose) < 0.006  # iBUG's nose tip is the most protruding point, ±pixel size
    # the nearest depth is the front-most vertex's depth, to within the sampling of one pixel
    assert r.fragments.depth.min() == pytest.approx(cam.project(head.vertices)[:, 2].min(), abs=0.002)
    # the subject's left (FLAME +x) appears on the image's right, as in a photograph
    assert cam.project(np.array([[0.05, 0, 0]]))[0, 0] > cam.project(np.array([[-0.05, 0, 0]]))[0, 0]


def test_lifted_pixels_lie_on_the_surface_and_miss_background(head):
    cam = framing(head.vertices, [0.3, 0.1, 1.0], [0, 1, 0], 200)
    r = render_mesh(head.vertices, head.faces, cam)
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(r.fragments.mask)
    pick = rng.choice(len(rows), 200, replace=False)
    px = np.column_stack([cols[pick], rows[pick]]) + rng.uniform(0, 1, (200, 2))
    pts, hit = r.lift(px)
    _, dist, _ = trimesh.proximity.closest_point(head.to_trimesh(), pts[hit])
    assert hit.mean() > 0.95 and dist.max() < 1e-5  # on the surface (trimesh's query is good to ~µm)
    back = np.linalg.norm(cam.project(pts[hit])[:, :2] - px[hit], axis=1)
    assert np.mean(back < 1e-6) > 0.98 and back.max() < 1.0  # exact but at silhouettes (then the pixel centre)
    # background: a miss, unless the search radius reaches the head
    corner = np.array([[0.5, 0.5]])
    assert not r.lift(corner)[1][0]
    edge_r, edge_c = rows.min(), cols[rows == rows.min()][0]
    above = np.array([[edge_c + 0.5, edge_r - 2.5]])
    assert not r.lift(above)[1][0] and r.lift(above, search_px=4)[1][0]
    # surface deeper than max_depth counts as a miss
    p, h = r.lift(px[:5], max_depth=r.fragments.depth.min() - 1e-6)
    assert not h.any() and np.isnan(p).all()


@pytest.mark.parametrize("orthographic", [True, False])
def test_framing_keeps_the_whole_mesh_in_view(head, orthographic):
    cam = framing(head.vertices, [1.0, 0.2, 0.5], [0, 1, 0], 300, margin=0.1, orthographic=orthographic)
    p = cam.project(head.vertices)
    assert (p[:, 2] > 0).all()
    assert p[:, :2].min() >= 0.1 * 300 - 1e-6 and p[:, :2].max() <= 0.9 * 300 + 1e-6
    assert np.ptp(p[:, :2], axis=0).max() > 0.7 * 300  # and fills the frame
    with pytest.raises(ValueError, match="parallel"):
        look_at(np.zeros(3), [0, 1, 0], [0, 2, 0], 10, 10, 1.0)
