"""Loading FLAME models, landmark embeddings and masks: official layouts, onflame's .npz, bad files."""
from __future__ import annotations

import importlib.util
import os
import pickle
import re

import numpy as np
import pytest

from onflame import safepickle
from onflame.errors import InputError
from onflame.flame import (
    FlameModel, LandmarkEmbedding, SurfacePoints, load_landmark_embedding, load_masks, load_model, save_model,
)
from onflame.flame.model import model_from_dict

from conftest import FLAME_FIX, SHARED

MODEL_ARRAYS = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "parents")


@pytest.fixture(scope="module")
def generator_dict():
    """The dict the fixture tool pickles, built by the tool itself: the independent reference."""
    spec = importlib.util.spec_from_file_location("make_synthetic_flame", SHARED / "tools" / "make_synthetic_flame.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build()


def assert_models_equal(a: FlameModel, b: FlameModel) -> None:
    for name in MODEL_ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y), name


# --- official pickles ------------------------------------------------------------------------------------

def test_chumpy_and_plain_pickles_load_to_identical_arrays(flame_pkl, flame_plain_pkl):
    assert b"chumpy.ch" in flame_pkl.read_bytes()  # shapedirs is a pickled chumpy object, as in FLAME's files
    assert b"chumpy" not in flame_plain_pkl.read_bytes()
    assert_models_equal(load_model(flame_pkl), load_model(flame_plain_pkl))


def test_loaded_model_matches_what_was_pickled(flame_pkl, generator_dict):
    d = generator_dict
    m = load_model(flame_pkl)
    assert m.v_template.shape == (5023, 3) and m.faces.shape == (9976, 3) and m.faces.dtype == np.int64
    assert np.array_equal(m.v_template, d["v_template"])
    assert np.array_equal(m.faces, d["f"].astype(np.int64))
    assert np.array_equal(m.shapedirs, d["shapedirs"][:, :, :300])        # identity first ...
    assert np.array_equal(m.exprdirs, d["shapedirs"][:, :, 300:])         # ... then 100 expression components
    assert np.array_equal(m.posedirs, d["posedirs"])
    assert np.array_equal(m.J_regressor, np.asarray(d["J_regressor"].todense()))  # sparse in the file
    assert np.array_equal(m.weights, d["weights"])
    assert m.parents.tolist() == [-1, 0, 1, 1, 1]  # kintree_table's 2**32 - 1 root marker becomes -1
    assert (m.n_shape, m.n_expression, m.n_joints, m.n_vertices) == (300, 100, 5, 5023)
    assert m.source == str(flame_pkl)


def test_model_vertices_are_flames_head_template(flame_pkl):
    """The synthetic model keeps FLAME's real mean head: compare with the OBJ read independently."""
    v = np.array([[float(x) for x in line.split()[1:4]]
                  for line in open(FLAME_FIX / "head_template.obj") if line.startswith("v ")])
    m = load_model(flame_pkl)
    assert np.allclose(m.v_template, v, atol=1e-9)
    extent = m.v_template.max(0) - m.v_template.min(0)
    assert 0.1 < extent.max() < 0.4  # metres: a head, not millimetres


# --- onflame's .npz ---------------------------------------------------------------------------------------

def test_npz_round_trip_keeps_arrays_landmarks_and_masks(tmp_path, flame_model):
    path = tmp_path / "flame.npz"
    save_model(flame_model, path)
    back = load_model(path)
    assert_models_equal(flame_model, back)
    for part in ("static51", "full68", "dynamic"):
        a, b = getattr(flame_model.landmarks, part), getattr(back.landmarks, part)
        assert a is not None and b is not None, part
        assert np.array_equal(a.face_idx, b.face_idx) and np.array_equal(a.bary, b.bary), part
    assert flame_model.masks.keys() == back.masks.keys() and len(back.masks) == 14
    for name, idx in flame_model.masks.items():
        assert np.array_equal(idx, back.masks[name]), name
    with np.load(path, allow_pickle=False) as z:  # pickle-free: every member loads without allow_pickle
        assert all(z[k].dtype != object for k in z.files)
    assert not list(tmp_path.glob("*.tmp"))


