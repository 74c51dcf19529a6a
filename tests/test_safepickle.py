"""The restricted unpickler: Python 2 pickles load, pickles that would run code are refused and run nothing."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.storage

from onflame import safepickle
from onflame.errors import InputError, UnsafePickleError
from onflame.flame import load_landmark_embedding, load_masks, load_model

from conftest import FLAME_FIX


# --- Python 2 pickles -------------------------------------------------------------------------------

class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for protocol 2: every string is a py2 ``str``, stored with
    (SHORT_)BINSTRING (Python 3 writes BINUNICODE, or ``_codecs.encode`` for bytes)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # Python 2's numpy lived at numpy.core; GLOBAL arguments are plain text lines, so this is a safe edit
    return buf.getvalue().replace(b"numpy._core.", b"numpy.core.")


def opcodes(data: bytes) -> set[str]:
    return {op.name for op, _, _ in pickletools.genops(data)}


def test_python2_pickle_with_numpy_arrays_and_latin1_strings_loads(tmp_path):
    arrays = {
        "v_template": np.arange(12, dtype=np.float64).reshape(4, 3) / 7,
        "f": np.array([[0, 1, 2], [1, 2, 3]], dtype=np.uint32),
        "weights": np.linspace(0, 1, 10, dtype=np.float32),
        "big": np.arange(100, dtype=np.int64),  # > 255 bytes of data: the long BINSTRING form
    }
    obj = dict(arrays, name=b"t\xeate", bs_type="lrotmin", nested=[{"x": np.float64(2.5)}, (1, 2)])
    data = py2_dumps(obj)
    ops = opcodes(data)
    assert "PROTO" in ops and {"SHORT_BINSTRING", "BINSTRING"} <= ops
    assert not ops & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}
    assert b"numpy.core.multiarray\n_reconstruct" in data and b"_codecs" not in data

    path = tmp_path / "py2.pkl"
    path.write_bytes(data)
    out = safepickle.load(path)
    for key, arr in arrays.items():
        assert out[key].dtype == arr.dtype and np.array_equal(out[key], arr), key
    assert out["name"] == "t\xeate"  # a py2 str is read as latin1
    assert out["bs_type"] == "lrotmin"
    assert out["nested"][0]["x"] == 2.5 and out["nested"][1] == (1, 2)


def test_python2_flame_model_pickle_loads(tmp_path, flame_plain_pkl):
    """The 2017 FLAME files were written by Python 2: the same model re-pickled that way loads identically."""
    d = safepickle.load(flame_plain_pkl)
    path = tmp_path / "generic_model_py2.pkl"
    path.write_bytes(py2_dumps(d))
    a, b = load_model(flame_plain_pkl), load_model(path)
    for name in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "parents"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_protocol0_ordered_dict_and_sparse_matrix_load(tmp_path):
    import scipy.sparse as sp

    m = sp.csc_matrix(np.array([[0, 1.5, 0], [2.0, 0, 3.0]]))
    obj = OrderedDict([("b", 1), ("a", m)])
    for protocol in (0, 2, 4):
        out = safepickle.loads(pickle.dumps(obj, protocol=protocol))
        assert list(out) == ["b", "a"]
        assert np.array_equal(np.asarray(out["a"].todense()), [[0, 1.5, 0], [2.0, 0, 3.0]])


@pytest.mark.parametrize("protocol", range(6))
def test_numpy_arrays_in_every_pickle_protocol(protocol):
    a = np.arange(12.0).reshape(3, 4)
    out = safepickle.loads(pickle.dumps({"a": a, "fortran": np.asfortranarray(a), "n": np.uint32(7)}, protocol=protocol))
    assert np.array_equal(out["a"], a) and np.array_equal(out["fortran"], a) and out["n"] == 7


# --- pickles that would run code ----------------------------------------------------------------------

class Reduce:
    """Pickles as ``func(*args)``: what a malicious file contains."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def evil_payloads(marker: Path) -> dict[str, bytes]:
    """Pickles that would create ``marker`` if loaded with ``pickle.load``."""
    cmd = f"touch {marker}"
    return {
        "os.system": f"cos\nsystem\n(S'{cmd}'\ntR.".encode(),  # hand-written protocol 0
        "posix.system": pickle.dumps(Reduce(os.system, cmd), protocol=2),
        "builtins.eval": pickle.dumps(Reduce(eval, f"open({str(marker)!r}, 'w')"), protocol=4),
        "builtins.exec": pickle.dumps(Reduce(exec, f"open({str(marker)!r}, 'w')"), protocol=2),
        "subprocess.Popen": pickle.dumps(Reduce(subprocess.Popen, ["touch", str(marker)]), protocol=4),
        "commands.Popen": pickle.dumps(Reduce(subprocess.Popen, ["touch", str(marker)]), protocol=2),  # py2 name
        # getattr(object, "__subclasses__"): the usual first step out of a sandbox (object itself is allowed)
        "builtins.getattr": b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.",
        "numpy.load": pickle.dumps(Reduce(np.load, str(marker), "r", True), protocol=2),
        # hidden inside what looks like a FLAME model
        "nested": pickle.dumps({"v_template": np.zeros((3, 3)), "f": [Reduce(os.system, cmd)]}, protocol=2),
    }


