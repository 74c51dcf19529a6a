"""The executable's start-up: BLAS loaded with one thread for registration's commands, the user's
environment back once start-up is done; glibc's malloc keeping freed memory for those commands."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from onflame import cli
from onflame.registration import threads

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.parametrize("argv, held", [(["register", "s.obj"], True), (["-v", "fit-mesh", "m.obj"], True),
                                        (["build", "--raw", "x"], False), (["--version"], False)])
def test_blas_is_held_at_one_thread_only_while_registrations_start(monkeypatch, argv, held):
    for v in VARIABLES:
        monkeypatch.delenv(v, raising=False)
    for name in ("numpy", "scipy"):  # as before the executable's imports (restored after the test)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(threads, "_BLAS_SINGLE", False)
    monkeypatch.setattr(sys, "argv", ["onflame", *argv])
    cli._blas_loads_with_one_thread()
    assert os.environ.get("OPENBLAS_NUM_THREADS") == ("1" if held else None)
    cli.blas_start_done()
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    assert threads._BLAS_SINGLE == held  # registration is told, and then skips threadpoolctl


def test_blas_already_loaded_is_not_claimed_to_run_one_thread(monkeypatch):
    """Called after numpy has loaded its BLAS (as a library user might), the variable would change
    nothing: it is not set, and registration keeps limiting BLAS through threadpoolctl."""
    for v in VARIABLES:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(threads, "_BLAS_SINGLE", False)
    monkeypatch.setattr(sys, "argv", ["onflame", "register", "s.obj"])
    assert "numpy" in sys.modules
    cli._blas_loads_with_one_thread()
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    cli.blas_start_done()
    assert not threads._BLAS_SINGLE


def test_a_thread_count_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["onflame", "register", "s.obj"])
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    cli._blas_loads_with_one_thread()
    cli.blas_start_done()
    assert "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["OMP_NUM_THREADS"] == "2"


def test_the_executable_loads_blas_with_one_thread_and_registration_keeps_its_threads(tmp_path):
    """In a fresh process started as the executable starts: both OpenBLAS libraries loaded with one
    thread, the variable gone after start-up, registration's own thread count that of the user's
    environment (not 1 because of the variable)."""
    script = (
        "import os, sys\n"
        "sys.argv = ['onflame', 'register', 'x.obj']\n"
        "import onflame.cli as cli\n"
        "cli._blas_loads_with_one_thread()\n"
        "import numpy, scipy.linalg, threadpoolctl\n"
        "counts = sorted(i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas')\n"
        "cli.blas_start_done()\n"
        "from onflame.registration.threads import _BLAS_SINGLE, thread_count\n"
        "assert _BLAS_SINGLE\n"
        "print(counts, os.environ.get('OPENBLAS_NUM_THREADS'), thread_count())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES + ("ONFLAME_THREADS",)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    counts, variable, threads = out.rsplit(" ", 2)
    assert counts == "[1, 1]" and variable == "None", out
    expected = max(1, min(2, len(os.sched_getaffinity(0))))  # registration's own rule: the cores, at most 2
    assert int(threads) == expected, out


MALLINFO2 = """
import ctypes, sys
class Info(ctypes.Structure):  # glibc's struct mallinfo2 (2.33 and later)
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("no mallinfo2"); sys.exit(0)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
sys.argv = ["onflame", COMMAND, "x.obj"]
import onflame.cli as cli
cli._malloc_keeps_freed_memory()
before = libc.mallinfo2().hblkhd
block = libc.malloc(10 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not (hasattr(os, "confstr") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")),
                    reason="glibc only")
@pytest.mark.parametrize("command, mapped", [("register", False), ("fit-mesh", False), ("build", True)])
def test_registration_commands_keep_large_blocks_on_the_heap(command, mapped):
    """For register and fit-mesh a fresh 10 MB block comes from the heap (glibc's default would give it
    a mapping of its own, returned and faulted in again on every allocation); other commands keep the
    defaults."""
    out = subprocess.run([sys.executable, "-c", MALLINFO2.replace("COMMAND", repr(command))],
                         capture_output=True, text=True, check=True).stdout.strip()
    if out == "no mallinfo2":
        pytest.skip("glibc older than 2.33: no mallinfo2 to read")
    assert (int(out) >= 10 << 20) == mapped, out