def test_npz_round_trip_of_a_partial_embedding(tmp_path, flame_plain_pkl):
    emb = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl")
    m = load_model(flame_plain_pkl, landmarks=emb)
    save_model(m, tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    assert back.landmarks.full68 is None and back.landmarks.dynamic is None and back.masks == {}
    assert np.array_equal(back.landmarks.static51.face_idx, emb.static51.face_idx)
    # an embedding given on load is merged with the file's: its parts win, the file fills the rest
    e68 = load_landmark_embedding(FLAME_FIX / "flame_static_embedding_68.pkl")
    more = load_model(tmp_path / "m.npz", landmarks=e68)
    assert np.array_equal(more.landmarks.static51.face_idx, emb.static51.face_idx)
    assert np.array_equal(more.landmarks.full68.face_idx, e68.full68.face_idx)
    mica = load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy")
    over = load_model(tmp_path / "m.npz", landmarks=mica)
    assert np.array_equal(over.landmarks.static51.face_idx, mica.static51.face_idx)
    assert over.landmarks.dynamic.face_idx.shape == (79, 17)


def _corrupt_npz(good: bytes, how: str) -> bytes:
    if how == "truncated":
        return good[: len(good) // 2]
    if how == "garbage":
        return b"PK\x03\x04" + b"\x00" * 100
    if how == "empty":
        return b""
    if how == "flipped":  # a byte inside the first member's data: zipfile's CRC check catches it
        data = bytearray(good)
        data[200] ^= 0xFF
        return bytes(data)
    raise ValueError(how)


@pytest.fixture(scope="module")
def small_npz_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "small.npz"
    save_model(small_model(), path)
    return path.read_bytes()


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "flipped"])
def test_corrupt_npz_gives_input_error_naming_the_file(tmp_path, small_npz_bytes, how):
    path = tmp_path / "model.npz"
    path.write_bytes(_corrupt_npz(small_npz_bytes, how))
    with pytest.raises(InputError) as err:
        load_model(path)
    assert err.value.path == str(path)


def test_npz_that_is_not_an_onflame_model(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, betas=np.zeros(400))
    with pytest.raises(InputError, match="not an onflame model file"):
        load_model(path)
    np.savez(path, data=np.array([{"a": 1}], dtype=object))  # needs pickle to read: refused
    with pytest.raises(InputError, match=re.escape(str(path))):
        load_model(path)


def test_npz_with_inconsistent_arrays(tmp_path):
    m = small_model()
    save_model(m, tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["weights"] = arrays["weights"][:, :4]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=r"weights .* expected"):
        load_model(tmp_path / "bad.npz")
    del arrays["weights"]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match="lacks array 'weights'"):
        load_model(tmp_path / "bad.npz")


# --- damaged or wrong pickles -----------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [0, 1000, 0.5, -10])
def test_truncated_model_pickle_gives_input_error(tmp_path, flame_plain_pkl, cut):
    data = flame_plain_pkl.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data[:n])
    with pytest.raises(InputError) as err:
        load_model(path)
    assert err.value.path == str(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "nope.pkl")


def small_dict(V: int = 12) -> dict:
    """A tiny model with FLAME's structure (5 joints, 3 + 100 blendshapes)."""
    rng = np.random.default_rng(0)
    w = rng.random((V, 5))
    return {
        "v_template": rng.standard_normal((V, 3)) * 0.1,
        "f": np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [V - 3, V - 2, V - 1]], dtype=np.uint32),
        "shapedirs": rng.standard_normal((V, 3, 103)) * 1e-3,
        "posedirs": rng.standard_normal((V, 3, 36)) * 1e-4,
        "J_regressor": np.full((5, V), 1.0 / V),
        "weights": w / w.sum(1, keepdims=True),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
    }


def small_model() -> FlameModel:
    return model_from_dict(small_dict(), "small")


def _bad(key: str, value) -> dict:
    d = small_dict()
    if value is None:
        del d[key]
    else:
        d[key] = value(d[key]) if callable(value) else value
    return d


BAD_DICTS = {
    "missing posedirs": (_bad("posedirs", None), "missing posedirs"),
    "posedirs 30 columns": (_bad("posedirs", lambda a: a[:, :, :30]), "posedirs"),
    "weights 4 joints": (_bad("weights", lambda a: a[:, :4]), "weights"),
    "J_regressor short": (_bad("J_regressor", lambda a: a[:, :-1]), "J_regressor"),
    "shapedirs 2-D": (_bad("shapedirs", lambda a: a[:, :, 0]), "shapedirs"),
    "shapedirs without expression": (_bad("shapedirs", lambda a: a[:, :, :50]), "expression"),
    "v_template (V, 2)": (_bad("v_template", lambda a: a[:, :2]), "v_template"),
    "faces out of range": (_bad("f", lambda a: a + 100), "face index out of range"),
    "faces (F, 4)": (_bad("f", lambda a: np.hstack([a, a[:, :1]])), "faces"),
    "parents not a tree": (_bad("kintree_table", np.array([[4294967295, 0, 3, 1, 1], [0, 1, 2, 3, 4]])), "parents"),
    "NaN in template": (_bad("v_template", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a)), "NaN"),
    "text instead of array": (_bad("weights", "hello"), "not a FLAME model"),
}


