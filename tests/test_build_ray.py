"""``onflame build --executor ray`` on a real two-node Ray cluster, and a Ray build killed with ``kill -9``.

The cluster is two ``ray start`` processes on this machine (a head without CPUs, and a second node with
its own temporary folder and a custom resource ``onflame_node2`` that pins the build's tasks to it); the
build's driver is a process of its own (``ray_driver.py``). Tasks get their files shipped through Ray's
object store and return their outputs to the driver; an audit hook in each task records every file it
opens, lists or looks at under the driver's folders (there must be none).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from build_helpers import (assert_same_files, build_reference, build_script, dataset_files, descendants, records,
                           wait_gone, write_stirling_release)

from onflame.dataset.build import build_subset

pytest.importorskip("ray", reason="Ray is not installed (pip install 'onflame[ray]')")

SUBSET = "STIRLING"
NODE2 = "onflame_node2"


@pytest.fixture(scope="module")
def head(procedural_head):
    return procedural_head


@pytest.fixture(scope="module")
def raw(tmp_path_factory, head) -> Path:
    return write_stirling_release(tmp_path_factory.mktemp("raw"), head)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, raw, head) -> dict[str, bytes]:
    rep, files = build_reference(raw, tmp_path_factory.mktemp("reference"), head)
    assert rep.exit_code == 0, rep.format_table()
    return files


# --- kill -9 of a build that started its own Ray (27.9) ---------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux's /proc")
def test_kill_9_of_a_ray_build_ends_its_ray_processes(tmp_path, raw):
    out = tmp_path / "mica"
    proc = subprocess.Popen(build_script(raw, out, (SUBSET,), 1, executor="ray"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while records(out, (SUBSET,)) < 1:  # Ray up, one scan built
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the Ray build wrote no record in time"
        time.sleep(0.1)
    ray_processes = descendants(proc.pid)
    assert len(ray_processes) >= 3, "Ray's processes were not found"
    os.kill(proc.pid, signal.SIGKILL)  # the build alone, as `kill -9 PID`
    proc.wait(30)
    survivors = wait_gone(ray_processes, 10.0)
    assert not survivors, f"Ray processes outlived the killed build by 10 s: {survivors}"


# --- a two-node cluster -----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """``(address, environment of its drivers, node2 process)`` of a head and a second node, each with its
    own temporary folder, and a token of its own and a private home: apart from any other Ray here."""
    tmp = Path(tempfile.mkdtemp(prefix="ofr-"))  # short: Ray's socket paths inside must stay under 108 bytes
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "HOME": str(tmp),
           # a lost node is noticed within about a second
           "RAY_health_check_period_ms": "300", "RAY_health_check_failure_threshold": "3"}
    port = _free_port()
    common = ["--disable-usage-stats", "--object-store-memory=100000000", "--block"]
    started = []
    try:
        started.append(subprocess.Popen(
            [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
             f"--temp-dir={tmp / 'h'}", *common], env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and started[0].poll() is None, "the Ray head did not start"
                time.sleep(0.1)
        started.append(subprocess.Popen(
            [ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2", f'--resources={{"{NODE2}": 2}}',
             f"--temp-dir={tmp / 'n'}", *common], env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield f"127.0.0.1:{port}", env, started[1]
    finally:
        for p in reversed(started):  # each node's processes share its process group
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def _build_through(cluster: tuple, raw: Path, out: Path, resources: dict, unschedulable_s: float = 300.0,
                   during=None) -> tuple[int, dict]:
    """Build the release through the cluster in a driver process of its own (``ray_driver.py``); ``during``
    runs in this process meanwhile. The exit code and the build's summary."""
    address, env, _ = cluster
    cmd = [sys.executable, str(Path(__file__).with_name("ray_driver.py")), address, str(raw), str(out),
           json.dumps(resources), str(unschedulable_s)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if during is not None:
        during(proc)
    stdout, stderr = proc.communicate(timeout=300)
    assert stdout.strip(), stderr[-3000:]
    return proc.returncode, json.loads(stdout.strip().splitlines()[-1])


def test_a_build_on_two_nodes_without_shared_files_matches_the_local_pool(tmp_path, raw, reference, cluster):
    out = tmp_path / "mica"
    code, summary = _build_through(cluster, raw, out, {NODE2: 1})
    assert code == 0 and summary["mode"] == "shipped" and summary["registered"] == 2, summary
    recs = json.loads((out / SUBSET / "build" / "manifest.json").read_text())["records"]
    assert all(r["opened_driver_paths"] == [] for r in recs.values()), {n: r["opened_driver_paths"] for n, r in recs.items()}
    assert all(r["opened_shipped_copies"] >= 2 for r in recs.values())  # the scan and its landmarks, at least
    assert_same_files(dataset_files(out), reference)
    code, again = _build_through(cluster, raw, out, {NODE2: 1})
    assert code == 0 and again["built_now"] == 0  # resumable the same way


def test_a_lost_node_fails_only_its_scans_and_never_hangs(tmp_path, raw, reference, head, cluster):
    """One task at a time on node 2 (each takes both its units); node 2 dies after the first scan: the
    other fails within seconds instead of waiting forever, and a re-run builds only that one."""
    _, _, node2 = cluster
    out = tmp_path / "mica"

    def kill_node2_after_one_scan(proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 240
        while records(out, (SUBSET,)) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(node2.pid, signal.SIGKILL)

    t0 = time.monotonic()
    code, summary = _build_through(cluster, raw, out, {NODE2: 2}, unschedulable_s=3.0, during=kill_node2_after_one_scan)
    assert time.monotonic() - t0 < 180
    assert code == 1 and summary["registered"] == 1 and summary["failed"] == 1, summary
    assert "no node of the Ray cluster can run" in summary["stopped"]
    resumed = build_subset(SUBSET, raw / SUBSET, out, head, workers=1)
    assert resumed.built == 1 and resumed.exit_code == 0
    assert_same_files(dataset_files(out), reference)
