"""The procedural FLAME-structured head (onflame.synthetic.head) and its FLAME-format files."""
from __future__ import annotations

import builtins
import io

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from trimesh.grouping import group_rows

from onflame.flame import FLAME, load_landmark_embedding, load_masks, load_model
from onflame.flame.embedding import SurfacePoints
from onflame.synthetic.flame_files import (MASKS, MICA_EMBEDDING, STATIC_51, STATIC_68, save_flame_pkl,
                                           save_landmark_files)
from onflame.synthetic.head import make_head_model

#: FLAME's region names (FLAME_masks.pkl).
FLAME_MASKS = {"face", "eye_region", "left_eye_region", "right_eye_region", "left_eyeball", "right_eyeball", "nose",
               "lips", "forehead", "scalp", "neck", "left_ear", "right_ear", "boundary"}
#: iBUG-68 left/right mirror pairs (points on the midline pair with themselves).
IBUG_MIRROR = ([(i, 16 - i) for i in range(17)]
               + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (27, 27), (28, 28), (29, 29), (30, 30), (31, 35),
                  (32, 34), (33, 33), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (49, 53),
                  (50, 52), (51, 51), (55, 59), (56, 58), (57, 57), (60, 64), (61, 63), (62, 62), (65, 67), (66, 66)])
#: FLAME's mean head (head_template.obj): extent in metres (x with the neck's flare, y, z), eyeball radius.
FLAME_EXTENT = np.array([0.215, 0.3215, 0.231])
FLAME_EYEBALL_RADIUS = 0.0125


@pytest.fixture(scope="module")
def head():
    return make_head_model(0)


@pytest.fixture(scope="module")
def head_faces(head):
    """Triangles of the head surface (no eyeball)."""
    eyes = np.concatenate([head.masks["left_eyeball"], head.masks["right_eyeball"]])
    return head.faces[~np.isin(head.faces, eyes).any(1)]


def lmk68(head) -> np.ndarray:
    return head.landmarks.full68.locate(head.v_template, head.faces)


def test_structure_is_flames(head):
    V = head.n_vertices
    assert 3000 <= V <= 6000
    assert head.shapedirs.shape == (V, 3, 300)
    assert head.exprdirs.shape == (V, 3, 100)
    assert head.posedirs.shape == (V, 3, 36)
    assert head.J_regressor.shape == (5, V)
    assert head.weights.shape == (V, 5)
    assert head.parents.tolist() == [-1, 0, 1, 1, 1]
    assert head.source == "onflame procedural head (seed 0)"
    assert set(head.masks) == FLAME_MASKS
    assert head.landmarks.summary() == {"conventions": {"flame51": 51, "flame68": 68, "mica51": 51, "mica68": 68},
                                        "default": "mica", "dynamic": [79, 17]}
    np.testing.assert_allclose(head.weights.sum(1), 1.0, atol=1e-12)
    assert head.weights.min() >= 0


def test_size_and_frame_like_flames_mean_head(head):
    v = head.v_template
    ext = v.max(0) - v.min(0)
    assert np.all(np.abs(ext / FLAME_EXTENT - 1) < 0.2), ext
    # face towards +z: the nose tip is the most forward point, the crown the highest, the neck the lowest
    nose_tip = lmk68(head)[30]
    assert nose_tip[2] > v[:, 2].max() - 0.002
    assert abs(v[np.argmax(v[:, 1]), 2]) < 0.06 and v[:, 1].min() < -0.15