@pytest.mark.parametrize("case", list(BAD_DICTS))
def test_wrong_shaped_model_dict_gives_input_error(tmp_path, case):
    d, problem = BAD_DICTS[case]
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(InputError) as err:
        load_model(path)
    msg = str(err.value)
    assert err.value.path == str(path) and msg.startswith(f"{path}: not a FLAME model")
    assert problem in msg
    assert msg.count(str(path)) == 1  # named once, not wrapped twice


def test_a_pickle_that_is_not_a_dict(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InputError, match="holds a list"):
        load_model(path)


def test_the_small_valid_dict_loads(tmp_path):
    """Guard for the bad-dict cases: the unmodified dict is a valid model."""
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(small_dict(), protocol=2))
    m = load_model(path)
    assert m.shapedirs.shape == (12, 3, 3) and m.exprdirs.shape == (12, 3, 100)


# --- landmark embeddings and masks ------------------------------------------------------------------------

def test_micas_landmark_embedding_loads():
    emb = load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy")
    summary = emb.summary()
    assert summary["conventions"] == {"mica51": 51, "mica68": 68} and summary["dynamic"] == [79, 17]
    assert summary["default"] == "mica" and set(summary["files"]) == {"mica51", "mica68", "dynamic"}
    for pts in (emb.static51, emb.full68, emb.dynamic):
        assert pts.face_idx.dtype == np.int64 and pts.bary.dtype == np.float64
        assert pts.face_idx.min() >= 0 and pts.face_idx.max() < 9976  # FLAME has 9976 triangles
        assert np.allclose(pts.bary.sum(-1), 1, atol=1e-6)  # barycentric: each point lies in its triangle
    # iBUG-68 = 17 jaw-contour points + the 51 inner points
    assert np.array_equal(emb.full68.face_idx[17:], emb.static51.face_idx)
    assert np.allclose(emb.full68.bary[17:], emb.static51.bary, atol=1e-6)


def test_flame_static_embeddings_load_and_agree():
    e51 = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl")
    e68 = load_landmark_embedding(FLAME_FIX / "flame_static_embedding_68.pkl")
    assert e51.summary()["conventions"] == {"flame51": 51} and e51.full68 is None and e51.dynamic is None
    assert e68.summary()["conventions"] == {"flame68": 68} and e68.static51 is None
    assert np.array_equal(e68.full68.face_idx[17:], e51.static51.face_idx)


def test_flames_and_micas_conventions_are_kept_apart_not_merged():
    """Both 51-point files beside a model: two named conventions, MICA's the default, FLAME's still there,
    and their difference on the template is where the fixtures' README says (brows 5-13 mm, nose bridge)."""
    from onflame.flame.embedding import INNER51, compare_conventions
    from onflame.mesh import read_mesh

    both = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl", FLAME_FIX / "landmark_embedding.npy")
    assert set(both.conventions) == {"flame51", "mica51", "mica68"} and both.default_family == "mica"
    assert both.static51 is both.conventions["mica51"]
    assert both.ibug_points("flame", INNER51).same_as(both.conventions["flame51"])
    assert both.ibug_points("flame", np.arange(17)) is None  # no jaw contour in FLAME's 51-point file
    t = read_mesh(FLAME_FIX / "head_template.obj")
    (pair,) = compare_conventions(both, t.vertices, t.faces)
    assert {pair["a"], pair["b"]} == {"mica", "flame"}
    assert 12.0 < pair["max_mm"] < 14.0 and set(pair["differ"]) == {"brows", "nose"}
    assert 5.0 < pair["differ"]["brows"] < 14.0 and 2.0 < pair["differ"]["nose"] < 6.0


def test_two_files_that_disagree_on_one_convention_are_an_error(tmp_path):
    good = safepickle.load(FLAME_FIX / "flame_static_embedding.pkl")
    moved = dict(good, lmk_face_idx=np.roll(np.asarray(good["lmk_face_idx"]), 1))
    other = tmp_path / "flame_static_embedding.pkl"
    other.write_bytes(pickle.dumps(moved, protocol=2))
    with pytest.raises(InputError, match="'flame51' landmarks differ from those in .*flame_static_embedding.pkl"):
        load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl", other)
    # the same file twice is not a conflict
    again = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl", FLAME_FIX / "flame_static_embedding.pkl")
    assert set(again.conventions) == {"flame51"}