def _evil_cases():
    return list(evil_payloads(Path("/nonexistent")).keys())


@pytest.mark.parametrize("case", _evil_cases())
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, case):
    marker = tmp_path / "PWNED"
    # each payload does run under the stdlib unpickler (see test_the_evil_payloads_would_really_run)
    path = tmp_path / "evil.pkl"
    path.write_bytes(evil_payloads(marker)[case])
    with pytest.raises(UnsafePickleError) as err:
        safepickle.load(path)
    assert not marker.exists()
    assert err.value.path == str(path) and str(err.value).startswith(f"{path}: ")
    assert "refused pickle global" in str(err.value)
    # the same file given as a FLAME model or masks: refused with the file's name, nothing runs
    for loader in (load_model, load_masks, load_landmark_embedding):
        with pytest.raises(UnsafePickleError, match=re.escape(str(path))):
            loader(path)
    assert not marker.exists()


def test_the_evil_payloads_would_really_run(tmp_path):
    """Guard for the test above: with the stdlib unpickler the payload does create the marker."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(evil_payloads(marker)["os.system"])
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'))"], check=True)
    assert marker.exists()


def test_refusal_names_the_global(tmp_path):
    marker = tmp_path / "PWNED"
    with pytest.raises(UnsafePickleError, match=r"subprocess\.Popen"):
        safepickle.loads(evil_payloads(marker)["subprocess.Popen"], "x.pkl")
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        safepickle.loads(evil_payloads(marker)["os.system"], "x.pkl")


def test_evil_object_npy_is_refused(tmp_path):
    """MICA-style object .npy (image lists, embeddings) holding a code-running payload."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "FRGC.npy"
    np.save(path, np.array({"actor": Reduce(os.system, f"touch {marker}")}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=re.escape(str(path))):
        safepickle.load_npy_object(path)
    assert not marker.exists()


# --- MICA's embedding: torch tensors inside the pickle ----------------------------------------------

def test_torch_payload_is_read_weights_only(monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    d = safepickle.load_npy_object(FLAME_FIX / "landmark_embedding.npy")
    assert calls and all(w is True for w in calls)
    assert isinstance(d["dynamic_lmk_faces_idx"], torch.Tensor)
    assert tuple(d["dynamic_lmk_faces_idx"].shape) == (79, 17)
    assert tuple(d["dynamic_lmk_bary_coords"].shape) == (79, 17, 3)


def test_evil_torch_payload_is_refused(tmp_path):
    """A tensor slot whose torch-serialised bytes name os.system: torch's weights-only loader refuses it."""
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    torch.save({"x": Reduce(os.system, f"touch {marker}")}, buf, _use_new_zipfile_serialization=False)
    payload = Reduce(torch.storage._load_from_bytes, buf.getvalue())
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, np.array({"dynamic_lmk_faces_idx": payload}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=re.escape(str(path))) as err:
        safepickle.load_npy_object(path)
    assert "weights_only" in str(err.value)
    assert not marker.exists()


# --- damaged files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "not_found"])
def test_damaged_pickle_gives_input_error_naming_the_file(tmp_path, damage):
    good = pickle.dumps({"a": np.arange(1000.0), "b": "text"}, protocol=2)
    path = tmp_path / "damaged.pkl"
    if damage != "not_found":
        path.write_bytes({"empty": b"", "truncated": good[: len(good) // 2],
                          "garbage": b"\x80\x02this is not a pickle" * 10}[damage])
    with pytest.raises(InputError) as err:
        safepickle.load(path)
    assert not isinstance(err.value, UnsafePickleError)
    assert err.value.path == str(path) and str(err.value).startswith(f"{path}: ")


def test_damaged_npy_gives_input_error(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array({"a": 1}, dtype=object), allow_pickle=True)
    data = path.read_bytes()
    for bad in (b"", b"plain text", data[:40], data[:-5]):
        path.write_bytes(bad)
        with pytest.raises(InputError, match=re.escape(str(path))):
            safepickle.load_npy_object(path)


def test_numeric_npy_is_read_without_unpickling(tmp_path):
    path = tmp_path / "n.npy"
    np.save(path, np.arange(6).reshape(2, 3))
    assert np.array_equal(safepickle.load_npy_object(path), np.arange(6).reshape(2, 3))
