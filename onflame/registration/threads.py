"""Threads while registration runs: one BLAS thread, and at most two threads of registration's own.

numpy's and scipy's OpenBLAS keep their helper threads spinning between calls; registration makes
thousands of small calls, so on a machine with few cores those threads would steal the cores they
wait for (the same scan on 2 cores took 1.5-1.8 s with the pools at 2 threads and 1.06 s at 1).
``threadpoolctl`` is the library made for setting a loaded BLAS's thread count at run time.

The few large, separable steps (the Gauss-Newton normal equations, split by rows; nearest-point
queries, split by cKDTree's own ``workers``) use a second core instead through :func:`in_parallel`,
whose idle thread sleeps rather than spins. A build's worker processes (one per core) are started
with one BLAS/OpenMP thread in their environment (:mod:`onflame.workers`) and keep to one thread here
too; ``ONFLAME_THREADS`` sets the count.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)
T = TypeVar("T")
_CONTROLLER = None
#: Set by :func:`blas_loaded_with_one_thread`: every BLAS in the process already runs one thread.
_BLAS_SINGLE = False
#: Most threads registration uses at once (the BLAS held at one per thread).
MAX_THREADS = 2
_local = threading.local()


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:  # created on first use, after numpy and scipy have loaded their libraries
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def blas_loaded_with_one_thread() -> None:
    """Say that numpy's and scipy's BLAS were loaded with one thread (the ``onflame`` executable sets its
    variable before they load): registration then skips threadpoolctl, whose look through the loaded
    libraries costs ~7 ms of a one-scan command and would change nothing."""
    global _BLAS_SINGLE
    _BLAS_SINGLE = True


def _one_blas_thread():
    """A context in which BLAS runs one thread."""
    return contextlib.nullcontext() if _BLAS_SINGLE else _controller().limit(limits=1, user_api="blas")


def thread_count() -> int:
    """Threads registration splits its large steps over: ``ONFLAME_THREADS`` if set, else 1 where the
    environment holds BLAS/OpenMP at one thread (a build's worker), else the usable cores, at most
    :data:`MAX_THREADS`."""
    for name in ("ONFLAME_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return max(1, min(MAX_THREADS, int(value)))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def in_parallel(*calls: Callable[[], T]) -> list[T]:
    """Results of the zero-argument ``calls``, run at the same time inside :func:`single_threaded_blas`
    (the first in this thread), one after the other elsewhere or on one core."""
    pool = getattr(_local, "pool", None)
    if pool is None or len(calls) < 2:
        return [c() for c in calls]
    later = [pool.submit(c) for c in calls[1:]]
    first = calls[0]()
    return [first] + [f.result() for f in later]


def single_threaded_blas(fn: F) -> F:
    """Decorator: run ``fn`` with numpy's and scipy's BLAS limited to one thread, and with a second
    thread for :func:`in_parallel` where :func:`thread_count` allows one (shut down on return, so no
    thread outlives the call)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if getattr(_local, "depth", 0):  # nested: the outer call set everything up
            return fn(*args, **kwargs)
        n = thread_count()
        _local.depth = 1
        _local.pool = ThreadPoolExecutor(n - 1, thread_name_prefix="onflame-registration") if n > 1 else None
        try:
            with _one_blas_thread():
                return fn(*args, **kwargs)
        finally:
            if _local.pool is not None:
                _local.pool.shutdown(wait=True)
            _local.pool, _local.depth = None, 0

    return wrapper  # type: ignore[return-value]
