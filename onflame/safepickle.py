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

Only what such a file needs is admitted, and it is checked before memory is spent:

- the file is a regular file of at most the caller's limit (:func:`onflame.fileio.read_bounded`: a FIFO or
  a link to ``/dev/zero`` is refused without reading);
- numpy arrays are rebuilt here, never by numpy's ``__setstate__``: numbers and text only (no object
  arrays, no structured dtypes), the shape and the data's length checked first, and all arrays together
  within the limit; the one exception is the 0-d object array MICA's ``.npy`` files wrap their dict in
  (:func:`load_npy_object`). ``numpy.ndarray`` may only be the class argument numpy's own pickles pass;
- the value is walked once before it is used: shared references that would expand past the limit
  ("billion laughs"), cycles and nesting deeper than :data:`MAX_DEPTH` are refused; so is a sparse
  matrix whose dense form (FLAME's joint regressor is made dense) passes it.

Every refusal is an :class:`~onflame.errors.InputError` naming the file, in one line.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import re
from collections import OrderedDict
from typing import IO, Any, Iterator

import numpy as np

from .errors import InputError, UnsafePickleError
from .fileio import MAX_READ_BYTES, npy_header, read_bounded, read_npy


class _Inert:
    """Placeholder for an allowed foreign class: stores the pickled state, has no behaviour."""

    module = ""
    name = ""

    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

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
    raise _Refused(f"copy_reg._reconstructor of {cls!r} is not allowed")


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
        raise _Refused("calling numpy.ndarray directly is not allowed")


class _DtypeStub:
    """What ``numpy.dtype(code, align, copy)`` gives: the type code, and the byte order its state sets.

    numpy's own ``dtype.__setstate__`` is never called (it can build structured and object types from a
    crafted state); :meth:`resolve` makes a plain dtype from the code and byte order alone.
    """

    def __init__(self, code: Any, *args: Any):
        if not isinstance(code, str) or not _DTYPE_CODE.match(code):
            raise _Refused(f"numpy dtype {str(code)[:40]!r} is not a plain number or text type")
        self.code, self.order = code, None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or state[1] not in ("<", ">", "|", "=") \
                or any(part is not None for part in state[2:5]):
            raise _Refused("a structured or nested numpy dtype is not allowed")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.order) if self.order in ("<", ">") and dt.itemsize > 1 else dt


#: Type codes a dtype may be pickled with: booleans, integers, floats, complex numbers, text; ``O`` (Python
#: objects) is read only to be refused with a clear message where it is used.
_DTYPE_CODE = re.compile(r"^[<>|=]?(b1|\?|[iu][1248]|f[248]|f16|c(8|16|32)|[US]\d{0,9}|O[48]?)$")
#: Kinds of arrays a FLAME or MICA file holds.
_ARRAY_KINDS = "biufcUS"


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, _DtypeStub):
        return value.resolve()
    if isinstance(value, np.dtype):  # numpy's pickles always pass a stub; kept for hand-made callers
        return value
    raise _Refused(f"expected a numpy dtype, found {type(value).__name__}")