def test_landmarks_locate_on_the_mesh(flame_model):
    pts = flame_model.landmarks.static51
    p = pts.locate(flame_model.v_template, flame_model.faces)
    corners = flame_model.v_template[flame_model.faces[pts.face_idx]]  # (51, 3, 3)
    assert p.shape == (51, 3)
    assert np.allclose(p, (pts.bary[:, :, None] * corners).sum(1))
    lo, hi = corners.min(1), corners.max(1)  # inside each triangle's bounding box
    assert np.all(p >= lo - 1e-12) and np.all(p <= hi + 1e-12)


def test_masks_load():
    masks = load_masks(FLAME_FIX / "FLAME_masks.pkl")
    assert set(masks) == {"eye_region", "neck", "left_eyeball", "right_eyeball", "right_ear", "right_eye_region",
                          "forehead", "lips", "nose", "scalp", "boundary", "face", "left_ear", "left_eye_region"}
    for name, idx in masks.items():
        assert idx.dtype == np.int64 and idx.ndim == 1 and idx.min() >= 0 and idx.max() < 5023, name
    assert len(masks["left_eyeball"]) == len(masks["right_eyeball"]) == 546  # FLAME's eyeball meshes
    assert not set(masks["left_eyeball"]) & set(masks["right_eyeball"])
    assert set(masks["left_eye_region"]) <= set(masks["eye_region"])


def test_bad_embedding_and_mask_files(tmp_path):
    p = tmp_path / "emb.pkl"
    p.write_bytes(pickle.dumps({"lmk_face_idx": np.zeros(51, np.int64), "lmk_b_coords": np.zeros((50, 3))}))
    with pytest.raises(InputError, match="do not fit"):
        load_landmark_embedding(p)
    p.write_bytes(pickle.dumps({"something": 1}))
    with pytest.raises(InputError, match="not a landmark embedding"):
        load_landmark_embedding(p)
    p.write_bytes(pickle.dumps({"face": np.array([0.5, 1.5])}))
    with pytest.raises(InputError, match="not 1-D integer indices"):
        load_masks(p)
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(InputError, match=re.escape(str(p))):
        load_masks(p)


def test_embedding_outside_the_mesh_is_refused(flame_plain_pkl):
    bad = LandmarkEmbedding({"flame51": SurfacePoints(np.full(51, 10**6), np.full((51, 3), 1 / 3))})
    with pytest.raises(InputError, match="out of range"):
        load_model(flame_plain_pkl, landmarks=bad)


def test_a_pkl_is_read_once_then_from_its_pickle_free_copy(tmp_path, flame_pkl, monkeypatch):
    """The second load skips the pickle; a changed .pkl is read again; a read-only folder caches elsewhere."""
    import shutil

    pkl = tmp_path / "generic_model.pkl"
    shutil.copy(flame_pkl, pkl)
    first = load_model(pkl)
    copy = tmp_path / ".generic_model.pkl.onflame.npz"
    assert copy.is_file() and not list(tmp_path.glob("*.tmp"))
    calls = []
    real_load = safepickle.load
    monkeypatch.setattr(safepickle, "load", lambda p, *a, **k: calls.append(p) or real_load(p, *a, **k))
    again = load_model(pkl)
    assert calls == [] and again.source == str(pkl)
    for name in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "faces", "parents"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    # the .pkl changes (another size and time): the copy is stale and the pickle is read again
    with open(pkl, "ab") as fh:
        fh.write(b"\n")
    load_model(pkl)
    assert len(calls) == 1
    # a folder that cannot be written: the copy goes to $XDG_CACHE_HOME/onflame/models
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(flame_pkl, ro / "generic_model.pkl")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    orig = load_model.__globals__["_save_copy"]

    def save(model, path, **stamp):
        if path.parent == ro:
            raise PermissionError(13, "Permission denied", str(path))
        orig(model, path, **stamp)

    monkeypatch.setitem(load_model.__globals__, "_save_copy", save)
    load_model(ro / "generic_model.pkl")
    assert len(list((tmp_path / "xdg" / "onflame" / "models").glob("*.npz"))) == 1
    monkeypatch.setenv("ONFLAME_MODEL_CACHE", "0")
    load_model(ro / "generic_model.pkl")
    assert len(calls) == 3  # caching off: the pickle every time


