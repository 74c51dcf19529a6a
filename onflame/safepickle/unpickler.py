"""The restricted unpickler: Python's own pure-Python unpickler with a hook per opcode that counts
what the pickle makes Python build, and a short allow-list of globals (:mod:`onflame.safepickle`).
"""
from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from typing import IO, Any, Callable

import numpy as np

from ..errors import UnsafePickleError
from ..fileio import MAX_READ_BYTES
from .refusals import _MiB, _Refused, _short, _TooLarge
from .stubs import (_ARRAY_KINDS, _ArrayStub, _ChumpyObject, _DtypeStub, _NdarrayClass, _SparseMatrix, _dtype, _inert_class,
                    _reconstructor, _torch_from_bytes, _torch_rebuild_tensor)


#: The largest integer a FLAME or MICA pickle holds, in bytes (hashing or printing a larger one costs time
#: in proportion to its size, every time).
MAX_INT_BYTES = 64


class RestrictedUnpickler(pickle._Unpickler):
    """Python's unpickler, resolving only the globals listed in :mod:`onflame.safepickle`'s docstring and counting the
    hashing a pickle asks for.

    Args:
        file: the pickle's bytes as a binary stream.
        limit: the most bytes the arrays it rebuilds may hold together; ``limit // 8`` is the most
            values all hashing may walk through.
        object_wrapper: admit one 0-d array of dtype object (how MICA's ``.npy`` files wrap their dict).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], limit: int = MAX_READ_BYTES, object_wrapper: bool = False):
        super().__init__(file, encoding="latin1")
        self.limit = self.budget = int(limit)
        self.object_wrappers = 1 if object_wrapper else 0
        self.hash_budget = max(self.limit // 8, 1)
        self.tuple_sizes: dict[int, tuple[tuple, int]] = {}  # id -> (the tuple, kept alive; values it nests)

    # --- what hashing a key costs, counted before Python does it ------------------------------------------

    def _size(self, obj: Any) -> int:
        """Values Python walks to hash ``obj``: every level of the tuples it nests, shared ones each time."""
        if type(obj) is tuple:
            return self.tuple_sizes.get(id(obj), (obj, 1 + len(obj)))[1]
        if type(obj) is frozenset:
            return 1 + len(obj)
        return 1

    def _hashing(self, keys: Any) -> None:
        for key in keys:
            self.hash_budget -= self._size(key)
        if self.hash_budget < 0:
            raise _TooLarge(f"hashing its dict keys and set elements walks more than {max(self.limit // 8, 1)} "
                            "values (tuples shared many levels deep: a 'billion laughs' pickle?)")

    def _tuple_made(self) -> None:
        t = self.stack[-1]
        self.tuple_sizes[id(t)] = (t, 1 + sum(self._size(c) for c in t))

    def _after(op: Callable[["RestrictedUnpickler"], None]) -> Callable[["RestrictedUnpickler"], None]:
        def made(self: "RestrictedUnpickler") -> None:
            op(self)
            self._tuple_made()
        return made

    for _code in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
        dispatch[_code[0]] = _after(pickle._Unpickler.dispatch[_code[0]])

    def _load_setitem(self) -> None:
        self._hashing(self.stack[-2:-1])
        pickle._Unpickler.load_setitem(self)

    def _keys_after_mark(self, step: int) -> None:
        """Count the keys (``step`` 2: every other item) or elements (1) pushed since the last mark (the
        pure-Python unpickler keeps them as its current stack until the mark is popped)."""
        self._hashing(self.stack[::step])

    def _load_setitems_counted(self) -> None:
        self._keys_after_mark(2)
        pickle._Unpickler.load_setitems(self)

    def _load_dict_counted(self) -> None:
        self._keys_after_mark(2)
        pickle._Unpickler.load_dict(self)

    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems_counted
    dispatch[pickle.DICT[0]] = _load_dict_counted

    def _load_additems(self) -> None:
        self._keys_after_mark(1)
        pickle._Unpickler.load_additems(self)

    def _load_frozenset(self) -> None:
        self._keys_after_mark(1)
        pickle._Unpickler.load_frozenset(self)

    dispatch[pickle.ADDITEMS[0]] = _load_additems
    dispatch[pickle.FROZENSET[0]] = _load_frozenset

    def _load_long(self) -> None:
        raise _Refused(f"an integer of more than {MAX_INT_BYTES} bytes; FLAME and MICA files hold no such number")

    def _load_long1(self) -> None:
        n = self.read(1)
        if n and n[0] > MAX_INT_BYTES:
            self._load_long()
        self.append(pickle.decode_long(self.read(n[0] if n else 0)))

    def _load_long4(self) -> None:
        head = self.read(4)
        if len(head) < 4:
            raise pickle.UnpicklingError("pickle data was truncated")
        n, = struct.unpack("<i", head)
        if n < 0 or n > MAX_INT_BYTES:
            self._load_long()
        self.append(pickle.decode_long(self.read(n)))

    dispatch[pickle.LONG1[0]] = _load_long1
    dispatch[pickle.LONG4[0]] = _load_long4
    del _code, _after

    def _hashed(self, make: Callable[..., Any], pairs: bool = False) -> Callable[..., Any]:
        """``set``, ``frozenset`` or ``OrderedDict`` called by the pickle (REDUCE): elements (or keys)
        counted before they are hashed."""
        def call(items: Any = (), *rest: Any) -> Any:
            if not isinstance(items, (list, tuple)) or rest:
                raise _Refused(f"{make.__name__} of {type(items).__name__} is not allowed")
            self._hashing(item[0] if pairs and isinstance(item, (list, tuple)) and item else item for item in items)
            return make(items)
        call.makes = make  # type: ignore[attr-defined]  (what copy_reg._reconstructor may be asked to build)
        return call

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
        if module in ("__builtin__", "builtins") and name in ("set", "frozenset"):
            return self._hashed(set if name == "set" else frozenset)
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles from Python 3 store bytes
            return _latin1_bytes
        if module == "collections" and name == "OrderedDict":
            return self._hashed(OrderedDict, pairs=True)
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
_BUILTINS = {"slice": slice, "complex": complex, "object": object}


def _latin1_bytes(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it: text to latin1 bytes, nothing else (any
    codec would let a pickle double a string through 'hex' thirty times, in a few hundred bytes)."""
    if not isinstance(text, str) or not isinstance(encoding, str) \
            or encoding.replace("_", "-").lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Refused(f"_codecs.encode with codec {str(encoding)[:20]!r} is not allowed (only text to latin1 bytes)")
    return text.encode("latin1")