class _ArrayStub:
    """What numpy's ``_reconstruct`` gives: nothing is allocated until ``__setstate__`` brings the shape,
    dtype and data, which :meth:`RestrictedUnpickler.build_array` checks first."""

    def __init__(self, unpickler: "RestrictedUnpickler"):
        self.unpickler = unpickler
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("numpy array state is not (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, data = state[-4:]
        self.array = self.unpickler.build_array(shape, _dtype(dtype), bool(fortran), data)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals listed in the module docstring.

    Args:
        file: the pickle's bytes as a binary stream.
        limit: the most bytes the arrays it rebuilds may hold together.
        object_wrapper: admit one 0-d array of dtype object (how MICA's ``.npy`` files wrap their dict).
    """

    def __init__(self, file: IO[bytes], limit: int = MAX_READ_BYTES, object_wrapper: bool = False):
        super().__init__(file, encoding="latin1")
        self.limit = self.budget = int(limit)
        self.object_wrappers = 1 if object_wrapper else 0

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "ndarray"):
            return _NdarrayClass
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return self.reconstruct
        if module in _NUMPY_MODULES and name == "scalar":
            return self.scalar
        if module in _NUMERIC_MODULES and name == "_frombuffer":
            return self.frombuffer
        if (module, name) == ("numpy", "dtype"):
            return _DtypeStub
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

    # numpy's rebuilders, each checking what it is asked to allocate before allocating it

    def reconstruct(self, subtype: Any, shape: Any = None, typecode: Any = None) -> _ArrayStub:
        """numpy's ``_reconstruct``: an empty placeholder (numpy's own pickles ask for shape ``(0,)``;
        the real shape comes with the state, checked in :meth:`build_array`)."""
        if subtype is not _NdarrayClass:
            raise _Refused(f"_reconstruct of {str(subtype)[:60]} is not allowed")
        if shape not in ((0,), [0]):
            raise _Refused(f"_reconstruct asks numpy to allocate an array of shape {_short(shape)}; "
                                         "numpy's own pickles ask for an empty one")
        return _ArrayStub(self)

    def build_array(self, shape: Any, dtype: np.dtype, fortran: bool, data: Any) -> np.ndarray:
        """An array from a pickled state: shape, dtype and data checked before anything is allocated."""
        if not isinstance(shape, tuple) or len(shape) > 32 or not all(type(n) is int and 0 <= n for n in shape):
            raise _Refused("numpy array shape is not a tuple of sizes")
        count = 1
        for n in shape:
            count *= n
        if dtype.hasobject:
            return self._object_wrapper(shape, data)
        if dtype.kind not in _ARRAY_KINDS:
            raise _Refused(f"numpy arrays of dtype {dtype} are not allowed")
        nbytes = count * dtype.itemsize
        self._spend(nbytes, f"an array of shape {shape} {dtype}")
        if isinstance(data, str):  # a Python 2 str, read as latin1
            data = data.encode("latin1")
        if not isinstance(data, (bytes, bytearray)) or len(data) != nbytes:
            size = len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__
            raise _Refused(f"numpy array of shape {shape} {dtype} needs {nbytes} bytes of data, found {size}")
        flat = np.frombuffer(data, dtype=dtype).copy()
        return flat.reshape(shape[::-1]).T if fortran and len(shape) > 1 else flat.reshape(shape)

    def _object_wrapper(self, shape: tuple, data: Any) -> np.ndarray:
        if not self.object_wrappers or shape != () or not isinstance(data, list) or len(data) != 1:
            raise _Refused(f"a numpy array of Python objects (dtype object, shape {shape}) is not "
                                         "allowed: FLAME and MICA files hold numbers")
        self.object_wrappers -= 1
        arr = np.empty((), dtype=object)
        arr[()] = data[0]
        return arr

    def scalar(self, dtype: Any, data: Any = None) -> Any:
        """numpy's ``scalar(dtype, bytes)``: one number."""
        dt = _dtype(dtype)
        if dt.hasobject or dt.kind not in _ARRAY_KINDS:
            raise _Refused(f"numpy scalars of dtype {dt} are not allowed")
        if isinstance(data, str):
            data = data.encode("latin1")
        if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
            raise _Refused(f"numpy scalar {dt} needs {dt.itemsize} bytes of data")
        return np.frombuffer(data, dtype=dt)[0]

    def frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
        """numpy's ``_frombuffer`` (protocol 5)."""
        if isinstance(buf, pickle.PickleBuffer):
            buf = bytes(buf.raw())
        return self.build_array(tuple(shape) if isinstance(shape, list) else shape, _dtype(dtype), order == "F", buf)

    def _spend(self, nbytes: int, what: str) -> None:
        self.budget -= nbytes
        if self.budget < 0:
            raise _TooLarge(f"{what} takes its arrays past what such a file holds ({_MiB(self.limit)})")


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")
_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "object": object}


