"""One BLAS thread for numpy and scipy while registration runs, beside torch's own threads.

numpy and scipy bring their own OpenBLAS thread pools, torch its OpenMP one, and each pool's threads
spin-wait for work between calls. Registration alternates small numpy products (Jacobian rows,
correspondences) with torch's large ones dozens of times a second, so on a machine with few cores the
pools fight over them. Measured on ``register()`` of a 52k-vertex simulated scan on 2 cores: 1.5–1.8 s
with every pool at 2 threads, 1.06 s with OpenBLAS held at 1 (torch still at 2), same result.
``threadpoolctl`` is the library made for setting a loaded BLAS's thread count at run time.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)
_CONTROLLER = None


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:  # created on first use, after numpy, scipy and torch have loaded their libraries
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def single_threaded_blas(fn: F) -> F:
    """Decorator: run ``fn`` with numpy's and scipy's BLAS limited to one thread (torch is not touched)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _controller().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
