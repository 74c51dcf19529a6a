"""The executable's start-up: BLAS loaded with one thread for registration's commands, the user's
environment back once start-up is done."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from onflame import cli

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.parametrize("argv, held", [(["register", "s.obj"], True), (["-v", "fit-mesh", "m.obj"], True),
                                        (["build", "--raw", "x"], False), (["--version"], False)])
def test_blas_is_held_at_one_thread_only_while_registrations_start(monkeypatch, argv, held):
    for v in VARIABLES:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(sys, "argv", ["onflame", *argv])
    cli._blas_loads_with_one_thread()
    assert os.environ.get("OPENBLAS_NUM_THREADS") == ("1" if held else None)
    cli.blas_start_done()
    assert "OPENBLAS_NUM_THREADS" not in os.environ


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
        "from onflame.registration.threads import thread_count\n"
        "print(counts, os.environ.get('OPENBLAS_NUM_THREADS'), thread_count())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES + ("ONFLAME_THREADS",)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    counts, variable, threads = out.rsplit(" ", 2)
    assert counts == "[1, 1]" and variable == "None", out
    expected = max(1, min(2, len(os.sched_getaffinity(0))))  # registration's own rule: the cores, at most 2
    assert int(threads) == expected, out
