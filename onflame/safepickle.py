"""A restricted unpickler for FLAME and MICA files.

FLAME's ``generic_model.pkl`` (2017–2023), its landmark embeddings and region masks, MICA's
``landmark_embedding.npy`` and ``image_paths/*.npy`` are all pickles, and a pickle can name any Python
callable. This unpickler resolves only a short allow-list of globals and refuses every other one with
:class:`~onflame.errors.UnsafePickleError`, so a file that asks for ``os.system`` is refused, not run.

What it rebuilds:

- numpy arrays, dtypes and scalars (NumPy 1 and 2 module paths);
- scipy sparse matrices, rebuilt from their stored ``data/indices/indptr`` (no scipy class is called);
- chumpy objects (``chumpy.*``), as inert placeholders whose stored value ``x`` replaces them, so chumpy
  need not be installed (it does not import on NumPy 2 / Python 3.11);
- torch tensors pickled inside MICA's embedding: the tensor payload is read with
  ``torch.load(..., weights_only=True)``, torch's own restricted loader;
- ``_codecs.encode`` (bytes in protocol-2 pickles), ``OrderedDict``, ``set``, ``frozenset``, ``slice``, ``complex``.

Python 2 pickles work: strings are read as latin1, as numpy's own pickles require.

Sizes are bounded: a file is read with :func:`onflame.fileio.read_bounded` (a link to ``/dev/zero`` or an
endless stream is refused at :data:`~onflame.fileio.MAX_READ_BYTES`), and an array a pickle asks numpy to
allocate is checked against the same limit first (numpy's ``_reconstruct`` allocates the shape it is
given; ``numpy.ndarray`` may only appear as the class argument numpy's own pickles pass, never be called).
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np

from .errors import InputError, UnsafePickleError
from .fileio import MAX_READ_BYTES, npy_header, read_bounded, read_npy


class _Inert:
    """Placeholder for an allowed foreign class: stores the pickled state, has no behaviour."""

    module = ""
    name = ""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChumpyObject(_Inert):
    """A ``chumpy.*`` object; its numeric value is ``state['x']``."""


class _SparseMatrix(_Inert):
    """A ``scipy.sparse`` matrix; its arrays are in ``state``."""


def _inert_class(base: type, module: str, name: str) -> type:
    return type(name, (base,), {"module": module, "name": name})


def _reconstructor(cls: type, base: type, state: Any = None) -> Any:
    """Safe stand-in for ``copy_reg._reconstructor`` (protocol 0/1): only inert placeholders."""
    if isinstance(cls, type) and issubclass(cls, _Inert):
        return cls.__new__(cls)
    if cls is OrderedDict:
        return OrderedDict()
    raise pickle.UnpicklingError(f"copy_reg._reconstructor of {cls!r} is not allowed")


def _torch_from_bytes(data: bytes) -> Any:
    """Rebuild a torch storage pickled with ``torch.storage._load_from_bytes``, weights-only."""
    import torch  # torch is only needed for files that contain tensors

    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:  # what torch's weights-only loader raises for a forbidden global
        lines = [line for line in str(exc).splitlines() if line.strip()] or ["refused"]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0])
        raise UnsafePickleError(None, f"torch payload refused by torch.load(weights_only=True): {reason}") from None


def _torch_rebuild_tensor(*args: Any) -> Any:
    """torch's own tensor rebuild; its arguments were themselves unpickled under this allow-list."""
    from torch._utils import _rebuild_tensor_v2

    return _rebuild_tensor_v2(*args)


class _NdarrayClass:
    """What ``numpy.ndarray`` resolves to: numpy's pickles pass it to ``_reconstruct`` as the class to build;
    calling it (``ndarray(shape)``: an allocation of any size, uninitialised) is refused."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("calling numpy.ndarray directly is not allowed")


def _checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` for plain arrays, with the size it allocates checked first (numpy's own
    pickles pass shape ``(0,)``; the data comes with ``__setstate__``, whose length numpy checks)."""
    if subtype is not _NdarrayClass and subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct of {subtype!r} is not allowed")
    dt = np.dtype(dtype)
    count = int(np.prod(np.asarray(shape, dtype=np.int64), dtype=object))
    if count < 0 or count * max(dt.itemsize, 1) > MAX_READ_BYTES:
        raise pickle.UnpicklingError(f"an array of shape {tuple(np.atleast_1d(shape).tolist())} {dt} is larger "
                                     f"than onflame reads ({MAX_READ_BYTES} bytes)")
    return np.ndarray.__new__(np.ndarray, shape, dt)


