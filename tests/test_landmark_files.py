"""Landmark files as labs have them (.npy, .txt, MeshLab .pp, menpo .ljson, BU-3DFE .bnd, .lnd), and
their malformed cousins: one clear error naming the file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from onflame.errors import InputError
from onflame.mesh.landmark_files import NOW7, handedness, landmarks_from_array, read_landmarks

from conftest import FLAME_FIX, SHARED


@pytest.fixture(scope="module")
def face68() -> np.ndarray:
    """(68, 3) iBUG-68 points on FLAME's real template (FLAME's own 68-point embedding), millimetres."""
    from onflame.flame import load_landmark_embedding
    from onflame.mesh import read_mesh

    t = read_mesh(FLAME_FIX / "head_template.obj")
    return load_landmark_embedding(FLAME_FIX / "flame_static_embedding_68.pkl").full68.locate(t.vertices, t.faces) * 1000


def _pp(points: np.ndarray, active: str = "1") -> str:
    rows = "\n".join(f' <point x="{x:.6f}" y="{y:.6f}" z="{z:.6f}" active="{active}" name="{k + 1}"/>'
                     for k, (x, y, z) in enumerate(points))
    return (f'<!DOCTYPE PickedPoints>\n<PickedPoints>\n <DocumentData>\n  <DataFileName name="scan.obj"/>\n'
            f' </DocumentData>\n{rows}\n</PickedPoints>\n')


def test_npy_and_txt_in_ibug_order(tmp_path, face68):
    np.save(tmp_path / "a.npy", face68)
    np.save(tmp_path / "b.npy", face68[17:][None])  # (1, 51, 3), as some tools save a batch of one
    np.savetxt(tmp_path / "c.txt", face68[17:], delimiter=",")
    idx = np.c_[np.arange(1, 52), face68[17:]][::-1]  # 'index x y z', rows shuffled: the index orders them
    np.savetxt(tmp_path / "d.txt", idx, fmt=["%d", "%.6f", "%.6f", "%.6f"])
    a, b, c, d = (read_landmarks(tmp_path / n) for n in ("a.npy", "b.npy", "c.txt", "d.txt"))
    assert a.layout == "ibug68" and np.array_equal(a.ibug, np.arange(68)) and np.allclose(a.points, face68)
    for lm in (b, c, d):
        assert lm.layout == "ibug51" and np.array_equal(lm.ibug, np.arange(17, 68))
        assert np.allclose(lm.points, face68[17:], atol=1e-5)


def test_meshlab_picked_points_with_51_68_and_nows_7(tmp_path, face68):
    for pts, layout in ((face68, "ibug68"), (face68[17:], "ibug51"), (face68[NOW7], "now7")):
        p = tmp_path / f"{layout}.pp"
        p.write_text(_pp(pts))
        lm = read_landmarks(p)
        assert lm.layout == layout and np.allclose(lm.points, pts, atol=1e-5), layout
    assert np.array_equal(read_landmarks(tmp_path / "now7.pp").ibug, [36, 39, 42, 45, 33, 48, 54])


def test_menpo_ljson_groups_in_any_order_map_to_ibug(tmp_path, face68):
    """Groups stored as the 3dMD fixture stores them (chin, leye, reye, leyebrow, nose, reyebrow, mouth)."""
    order = [("chin", range(0, 17)), ("leye", range(36, 42)), ("reye", range(42, 48)), ("leyebrow", range(17, 22)),
             ("nose", range(27, 36)), ("reyebrow", range(22, 27)), ("mouth", range(48, 68))]
    points, labels, k = [], [], 0
    for name, idx in order:
        points += face68[list(idx)].tolist()
        labels.append({"label": name, "mask": list(range(k, k + len(idx)))})
        k += len(idx)
    doc = {"version": 3, "groups": {"LJSON": {"landmarks": {"points": points, "connectivity": []}, "labels": labels}}}
    (tmp_path / "a.ljson").write_text(json.dumps(doc))
    lm = read_landmarks(tmp_path / "a.ljson")
    back = np.full((68, 3), np.nan)
    back[lm.ibug] = lm.points
    assert len(lm) == 68 and np.allclose(back, face68)
    # version 2: one group at the top level, menpo's long label names
    doc2 = {"version": 2, "landmarks": {"points": face68.tolist()},
            "labels": [{"label": "jaw", "mask": list(range(17))}, {"label": "left_eyebrow", "mask": list(range(17, 22))},
                       {"label": "right_eyebrow", "mask": list(range(22, 27))}, {"label": "nose", "mask": list(range(27, 36))},
                       {"label": "left_eye", "mask": list(range(36, 42))}, {"label": "right_eye", "mask": list(range(42, 48))},
                       {"label": "mouth", "mask": list(range(48, 68))}]}
    (tmp_path / "b.ljson").write_text(json.dumps(doc2))
    assert np.array_equal(read_landmarks(tmp_path / "b.ljson").ibug, np.arange(68))


def test_the_real_3dmd_annotation_reads_right_way_round():
    lm = read_landmarks(SHARED / "fixtures" / "scans" / "3dmd_james" / "james.ljson")
    assert len(lm) == 68 and sorted(lm.ibug) == list(range(68)) and handedness(lm) == 1.0
    p = dict(zip(lm.ibug.tolist(), lm.points))
    # in millimetres: eye corners a few cm apart, the right eye (iBUG 36-41) on the same side as contour point 0
    assert 80 < np.linalg.norm(p[36] - p[45]) < 120
    assert np.linalg.norm(p[0] - p[36]) < np.linalg.norm(p[0] - p[45])


def test_bu3dfe_bnd_gives_the_points_it_shares_with_ibug(tmp_path, face68):
    """A synthetic 83-point file laid out by BU-3DFE's groups around known iBUG points: the shared points
    are found by their place on the face, whatever order BU-3DFE numbers them in inside a group."""
    rng = np.random.default_rng(0)

    def loop(a: np.ndarray, b: np.ndarray, n: int, bulge: np.ndarray) -> np.ndarray:
        # a closed contour from corner a to corner b and back, n points, corners included, bulging up/down
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        c = (a + b) / 2 + np.cos(t)[:, None] * (a - b) / 2 + np.sin(t)[:, None] * bulge
        return np.roll(c, rng.integers(n), axis=0)  # start anywhere on the loop

    up = np.array([0.0, 3.0, 0.0])
    groups = [
        loop(face68[36], face68[39], 8, up), loop(face68[42], face68[45], 8, up),  # right eye, left eye
        loop(face68[17], face68[21], 10, up), loop(face68[22], face68[26], 10, up),  # brows
        face68[27:36][[0, 1, 2]], face68[27:36][[3, 4, 5]], face68[27:36][[4, 5, 6, 7, 8, 6]],  # nose parts
        loop(face68[48], face68[54], 12, 2 * up), loop(face68[60], face68[64], 8, up),
        np.vstack([face68[0:17:2], face68[1:17:3][:6]]),  # 15 jaw points, the chin (8) among them
    ]
    pts = np.vstack(groups)
    assert pts.shape == (83, 3)
    (tmp_path / "F0001.bnd").write_text("".join(f"{k}\t\t{x:.4f}\t\t{y:.4f}\t\t{z:.4f}\n" for k, (x, y, z) in enumerate(pts)))
    lm = read_landmarks(tmp_path / "F0001.bnd")
    got = dict(zip(lm.ibug.tolist(), lm.points))
    for i in (36, 39, 42, 45, 17, 21, 22, 26, 48, 54, 60, 64, 8):
        assert np.allclose(got[i], face68[i], atol=1e-3), i
    assert {51, 57, 62, 66} <= set(got)
    # mirrored: the groups swapped make the nose point into the head; the reader still finds the right eye
    swapped = np.vstack([groups[1], groups[0], groups[3], groups[2]] + groups[4:])
    (tmp_path / "swapped.bnd").write_text("".join(f"{x} {y} {z}\n" for x, y, z in swapped))
    got2 = dict(zip(*(lambda m: (m.ibug.tolist(), m.points))(read_landmarks(tmp_path / "swapped.bnd"))))
    assert np.allclose(got2[36], face68[36], atol=1e-3) and np.allclose(got2[45], face68[45], atol=1e-3)


def test_lnd_index_xyz(tmp_path, face68):
    (tmp_path / "s.lnd").write_text("".join(f"{k + 1} {x} {y} {z}\n" for k, (x, y, z) in enumerate(face68[NOW7])))
    lm = read_landmarks(tmp_path / "s.lnd")
    assert lm.layout == "now7" and np.allclose(lm.points, face68[NOW7])


@pytest.mark.parametrize("name, content, problem", [
    ("strings.npy", np.array([["a", "b", "c"]] * 51), "not numbers"),
    ("empty.npy", b"", "empty landmark file"),
    ("shape.npy", np.zeros((50, 3)), "got an array of shape (50, 3)"),
    ("huge.npy", np.zeros((1000, 3)), "got an array of shape (1000, 3)"),
    ("nan.npy", "nan", "not finite"),
    ("zeros.npy", np.zeros((51, 3)), "all landmarks are the same point"),
    ("pickle.npy", np.array([{"a": 1}], dtype=object), "Python objects"),
    ("garbage.npy", b"\x93NUMPY\x01\x00garbage", "not a .npy array"),
    ("words.txt", "one two three\n", "is not a row of numbers"),
    ("two.txt", "1 2\n3 4\n", "landmark rows must be"),
    ("count.txt", "1 2 3\n" * 50, "got an array of shape (50, 3)"),
    ("bad.pp", "<PickedPoints><point x='1' y='2'/></PickedPoints>", "lacks a numeric x, y or z"),
    ("notxml.pp", "<PickedPoints><point", "not valid XML"),
    ("inactive.pp", "inactive", "is not active"),
    ("bomb.pp", '<!DOCTYPE l [<!ENTITY a "aaaa">]><PickedPoints>&a;</PickedPoints>', "entities are not allowed"),
    ("bad.ljson", "{not json", "not valid JSON"),
    ("nolabels.ljson", json.dumps({"landmarks": {"points": [[0, 0, 0]] * 10}}), "got an array of shape (10, 3)"),
    ("few.bnd", "1 2 3\n" * 80, "holds 83 points, found 80"),
    ("mirror.npy", "mirror", "left and right are swapped"),
    ("x.csv", "1 2 3\n", "unknown landmark file type"),
])
def test_malformed_landmark_files_name_the_file_and_the_problem(tmp_path, face68, name, content, problem):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
        path = path.with_suffix(".npy") if path.suffix != ".npy" else path
    elif content == "nan":
        bad = face68.copy()
        bad[5, 1] = np.nan
        np.save(path, bad)
    elif content == "mirror":  # the subject's right and left swapped (x mirrored, order kept)
        np.save(path, face68 * [-1, 1, 1])
    elif content == "inactive":
        path.write_text(_pp(face68[17:], active="0"))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError) as err:
        read_landmarks(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value), str(err.value)


def test_missing_file_and_arrays(tmp_path, face68):
    with pytest.raises(InputError, match="no_such.npy: no such file"):
        read_landmarks(tmp_path / "no_such.npy")
    assert landmarks_from_array(face68[17:]).layout == "ibug51"
    with pytest.raises(InputError, match="<array>: landmarks must be 7, 51 or 68"):
        landmarks_from_array(np.zeros((3, 3)))