def test_mesh_is_clean_and_outward(head, head_faces):
    v, f = head.v_template, head.faces
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.min() > 1e-7  # 0.1 mm^2: no degenerate triangle
    assert len(np.unique(np.sort(f, 1), axis=0)) == len(f)  # no duplicate triangle
    tm = trimesh.Trimesh(v, f, process=False)
    assert tm.is_winding_consistent
    # three pieces: the head, and the two eyeballs exactly as the eyeball masks say
    comps = sorted(trimesh.graph.connected_components(tm.edges, nodes=np.arange(len(v))), key=len)
    assert len(comps) == 3
    assert {frozenset(comps[0]), frozenset(comps[1])} == {frozenset(head.masks["left_eyeball"]),
                                                          frozenset(head.masks["right_eyeball"])}
    # outward winding: positive volume for the eyeballs and for the head closed at its rim
    for name in ("left_eyeball", "right_eyeball"):
        ball = trimesh.Trimesh(v, f[np.isin(f, head.masks[name]).all(1)], process=False)
        assert ball.is_watertight and ball.volume > 0
        np.testing.assert_allclose(ball.volume, 4 / 3 * np.pi * FLAME_EYEBALL_RADIUS**3, rtol=0.1)
    edges = trimesh.Trimesh(v, head_faces, process=False).edges_sorted
    rim = np.unique(edges[group_rows(edges, require_count=1)])
    t = v[head_faces] - v[rim].mean(0)
    volume = np.einsum("fi,fi->f", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6
    assert 0.004 < volume < 0.0065  # FLAME's mean head holds about 0.0052 m^3


def test_only_opening_is_the_neck_rim(head, head_faces):
    v = head.v_template
    edges = trimesh.Trimesh(v, head_faces, process=False).edges_sorted
    open_edges = edges[group_rows(edges, require_count=1)]
    rim = np.unique(open_edges)
    assert len(open_edges) == len(rim)  # one closed loop
    assert v[rim, 1].max() < -0.12
    assert set(rim) <= set(head.masks["boundary"])


def test_mirror_symmetric(head):
    v = head.v_template
    dist, _ = cKDTree(v).query(v * [-1, 1, 1])
    assert dist.max() < 1e-9


def test_masks_disjoint_where_flames_are(head):
    mk = {k: set(v.tolist()) for k, v in head.masks.items()}
    assert all(mk[k] for k in mk)
    for isolated in ("left_eyeball", "right_eyeball", "left_ear", "right_ear"):
        for other in FLAME_MASKS - {isolated}:
            assert not mk[isolated] & mk[other], (isolated, other)
    for a, b in [("lips", "nose"), ("neck", "face"), ("boundary", "face"), ("left_eye_region", "right_eye_region"),
                 ("lips", "eye_region"), ("nose", "forehead"), ("lips", "scalp")]:
        assert not mk[a] & mk[b], (a, b)
    assert mk["left_eye_region"] | mk["right_eye_region"] <= mk["eye_region"] <= mk["face"]
    assert mk["nose"] | mk["lips"] | mk["forehead"] <= mk["face"]
    v = head.v_template
    for side, sign in (("left", 1), ("right", -1)):
        for region in ("eye_region", "ear", "eyeball"):
            assert np.all(sign * v[head.masks[f"{side}_{region}"], 0] > 0), (side, region)


def test_eyeballs_are_spheres_at_their_joints(head):
    v = head.v_template
    J = head.J_regressor @ v
    for joint, name in ((3, "left_eyeball"), (4, "right_eyeball")):
        r = np.linalg.norm(v[head.masks[name]] - J[joint], axis=1)
        np.testing.assert_allclose(r, FLAME_EYEBALL_RADIUS, atol=1e-9)
        w = head.weights[head.masks[name]]
        np.testing.assert_array_equal(w[:, joint], 1.0)


def test_joints_in_place(head):
    v = head.v_template
    J = head.J_regressor @ v
    root, neck, jaw, left, right = J
    assert root[1] < neck[1] < jaw[1] < left[1]  # neck base, neck, jaw hinge, eyes from bottom up
    assert root[1] < -0.14 and -0.13 < neck[1] < -0.08
    np.testing.assert_allclose(J[:3, 0], 0.0, atol=1e-9)  # on the midline
    assert left[0] > 0.02 and right[0] < -0.02
    ears = v[np.concatenate([head.masks["left_ear"], head.masks["right_ear"]])]
    assert ears[:, 1].min() < jaw[1] < ears[:, 1].max()  # the hinge sits at ear height
    # each row is the plain average of a vertex set
    for row in head.J_regressor:
        nz = row[row > 0]
        np.testing.assert_allclose(nz, 1.0 / len(nz))


def test_skinning_regions(head):
    p = lmk68(head)
    v = head.v_template
    near = lambda x: np.argmin(np.linalg.norm(v - x, axis=1))  # noqa: E731
    w = head.weights
    assert w[near(p[57]), 2] > 0.9       # lower lip moves with the jaw
    assert w[near(p[51]), 2] < 0.1       # upper lip does not
    assert w[near(p[8]), 2] > 0.9        # chin
    assert w[near(p[27]), 2] == pytest.approx(0.0, abs=1e-6)  # nasion
    assert np.all(w[head.masks["forehead"], 2] < 1e-3)
    rim_low = head.masks["boundary"]
    assert w[rim_low, 0].mean() > 0.8    # the neck's rim follows the root


def test_landmarks_in_anatomical_places(head):
    p = lmk68(head)
    v = head.v_template
    J = head.J_regressor @ v
    assert np.argmax(p[:, 2]) == 30                      # nose tip is the most forward landmark
    assert np.all(np.diff(p[27:31, 1]) < 0) and np.all(np.diff(p[27:31, 2]) > 0)  # bridge runs down and out
    for eye, joint in ((range(36, 42), 4), (range(42, 48), 3)):  # 36-41: subject's right eye (x < 0)
        pts = p[list(eye)]
        assert np.all(np.abs(pts[:, :2] - J[joint, :2]) < [0.016, 0.008])
        assert np.all(pts[:, 2] > J[joint, 2] + 0.5 * FLAME_EYEBALL_RADIUS)  # on the lids, in front of the eyeball
    assert np.all(p[17:27, 1] > J[3, 1] + 0.004)           # brows above the eyes
    lips_centre = v[head.masks["lips"]].mean(0)
    assert p[48, 0] < lips_centre[0] - 0.02 and p[54, 0] > lips_centre[0] + 0.02
    assert p[51, 1] > p[62, 1] >= p[66, 1] > p[57, 1]       # upper lip, mouth line, lower lip
    assert np.argmin(p[:17, 1]) == 8                      # chin is the contour's lowest point
    assert p[0, 0] < -0.06 and p[16, 0] > 0.06
    assert p[33, 1] > p[51, 1] and p[8, 1] < p[57, 1]
    np.testing.assert_array_equal(head.landmarks.static51.face_idx, head.landmarks.full68.face_idx[17:])


def test_landmarks_mirror_symmetric(head):
    p = lmk68(head)
    order = np.zeros(68, dtype=int)
    for a, b in IBUG_MIRROR:
        order[a], order[b] = b, a
    np.testing.assert_allclose(p[order] * [-1, 1, 1], p, atol=5e-4)


def test_dynamic_contour_follows_yaw(head, head_faces):
    dyn = head.landmarks.dynamic
    v, f = head.v_template, head.faces
    row = lambda r: SurfacePoints(dyn.face_idx[r], dyn.bary[r]).locate(v, f)  # noqa: E731
    np.testing.assert_allclose(row(0), lmk68(head)[:17], atol=1e-12)
    # rows 40..78 (turned the other way) mirror rows 1..39
    for r in (1, 17, 39):
        np.testing.assert_allclose(row(39 + r), (row(r) * [-1, 1, 1])[::-1], atol=5e-4)
    # as in FLAME's own file, a turn by +r degrees (row r) slides the far (+x) side forward onto the cheek
    far_z = [row(r)[10:, 2].mean() for r in (0, 10, 20, 30, 39)]
    assert np.all(np.diff(far_z) > 0) and far_z[-1] - far_z[0] > 0.03
    # ... where it is the silhouette: seen along -z after rotating by +30 deg about y, faces there are edge-on
    a = np.radians(30)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    n = trimesh.Trimesh(v, f, process=False).face_normals[dyn.face_idx[30]] @ R.T
    assert np.abs(n[11:, 2]).mean() < 0.25 < n[1:7, 2].mean()


def test_eyeballs_move_rigidly_in_every_shape_component(head):
    for name in ("left_eyeball", "right_eyeball"):
        d = head.shapedirs[head.masks[name]]                # (Ve, 3, 300)
        np.testing.assert_allclose(d, np.broadcast_to(d[:1], d.shape), atol=1e-15)
        assert np.abs(head.exprdirs[head.masks[name]]).max() == 0.0
        assert np.abs(head.posedirs[head.masks[name]]).max() == 0.0


def test_basis_sizes(head):
    rms = np.sqrt((head.shapedirs**2).sum(1).mean(0))    # metres per unit coefficient
    assert 0.001 < rms[0] < 0.01                          # first components: a few mm, like FLAME's
    assert rms[:20].mean() > 3 * rms[-100:].mean()
    assert np.all(rms > 0)
    # expressions live on the face: nothing on the back of the head
    back = head.v_template[:, 2] < -0.07
    assert np.abs(head.exprdirs[back]).max() < 1e-6
    face = head.masks["face"]
    assert np.sqrt((head.exprdirs[face] ** 2).sum(1).mean(0)).min() > 1e-5
    # pose correctives: small, none for the eyes
    assert np.abs(head.posedirs).max() < 0.002
    assert np.abs(head.posedirs[:, :, 18:]).max() == 0.0


def test_jaw_opens_the_mouth(head):
    import torch

    layer = FLAME(head, dtype=torch.float64)
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, 6] = 0.3
    closed, opened = layer(), layer(pose=pose)
    lm0, lm1 = closed.landmarks68[0].numpy(), opened.landmarks68[0].numpy()
    assert lm1[57, 1] < lm0[57, 1] - 0.01                # lower lip drops by > 1 cm
    assert abs(lm1[51, 1] - lm0[51, 1]) < 0.001          # upper lip stays
    assert np.abs(lm1[17:27] - lm0[17:27]).max() < 1e-4  # brows stay


