"""What the restricted unpickler rebuilds instead of the classes a pickle names: inert placeholders
(chumpy, scipy sparse), numpy array, dtype and class stand-ins, torch tensors through torch's own
restricted loader.
"""
from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import UnsafePickleError
from .refusals import _Refused, _short


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
    if getattr(cls, "makes", None) is OrderedDict:
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


def _torch_rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> Any:
    """torch's own tensor rebuild, for a tensor that lies within its storage as a plain (strided, no
    element twice) view: a stride of 0 would make a (10^6, 10^6) tensor of one stored number, which
    the first copy turns into terabytes. Its arguments were themselves unpickled under this allow-list."""
    from torch._utils import _rebuild_tensor_v2

    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= 32
            and all(type(n) is int and n >= 0 for n in size + stride) and type(offset) is int and offset >= 0):
        raise _Refused("torch tensor with a malformed size, stride or offset")
    count = 1
    for n in size:
        count *= n
    try:  # TypedStorage's public size() warns that it is deprecated
        stored = storage._untyped_storage.nbytes() // storage._element_size()
    except (AttributeError, TypeError, ZeroDivisionError):
        raise _Refused("torch tensor whose storage is not a torch storage") from None
    if count and (offset + sum((n - 1) * k for n, k in zip(size, stride)) >= stored
                  or any(k == 0 and n > 1 for n, k in zip(size, stride)) or count > stored):
        raise _Refused(f"torch tensor of size {_short(size)} is larger than its storage of {stored} elements")
    return _rebuild_tensor_v2(storage, offset, size, stride, *rest)


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

    def __init__(self, unpickler: "RestrictedUnpickler"):  # noqa: F821  (.unpickler imports this module)
        self.unpickler = unpickler
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("numpy array state is not (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, data = state[-4:]
        self.array = self.unpickler.build_array(shape, _dtype(dtype), bool(fortran), data)
