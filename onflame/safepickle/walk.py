"""After unpickling: the value walked once (expansion of shared references, cycles, depth) and its
placeholders turned into what onflame uses (arrays, dicts, scipy sparse matrices).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

from ..fileio import MAX_READ_BYTES
from .refusals import _Refused, _TooLarge, _text
from .stubs import _ArrayStub, _ChumpyObject, _DtypeStub, _Inert, _SparseMatrix


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