def test_deterministic_and_seeded(head):
    again = make_head_model(0)
    other = make_head_model(1)
    for name in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights"):
        np.testing.assert_array_equal(getattr(head, name), getattr(again, name))
    np.testing.assert_array_equal(head.v_template, other.v_template)
    np.testing.assert_array_equal(head.shapedirs[:, :, :17], other.shapedirs[:, :, :17])  # designed part
    assert not np.array_equal(head.shapedirs, other.shapedirs)
    assert other.source.endswith("(seed 1)")


def test_built_from_code_alone(monkeypatch):
    """No file is opened: the model needs neither ../shared nor any data file."""
    def no_files(*args, **kwargs):
        raise AssertionError(f"make_head_model opened {args[:1]}")

    monkeypatch.setattr(builtins, "open", no_files)
    monkeypatch.setattr(io, "open", no_files)
    assert make_head_model(2).n_vertices > 3000


@pytest.mark.parametrize("chumpy", [True, False])
def test_flame_pkl_round_trip(head, tmp_path, chumpy):
    path = tmp_path / "generic_model.pkl"
    save_flame_pkl(head, path, chumpy=chumpy)
    data = path.read_bytes()
    assert data[:2] == b"\x80\x02"                         # pickle protocol 2
    assert (b"chumpy.ch\nCh\n" in data) == chumpy
    back = load_model(path)
    for name in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "parents"):
        np.testing.assert_array_equal(getattr(back, name), getattr(head, name), err_msg=name)


