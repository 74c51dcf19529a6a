"""``onflame build --executor ray`` on a real two-node Ray cluster, and a Ray build killed with ``kill -9``.

The cluster is two ``ray start`` processes on this machine (a head without CPUs, and a second node with
its own temporary folder and a custom resource ``onflame_node2`` that pins the build's tasks to it).
Tasks get their files shipped through Ray's object store and return their outputs to the driver; an
audit hook in each task records every file it opens under the driver's folders (there must be none).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from build_helpers import assert_same_files, build_script, dataset_files, descendants, records, wait_gone

from onflame.dataset.build import build_subset
from onflame.synthetic.head import make_head_model
from onflame.synthetic.raw_releases import write_raw_release

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'onflame[ray]')")

SUBSET = "STIRLING"
NODE2 = "onflame_node2"


@pytest.fixture(scope="module")
def head():
    return make_head_model()


@pytest.fixture(scope="module")
def raw(tmp_path_factory, head) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_raw_release(SUBSET, root / SUBSET, head, n_actors=2, seed=1)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, raw, head) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference")
    rep = build_subset(SUBSET, raw / SUBSET, out, head, workers=1)
    assert rep.exit_code == 0, rep.format_table()
    return dataset_files(out)


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
    """``(address, node2 process)`` of a head and a second node, each with its own temporary folder and a
    private home. Without token authentication: Ray reads the driver's mode when it is imported, before
    this fixture runs; the cluster lives for the tests only, on this machine."""
    tmp = Path(tempfile.mkdtemp(prefix="ofr-"))  # short: Ray's socket paths inside must stay under 108 bytes
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HOME": str(tmp),
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
        saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE",)}
        os.environ.update(RAY_AUTH_MODE="disabled")  # this process is the driver
        try:
            yield f"127.0.0.1:{port}", started[1]
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    finally:
        for p in reversed(started):  # each node's processes share its process group
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def _audited(forbidden: tuple[str, ...]):
    """The build's Ray task, recording in its record every file it opens, lists or looks at (``stat``) under
    ``forbidden`` folders (and, to show the hook works, how many it opened in its private folder)."""

    def audited_task(task, box, shipment):
        import sys as _sys

        from onflame.dataset.build_ray import remote_task

        if not hasattr(_sys, "_onflame_opened"):
            _sys._onflame_opened = []
            seen = _sys._onflame_opened.append

            def hook(event, args):
                if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
                    seen(os.path.abspath(os.fsdecode(args[0])))

            _sys.addaudithook(hook)
            for name in ("stat", "lstat"):  # not audit events: looked at through os's functions
                real = getattr(os, name)

                def looked_at(path, *args, _real=real, **kwargs):
                    if isinstance(path, (str, bytes, os.PathLike)):
                        seen(os.path.abspath(os.fsdecode(path)))
                    return _real(path, *args, **kwargs)

                setattr(os, name, looked_at)
        del _sys._onflame_opened[:]
        result = remote_task(task, box, shipment)
        opened = list(_sys._onflame_opened)
        result["record"]["opened_driver_paths"] = [p for p in opened if p.startswith(forbidden)]
        result["record"]["opened_shipped_copies"] = sum("onflame-ship-" in p for p in opened)
        return result

    return audited_task


def _ray_options(raw: Path, out: Path, **more) -> dict:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks need not import this test
    return {"resources": {NODE2: 1}, "task_fn": _audited((str(raw), str(out))), **more}


def test_a_build_on_two_nodes_without_shared_files_matches_the_local_pool(tmp_path, raw, reference, head, cluster):
    address, _ = cluster
    out = tmp_path / "mica"
    rep = build_subset(SUBSET, raw / SUBSET, out, head, executor="ray", address=address, ray_files="ship",
                       executor_options=_ray_options(raw, out))
    assert rep.exit_code == 0 and rep.mode == "shipped" and rep.count("registered") == 2, rep.format_table()
    recs = json.loads((out / SUBSET / "build" / "manifest.json").read_text())["records"]
    assert all(r["opened_driver_paths"] == [] for r in recs.values()), {n: r["opened_driver_paths"] for n, r in recs.items()}
    assert all(r["opened_shipped_copies"] >= 2 for r in recs.values())  # the scan and its landmarks, at least
    assert_same_files(dataset_files(out), reference)
    again = build_subset(SUBSET, raw / SUBSET, out, head, executor="ray", address=address, ray_files="ship",
                         executor_options=_ray_options(raw, out))
    assert again.built == 0 and again.exit_code == 0  # resumable the same way


def test_a_lost_node_fails_only_its_scans_and_never_hangs(tmp_path, raw, reference, head, cluster):
    """One task at a time on node 2 (each takes both its units); node 2 dies after the first scan: the
    other fails within seconds instead of waiting forever, and a re-run builds only that one."""
    address, node2 = cluster
    out = tmp_path / "mica"

    def kill_node2_after_one_scan():
        while records(out, (SUBSET,)) < 1:
            time.sleep(0.05)
        os.killpg(node2.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_node2_after_one_scan, daemon=True)
    killer.start()
    t0 = time.monotonic()
    rep = build_subset(SUBSET, raw / SUBSET, out, head, executor="ray", address=address, ray_files="ship",
                       executor_options=_ray_options(raw, out, resources={NODE2: 2}, unschedulable_s=3.0))
    killer.join(5)
    assert time.monotonic() - t0 < 180
    assert rep.exit_code == 1 and rep.count("registered") == 1 and rep.count("failed") == 1, rep.format_table()
    assert "no node of the Ray cluster can run" in rep.stopped
    resumed = build_subset(SUBSET, raw / SUBSET, out, head, workers=1)
    assert resumed.built == 1 and resumed.exit_code == 0
    assert_same_files(dataset_files(out), reference)
