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
- ``_codecs.encode`` of text as latin1 (how protocol-2 pickles from Python 3 store bytes; no other codec),
  ``OrderedDict``, ``set``, ``frozenset``, ``slice``, ``complex``.

Python 2 pickles work: strings are read as latin1, as numpy's own pickles require.

Only what such a file needs is admitted, and it is checked before memory is spent:

- the file is a regular file of at most the caller's limit (:func:`onflame.fileio.read_bounded`: a FIFO or
  a link to ``/dev/zero`` is refused without reading);
- numpy arrays are rebuilt here, never by numpy's ``__setstate__``: numbers and text only (no object
  arrays, no structured dtypes), the shape and the data's length checked first, and all arrays together
  within the limit; the one exception is the 0-d object array MICA's ``.npy`` files wrap their dict in
  (:func:`load_npy_object`). ``numpy.ndarray`` may only be the class argument numpy's own pickles pass;
- while it is read, the work the pickle makes Python do is counted: a dict key or set element is hashed
  through every level of the tuples it nests (shared ones once per reference), so all hashing together
  is held within the limit's count of values (a few hundred bytes of tuples shared 30 levels deep would
  otherwise take minutes); integers hold at most :data:`MAX_INT_BYTES` bytes; a torch tensor is no larger
  than its storage;
- the value is walked once before it is used: shared references that would expand past the limit
  ("billion laughs"), cycles and nesting deeper than :data:`MAX_DEPTH` are refused; so is a sparse
  matrix whose dense form (FLAME's joint regressor is made dense) passes it.

The unpickler is Python's own pure-Python one (``pickle._Unpickler``, the C one has no hook per opcode),
which reads FLAME's 75 MB model pickle in about 0.4 s instead of 0.3 s; it is read once, then the model's
pickle-free copy is.

Every refusal is an :class:`~onflame.errors.InputError` naming the file, in one line.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
from typing import Any

import numpy as np

from ..errors import InputError, UnsafePickleError
from ..fileio import MAX_READ_BYTES, npy_header, read_bounded, read_npy
from .refusals import _Refused, _text
from .unpickler import RestrictedUnpickler
from .walk import MAX_DEPTH, _check_expansion, _convert

__all__ = ["MAX_DEPTH", "RestrictedUnpickler", "load", "load_npy_object", "loads"]


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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, struct.error,
            KeyError, ImportError, RuntimeError, MemoryError, UnicodeDecodeError, OverflowError) as exc:
        raise InputError(path, f"not a readable pickle ({type(exc).__name__}: {_text(exc)})") from None


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