def _model_arrays(model) -> dict[str, np.ndarray]:
    return {name: getattr(model, name) for name in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs",
                                                    "J_regressor", "weights", "parents")}


def _flip_byte_in(path, array_name: str) -> None:
    """Change one byte in the middle of ``array_name``'s data (a disk error inside the copy)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{array_name}.npy")
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
        at = info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2
        fh.seek(at)
        byte = fh.read(1)[0]
        fh.seek(at)
        fh.write(bytes([byte ^ 0x40]))


def _pickled_member(path) -> None:
    """The copy with the same stamp, its shapedirs swapped for a pickled object array."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["shapedirs"] = np.array([{"a": 1}], dtype=object)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


COPY_DAMAGES = {
    "cut in half": lambda p: os.truncate(p, p.stat().st_size // 2),
    "cut by one byte": lambda p: os.truncate(p, p.stat().st_size - 1),
    "empty": lambda p: os.truncate(p, 0),
    "one byte of shapedirs changed": lambda p: _flip_byte_in(p, "shapedirs"),
    "one byte of faces changed": lambda p: _flip_byte_in(p, "faces"),
    "not a zip": lambda p: p.write_bytes(b"\x93NUMPY" + bytes(1000)),
    "a pickled member": _pickled_member,
    "a folder": lambda p: (p.unlink(), p.mkdir()),
    "a FIFO": lambda p: (p.unlink(), os.mkfifo(p)),
}


def _pickle_with_its_copy(tmp_path, flame_pkl, monkeypatch):
    """``(pickle, its pickle-free copy, the pickle's arrays)``: the test model copied into ``tmp_path``, its
    arrays read with the copy turned off, then loaded once with it on (which writes the copy)."""
    import shutil

    pkl = tmp_path / "generic_model.pkl"
    shutil.copy(flame_pkl, pkl)
    monkeypatch.setenv("ONFLAME_MODEL_CACHE", "0")
    truth = _model_arrays(load_model(pkl))
    monkeypatch.setenv("ONFLAME_MODEL_CACHE", "1")
    load_model(pkl)
    return pkl, tmp_path / ".generic_model.pkl.onflame.npz", truth


@pytest.mark.parametrize("damage", list(COPY_DAMAGES))
def test_a_damaged_model_copy_is_made_again_from_the_pickle(tmp_path, flame_pkl, monkeypatch, damage):
    """A copy that is cut short, changed, not a zip, pickled or not a file is never used: the model comes
    from the pickle, with the pickle's arrays, and a sound copy replaces it (where it can)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    pkl, copy, truth = _pickle_with_its_copy(tmp_path, flame_pkl, monkeypatch)
    COPY_DAMAGES[damage](copy)
    calls = []
    real_load = safepickle.load
    monkeypatch.setattr(safepickle, "load", lambda p, *a, **k: calls.append(p) or real_load(p, *a, **k))
    again = load_model(pkl)
    assert calls == [pkl], "the damaged copy was used instead of the pickle"
    for name, value in truth.items():
        assert np.array_equal(getattr(again, name), value), name
    third = load_model(pkl)  # from the copy made again (beside the pickle, or in the cache folder)
    assert calls == [pkl]
    for name, value in truth.items():
        assert np.array_equal(getattr(third, name), value), name


def test_the_model_copy_holds_the_pickles_arrays_and_no_pickle(tmp_path, flame_pkl, monkeypatch):
    """Every array of the copy equals the pickle's, bit for bit and dtype for dtype; the copy is a plain
    .npz that np.load reads without pickles, each array's data 64-byte aligned in the file."""
    import zipfile

    from onflame.fileio.aligned import ALIGN

    pkl, copy, truth = _pickle_with_its_copy(tmp_path, flame_pkl, monkeypatch)
    cached = load_model(pkl)
    for name, value in truth.items():
        got = getattr(cached, name)
        assert got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value), name
        assert got.flags.writeable, name  # as np.load's arrays: a caller may change its model in place
    with np.load(copy, allow_pickle=False) as z:
        assert np.array_equal(z["shapedirs"], truth["shapedirs"])
    with zipfile.ZipFile(copy) as zf, open(copy, "rb") as fh:
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED, info.filename
            fh.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
            start = info.header_offset + 30 + int(name_len) + int(extra_len)
            fh.seek(start)
            header_len = 10 + int(np.frombuffer(fh.read(10)[8:10], "<u2")[0])  # .npy 1.0: magic, version, length
            assert (start + header_len) % ALIGN == 0, info.filename