class _Refused(pickle.UnpicklingError):
    """A pickle asks for something a FLAME or MICA file never holds."""


class _TooLarge(_Refused):
    """A pickle asks for more than the file's format holds."""


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  e.g. an int too long to print
        text = type(value).__name__
    return text if len(text) <= 60 else text[:60] + "..."


def _MiB(n: int) -> str:
    return f"{max(n, 0) / 2**20:.0f} MiB"


# --- after unpickling ----------------------------------------------------------------------------------------

#: Nesting deeper than this is no FLAME or MICA file (a dict of arrays, lists of paths).
MAX_DEPTH = 64


def _check_expansion(obj: Any, limit: int) -> None:
    """Refuse ``obj`` when walking it as a tree would touch more than ``limit`` bytes' worth of values.

    A pickle's memo lets one small list be referenced many times ("billion laughs": 26 nested levels of
    pairs of one list reference it 2**26 times in 250 bytes); whatever later walks or converts the value
    (``np.asarray``, a loop over an image list) meets every copy. Sizes are summed per object once (shared
    references multiply, cycles are refused), so the check itself is linear in the pickle.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    units = max(limit // 8, 1)

    def size(o: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
        key = id(o)
        if key in sizes:
            return sizes[key]
        if isinstance(o, _ArrayStub):  # numpy's arrays as unpickled: what they hold once converted
            o = o.array
        if isinstance(o, np.ndarray) and o.dtype != object:
            n = 1 + o.nbytes // 8
        elif isinstance(o, (str, bytes, bytearray)):
            n = 1 + len(o) // 8
        elif isinstance(o, (list, tuple, set, frozenset, dict, np.ndarray, _Inert)):
            if key in active:
                raise _Refused("holds a reference cycle")
            active.add(key)
            n = 1
            for child in _children(o):
                n += size(child, depth + 1)
                if n > units:
                    raise _TooLarge(f"its shared references expand to more than {units} values "
                                    "(a 'billion laughs' pickle?)")
            active.discard(key)
        else:
            n = 1
        sizes[key] = n
        return n

    size(obj, 0)


def _children(o: Any) -> Iterator[Any]:
    if isinstance(o, dict):
        for k, v in o.items():
            yield k
            yield v
    elif isinstance(o, np.ndarray):
        yield from o.flat
    elif isinstance(o, _Inert):  # built by __new__ alone (copyreg) it has neither until set
        yield getattr(o, "args", ())
        yield getattr(o, "state", None)
    else:
        yield from o


def _convert(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace placeholders by numpy / scipy values through containers (shared parts converted once)."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise _Refused("numpy array without its data")
        out = _convert(obj.array, memo) if obj.array.dtype == object else obj.array
    elif isinstance(obj, _DtypeStub):
        out = obj.resolve()
    elif isinstance(obj, _ChumpyObject):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" not in state:
            raise _Refused(f"chumpy object {obj.module}.{obj.name} has no stored value 'x'")
        out = np.asarray(_convert(state["x"], memo))
        if out.dtype == object:
            raise _Refused(f"chumpy object {obj.module}.{obj.name} holds no numbers")
    elif isinstance(obj, _SparseMatrix):
        out = _sparse_from_state(obj, memo)
    elif isinstance(obj, OrderedDict):
        out = OrderedDict((_convert(k, memo), _convert(v, memo)) for k, v in obj.items())
    elif isinstance(obj, dict):
        out = {_convert(k, memo): _convert(v, memo) for k, v in obj.items()}
    elif isinstance(obj, list):
        out = [_convert(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_convert(v, memo) for v in obj)
    elif isinstance(obj, np.ndarray) and obj.dtype == object:  # the one 0-d wrapper MICA's .npy files have
        out = np.empty((), dtype=object)
        out[()] = _convert(obj[()], memo)
    elif isinstance(obj, _Inert):
        raise _Refused(f"{obj.module}.{obj.name} object cannot be used here")
    else:
        out = obj
    memo[key] = out
    return out


def _sparse_from_state(obj: _SparseMatrix, memo: dict[int, Any], limit: int = MAX_READ_BYTES) -> Any:
    import scipy.sparse as sp

    st = _convert(obj.state, memo) if isinstance(obj.state, dict) else {}
    fmt = obj.name.split("_")[0]
    shape = st.get("_shape", st.get("shape"))
    try:
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] * 8 > limit:
            raise _Refused(f"sparse matrix of shape {shape} is larger than such a file holds")
        if fmt in ("csc", "csr"):
            cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
            return cls((st["data"], st["indices"], st["indptr"]), shape=shape)
        if fmt == "coo":
            row, col = st.get("row", st.get("coords", [None, None])[0]), st.get("col", st.get("coords", [None, None])[1])
            return sp.coo_matrix((st["data"], (row, col)), shape=shape)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise _Refused(f"sparse matrix {obj.name} has unreadable state: {_text(exc)}") from None
    raise _Refused(f"sparse format {obj.name} is not supported")


def loads(data: bytes, path: str | os.PathLike | None = None, limit: int = MAX_READ_BYTES,
          object_wrapper: bool = False) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` and convert placeholders.

    ``limit``: the most bytes the file's arrays may hold together, and (in 8-byte values) the most its
    shared references may expand to. Raises :class:`InputError` (or its subclass
    :class:`UnsafePickleError`) naming ``path``.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), limit, object_wrapper).load()
        _check_expansion(obj, limit)
        return _convert(obj, {})
    except UnsafePickleError as exc:
        raise UnsafePickleError(path, exc.problem) from None
    except InputError:
        raise
    except _Refused as exc:
        raise InputError(path, f"refused: {_text(exc)}") from None
    except RecursionError:
        raise InputError(path, "refused: nested too deep for a FLAME or MICA file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, ImportError, RuntimeError, MemoryError, UnicodeDecodeError, OverflowError) as exc:
        raise InputError(path, f"not a readable pickle ({type(exc).__name__}: {_text(exc)})") from None


def _text(exc: BaseException) -> str:
    """``str(exc)``, at most 200 characters (a message may hold the repr of a huge value, or fail to)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001  e.g. an int too long to print
        text = type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def load(path: str | os.PathLike, limit: int = MAX_READ_BYTES) -> Any:
    """Read (a regular file of at most ``limit`` bytes) and safely unpickle the file at ``path``
    (see :func:`loads`)."""
    data = read_bounded(path, limit)
    if not data:
        raise InputError(path, "is empty (0 bytes), not a pickle")
    return loads(data, path, limit)


def load_npy_object(path: str | os.PathLike, limit: int = MAX_READ_BYTES) -> Any:
    """Read a ``.npy`` file whose array has dtype object (a pickled payload), safely.

    MICA stores dicts this way (``image_paths/<SUBSET>.npy``, ``landmark_embedding.npy``): a 0-d object
    array whose one item is the dict, the only object array admitted. Returns that item. Plain numeric
    ``.npy`` files are returned as arrays without unpickling anything.
    """
    data = read_bounded(path, limit)
    if not data:
        raise InputError(path, "is empty (0 bytes), not a .npy file")
    fh = io.BytesIO(data)
    shape, _, dtype = npy_header(fh, path)
    if not dtype.hasobject:
        return read_npy(data, path, limit)  # plain numbers: sized from the header, checked against the file
    if shape != ():
        raise InputError(path, f"refused: a .npy of Python objects must hold one object (shape ()), not shape {shape}")
    obj = loads(data[fh.tell():], path, limit, object_wrapper=True)
    return obj[()] if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object else obj
