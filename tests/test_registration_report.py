"""The registration report picture: panels, heat-map colours, both layouts, distances."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import FLAME_FIX
from PIL import Image

from onflame.mesh import Mesh, read_mesh
from onflame.registration import report
from onflame.registration.report import render_report_panels, save_report_picture, scan_to_mesh_distances_mm


@pytest.fixture(scope="module")
def head():
    return read_mesh(FLAME_FIX / "head_template.obj")


def _left_right_distances(head: Mesh) -> np.ndarray:
    """5 mm on the subject's left (FLAME +x), 0 mm on the right."""
    return np.where(head.vertices[:, 0] > 0.0, 5.0, 0.0)


def test_heat_map_colours_the_far_side_red_and_the_near_side_blue(head):
    frontal = np.eye(4)  # scan frame = FLAME frame: the face is seen from the front, upright
    scan_img, reg_img, heat = render_report_panels(head, head, _left_right_distances(head), frontal, max_mm=5.0,
                                                   size=128)
    assert scan_img.shape == reg_img.shape == heat.shape == (128, 128, 3)
    # the subject's left shows on the image's right (as in a photo): red there, blue on the other side
    covered = (heat != 255).any(2)
    right, left = covered.copy(), covered.copy()
    right[:, :70], left[:, 58:] = False, False
    r, b = heat[..., 0].astype(int), heat[..., 2].astype(int)
    assert (r[right] > b[right]).mean() > 0.9 and (b[left] > r[left]).mean() > 0.9
    # scan and registration are the same mesh from the same camera: same silhouette
    assert np.array_equal((scan_img != 255).any(2), (reg_img != 255).any(2))


def test_picture_is_written_with_matplotlib_and_without(head, tmp_path, monkeypatch):
    d = _left_right_distances(head)
    save_report_picture(tmp_path / "mpl.png", head, head, d, title="head, ok", size=96)
    with Image.open(tmp_path / "mpl.png") as im:
        assert im.format == "PNG" and im.width > 2 * im.height

    def no_matplotlib(*args):
        raise ImportError("no matplotlib")

    monkeypatch.setattr(report, "_layout_matplotlib", no_matplotlib)
    save_report_picture(tmp_path / "pil.png", head, head, d, size=96)
    with Image.open(tmp_path / "pil.png") as im:
        assert im.format == "PNG" and im.width > 3 * 96
        # the PIL colour bar: its top is the colour of the largest distance, its bottom of zero
        px = np.asarray(im.convert("RGB"))
        bar = px[40:40 + 96, 3 * 96 + 10 + 12]
        assert bar[0, 0] > bar[0, 2] and bar[-1, 2] > bar[-1, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mpl.png", "pil.png"]  # no temporary files left


def test_distances_must_match_the_scan(head):
    with pytest.raises(ValueError, match="one distance per scan vertex"):
        render_report_panels(head, head, np.zeros(10))


def test_scan_to_mesh_distances_are_exact_point_to_surface():
    plane = Mesh(np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0.0]]), np.array([[0, 1, 2], [0, 2, 3]]))
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-0.9, 0.9, (50, 2)), rng.uniform(-0.01, 0.01, 50)])
    assert np.allclose(scan_to_mesh_distances_mm(pts, plane), np.abs(pts[:, 2]) * 1000)
    beyond = np.array([[1.003, 0.0, 0.004]])  # past the edge: distance to the edge, not the plane
    assert scan_to_mesh_distances_mm(beyond, plane)[0] == pytest.approx(5.0)
