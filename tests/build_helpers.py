"""Helpers of the build's tests: the files a build must reproduce, builds in child processes, /proc."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: Temporaries of onflame's writes (``.<name>.<token>.tmp`` and ``.<name>.<token>.tmp.<suffix>``).
TEMPORARY = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file a build writes that must not depend on how it ran: parameters, meshes, reports."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and ("/FLAME_parameters/" in rel or "/registrations/" in rel or "/build/reports/" in rel):
            out[rel] = p.read_bytes()
    return out


def write_stirling_release(root: Path, head) -> Path:
    """A synthetic Stirling release of two actors (seed 1) in ``root/STIRLING``; returns ``root``."""
    from onflame.synthetic.raw_releases import write_raw_release

    write_raw_release("STIRLING", root / "STIRLING", head, n_actors=2, seed=1)
    return root


def build_reference(raw: Path, out: Path, head):
    """``(report, dataset_files(out))`` of a one-worker local build of ``raw/STIRLING`` into ``out``."""
    from onflame.dataset import build_subset

    rep = build_subset("STIRLING", raw / "STIRLING", out, head, workers=1)
    return rep, dataset_files(out)


def assert_same_files(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    assert sorted(got) == sorted(want)
    differ = [k for k in want if got[k] != want[k]]
    assert not differ, f"files differ from the reference build: {differ}"


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if TEMPORARY.match(p.name)]


def build_script(raw: Path, out: Path, subsets: tuple[str, ...], workers: int, executor: str = "local") -> list[str]:
    """A child process that builds ``subsets`` of ``raw`` into ``out`` and exits with the build's code."""
    code = ("import sys; from onflame.dataset.build import build; from onflame.synthetic.head import make_head_model; "
            f"reps = build([(n, {str(raw)!r} + '/' + n) for n in {subsets!r}], {str(out)!r}, make_head_model(), "
            f"workers={workers}, executor={executor!r}); "
            "sys.exit(max(r.exit_code for r in reps.values()))")
    return [sys.executable, "-c", code]


def records(out: Path, subsets: tuple[str, ...]) -> int:
    """Scans recorded so far: the manifest's records and its journal's (the records of the running build)."""
    names = set()
    for name in subsets:
        build_dir = out / name / "build"
        try:
            names |= {f"{name}/{k}" for k in json.loads((build_dir / "manifest.json").read_text())["records"]}
        except (OSError, ValueError):
            pass
        try:
            lines = (build_dir / "manifest.json.journal").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                names.add(f"{name}/{json.loads(line)['name']}")
            except (ValueError, KeyError):
                pass  # a line being written
    return len(names)


def start_and_wait(cmd: list[str], until, timeout: float = 240) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own and wait until ``until(proc)`` is true (fails the test otherwise)."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not until(proc):
        if proc.poll() is not None:
            pytest.fail(f"the build ended before it was stopped: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the build did not get there in time")
        time.sleep(0.05)
    return proc


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (Linux /proc)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [c for c, p in parents.items() if p == parent]
        out += kids
        todo += kids
    return out


def running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` still running after ``seconds`` (they are then killed, not to disturb other tests)."""
    deadline = time.monotonic() + seconds
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [p for p in pids if running(p)]
    for p in survivors:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return survivors