_NUMPY_CALLS = {"_reconstruct": _checked_reconstruct}
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "dtype"),
}

_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "object": object}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals listed in the module docstring."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return _NdarrayClass
        if (module, name) in _NUMPY and name in _NUMPY_CALLS:
            return _NUMPY_CALLS[name]
        if (module, name) in _NUMPY or (module in ("numpy", "numpy.dtypes") and name.endswith("DType")):
            mod = __import__(module, fromlist=[name])
            return getattr(mod, name)
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles from Python 3 store bytes
            return codecs.encode
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _reconstructor
        if module == "chumpy" or module.startswith("chumpy."):
            return _inert_class(_ChumpyObject, module, name)
        if module.startswith("scipy.sparse") and name.endswith(("_matrix", "_array")):
            return _inert_class(_SparseMatrix, module, name)
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _torch_from_bytes
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _torch_rebuild_tensor
        raise UnsafePickleError(None, f"refused pickle global {module}.{name}")


def _convert(obj: Any) -> Any:
    """Replace placeholders by numpy / scipy values, recursively through containers."""
    if isinstance(obj, _ChumpyObject):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" not in state:
            raise pickle.UnpicklingError(f"chumpy object {obj.module}.{obj.name} has no stored value 'x'")
        return np.asarray(_convert(state["x"]))
    if isinstance(obj, _SparseMatrix):
        return _sparse_from_state(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _convert(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) else {
            k: _convert(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        out = np.empty(obj.shape, dtype=object)
        for idx in np.ndindex(obj.shape):
            out[idx] = _convert(obj[idx])
        return out
    return obj


def _sparse_from_state(obj: _SparseMatrix) -> Any:
    import scipy.sparse as sp

    st = obj.state if isinstance(obj.state, dict) else {}
    fmt = obj.name.split("_")[0]
    shape = st.get("_shape", st.get("shape"))
    try:
        if fmt in ("csc", "csr"):
            cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
            return cls((st["data"], st["indices"], st["indptr"]), shape=tuple(shape))
        if fmt == "coo":
            row, col = st.get("row", st.get("coords", [None, None])[0]), st.get("col", st.get("coords", [None, None])[1])
            return sp.coo_matrix((st["data"], (row, col)), shape=tuple(shape))
    except (KeyError, TypeError, ValueError) as exc:
        raise pickle.UnpicklingError(f"sparse matrix {obj.name} has unreadable state: {exc}") from exc
    raise pickle.UnpicklingError(f"sparse format {obj.name} is not supported")


def loads(data: bytes, path: str | os.PathLike | None = None) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` and convert placeholders.

    Raises :class:`InputError` (or its subclass :class:`UnsafePickleError`) naming ``path``.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
        return _convert(obj)
    except UnsafePickleError as exc:
        raise UnsafePickleError(path, exc.problem) from None
    except InputError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, ImportError, RuntimeError, MemoryError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def load(path: str | os.PathLike) -> Any:
    """Read and safely unpickle the file at ``path`` (see :func:`loads`)."""
    data = read_bounded(path)
    if not data:
        raise InputError(path, "is empty (0 bytes), not a pickle")
    return loads(data, path)


def load_npy_object(path: str | os.PathLike) -> Any:
    """Read a ``.npy`` file whose array has dtype object (a pickled payload), safely.

    MICA stores dicts this way (``image_paths/<SUBSET>.npy``, ``landmark_embedding.npy``). Returns the
    0-d array's item (usually a dict), or the object array itself when it has dimensions. Plain
    numeric ``.npy`` files are returned as arrays without unpickling anything.
    """
    data = read_bounded(path)
    if not data:
        raise InputError(path, "is empty (0 bytes), not a .npy file")
    fh = io.BytesIO(data)
    _, _, dtype = npy_header(fh, path)
    if not dtype.hasobject:
        return read_npy(data, path)  # plain numbers: sized from the header, checked against the file
    payload = data[fh.tell():]
    obj = loads(payload, path)
    if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object:
        return obj.item()
    return obj