def test_landmark_and_mask_files_round_trip(head, tmp_path):
    written = save_landmark_files(head, tmp_path)
    assert set(written) == {STATIC_51, STATIC_68, MICA_EMBEDDING, MASKS}
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    for files in ([written[STATIC_51], written[STATIC_68]], [written[MICA_EMBEDDING]]):
        emb = load_landmark_embedding(*files)
        for part in ("static51", "full68") + (("dynamic",) if len(files) == 1 else ()):
            ours, theirs = getattr(head.landmarks, part), getattr(emb, part)
            np.testing.assert_array_equal(theirs.face_idx, ours.face_idx)
            np.testing.assert_array_equal(theirs.bary, ours.bary)
    masks = load_masks(written[MASKS])
    assert set(masks) == FLAME_MASKS
    for name, idx in head.masks.items():
        np.testing.assert_array_equal(masks[name], idx)
    # the files drive load_model exactly like FLAME's own
    model = load_model(_pkl(head, tmp_path), landmarks=load_landmark_embedding(written[MICA_EMBEDDING]),
                       masks=masks)
    np.testing.assert_array_equal(model.landmarks.dynamic.face_idx, head.landmarks.dynamic.face_idx)


def _pkl(head, folder):
    path = folder / "generic_model.pkl"
    save_flame_pkl(head, path)
    return path
