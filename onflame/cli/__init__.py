"""The ``onflame`` command line.

Each command is a thin wrapper: it parses arguments, calls the library function that does the work, and
prints a table (or JSON with ``--json``). The package is split by job:

- :mod:`.parser` assembles the commands; :mod:`.options` holds the option types every command shares
  (``--workers``, ``--subset``, ``--model``, ``-v``/``-q``/``--debug`` anywhere);
- :mod:`.model` decides which FLAME model a command uses (``--model``, ``ONFLAME_MODEL``, never silently);
- ``cmd_*`` modules hold the commands (their options, examples and code);
- :mod:`.runner` runs one command and turns every ending (errors, Ctrl-C, SIGTERM) into one line and an
  exit code: 0 success, 1 failure, 2 bad usage, 130 interrupted, 143 terminated.

This module imports nothing heavy: the executable (:func:`run`) first makes Ctrl-C and SIGTERM end the
process quietly (one line, exit 130 / 143) while numpy, torch and the commands are still being imported,
before any work has begun, and for registration's commands has numpy's and scipy's BLAS load with one
thread (:func:`_blas_loads_with_one_thread`) and keeps freed memory for reuse
(:func:`_malloc_keeps_freed_memory`); :mod:`.runner` then takes over.
"""
from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    """Run one ``onflame`` command; returns its exit code (:func:`onflame.cli.runner.main`)."""
    from .runner import main as run_main

    return run_main(argv, owns_process)


#: Commands that hold BLAS at one thread throughout (:mod:`onflame.registration.threads`).
ONE_BLAS_THREAD = ("register", "fit-mesh")
#: The variables a user sets BLAS's thread count with (OpenBLAS reads them when it is loaded).
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: The variable :func:`_blas_loads_with_one_thread` set, until :func:`blas_start_done` removes it.
_set_for_start: list[str] = []


def run() -> None:
    """The ``onflame`` executable (:func:`onflame.cli.runner.run`)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted_while_starting)
    _blas_loads_with_one_thread()
    _malloc_keeps_freed_memory()
    from .runner import run as run_command

    run_command()


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM before the command has started: nothing to tidy, so one line and the exit code."""
    command = _command() or "onflame"
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    os.write(2, f"onflame: {command}: {how}\n".encode())
    os._exit(143 if signum == signal.SIGTERM else 130)


def _command() -> str | None:
    """The command named on the command line (the first word that is not an option; the options before
    it, -v -q --debug, take no value)."""
    return next((a for a in sys.argv[1:] if not a.startswith("-")), None)


def _blas_loads_with_one_thread() -> None:
    """For :data:`ONE_BLAS_THREAD`'s commands, numpy's and scipy's OpenBLAS are loaded with one thread.

    Each OpenBLAS starts a helper thread per core when it is loaded, and the helpers spin for their
    first ~0.1 s waiting for work: ~0.2 s of CPU for the two libraries on 2 cores, a sixth of a
    one-scan ``register``'s. Registration holds BLAS at one thread anyway, so those helpers never work.
    A count the user set is left alone. The variable is removed once start-up is done
    (:func:`blas_start_done`): registration's own thread count and any process started later see the
    user's environment.
    """
    loaded = "numpy" in sys.modules or "scipy" in sys.modules  # too late: their BLAS has its threads
    if _command() in ONE_BLAS_THREAD and not loaded and not any(os.environ.get(v) for v in BLAS_VARIABLES):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        _set_for_start.append("OPENBLAS_NUM_THREADS")


#: glibc's ``mallopt`` parameters (``<malloc.h>``): allocations from this size on get their own mapping,
#: and free memory at the heap's top beyond this size goes back to the system.
_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD = -3, -1
#: 32 MiB, glibc's largest mapping threshold on 64-bit systems: a registration's largest arrays (a
#: Jacobian of ~25 MB) stay on the heap.
_MAPPED_FROM = 32 << 20
_TRIMMED_BEYOND = 256 << 20


def _malloc_keeps_freed_memory() -> None:
    """For :data:`ONE_BLAS_THREAD`'s commands on glibc, freed memory is kept for the next allocation.

    By default glibc gives every allocation above 128 KiB its own mapping and returns it on free, so
    each of registration's many arrays of 0.1-25 MB is a fresh mapping whose pages the kernel faults in
    and zeroes again (~24k page faults, ~0.08 s of CPU of a one-scan ``register``). glibc raises that
    threshold by itself once such arrays are freed, which is why a second registration in a process is
    quicker; a one-scan command sets it from the start. It only moves where memory comes from, never
    what is computed. Elsewhere (musl, macOS, Windows) nothing is changed.
    """
    if _command() not in ONE_BLAS_THREAD or not hasattr(os, "confstr"):
        return
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _MAPPED_FROM)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIMMED_BEYOND)
    except (OSError, ValueError, AttributeError):  # no such name, or no C library to open: keep the defaults
        pass


def blas_start_done() -> None:
    """numpy and scipy are loaded: remove what :func:`_blas_loads_with_one_thread` set (registration is
    told their BLAS runs one thread)."""
    if _set_for_start:
        from ..registration.threads import blas_loaded_with_one_thread

        blas_loaded_with_one_thread()
    while _set_for_start:
        os.environ.pop(_set_for_start.pop(), None)


__all__ = ["main", "run"]
