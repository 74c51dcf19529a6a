"""``onflame build`` when things go wrong: a full disk, a damaged manifest, Ctrl-C twice, SIGTERM, leftovers.

The reference is a one-worker build of a small synthetic Stirling release (two actors); a build that a
fault interrupts and a re-run completes must write the same bytes.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from build_helpers import (assert_same_files, build_reference, build_script, dataset_files, descendants, records,
                           running, start_and_wait, temporaries, wait_gone, write_stirling_release)

from onflame.dataset.build import build_subset
from onflame.dataset.build_task import BuildTask, run_task
from onflame.dataset.executors import LocalPool
from onflame.sources import get_source

SUBSET = "STIRLING"
SUBJECTS = ("F1001/F1001_N", "F1004/f1004b_N")


@pytest.fixture(scope="module")
def head(procedural_head):
    return procedural_head


@pytest.fixture(scope="module")
def raw(tmp_path_factory, head) -> Path:
    return write_stirling_release(tmp_path_factory.mktemp("raw"), head)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, raw, head) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path_factory.mktemp("reference")
    rep, files = build_reference(raw, out, head)
    assert rep.exit_code == 0 and rep.count("registered") == 2, rep.format_table()
    return out, files


def subject_files(subset_dir: Path, name: str) -> list[Path]:
    actor, stem = name.split("/")
    return [subset_dir / "FLAME_parameters" / actor / f"{stem}.npz", subset_dir / "registrations" / actor / f"{stem}.obj",
            subset_dir / "build" / "reports" / actor / f"{stem}.json"]


# --- a subject's files together or not at all (27.3) -------------------------------------------------------------

def full_disk_runner(task, model):
    """``run_task`` on a disk that fills up while the registration mesh is written (after the parameters)."""
    import onflame.mesh

    def no_space(path, mesh, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    onflame.mesh.write_obj = no_space  # in this worker process only
    return run_task(task, model)


def test_a_write_error_leaves_nothing_of_the_subject(tmp_path, raw, reference, head):
    out = tmp_path / SUBSET
    shutil.copytree(reference[0] / SUBSET, out)  # an earlier build's files of the subject are there too
    item = next(it for it in get_source(SUBSET).find_scans(raw / SUBSET) if it.name == SUBJECTS[0])
    got = {}
    LocalPool(1, runner=full_disk_runner).run([BuildTask(item, str(out))], head, lambda t, r: got.update(r))
    obj = subject_files(out, SUBJECTS[0])[1]
    assert got["status"] == "failed" and got["retry"] and got["disk_full"]
    assert got["error"] == f"{obj}: No space left on device; nothing of {SUBJECTS[0]} was written"
    assert not any(p.exists() for p in subject_files(out, SUBJECTS[0])), "a half-set (or a stale set) is left"
    assert all(p.exists() for p in subject_files(out, SUBJECTS[1])), "another subject's files were touched"
    assert not temporaries(out)


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


FULL_DISK_SCRIPT = """
import json, shutil, subprocess, sys
from pathlib import Path
from onflame.dataset.build import build_subset
from onflame.synthetic.head import make_head_model

def main(raw, out, copy, result):
    head = make_head_model()
    first = build_subset("STIRLING", raw, out, head, workers=1)
    sub = out / "STIRLING"
    sets = {r["name"]: [p.exists() for p in (sub / "FLAME_parameters" / (r["name"] + ".npz"),
            sub / "registrations" / (r["name"] + ".obj"), sub / "build" / "reports" / (r["name"] + ".json"))]
            for r in first.records}
    temps = [str(p) for p in sub.rglob(".*") if ".tmp" in p.name]
    subprocess.run(["mount", "-o", "remount,size=64m", str(sub)], check=True)   # space is freed
    second = build_subset("STIRLING", raw, out, head, workers=1)
    shutil.copytree(sub, copy / "STIRLING")
    result.write_text(json.dumps({"first": first.to_dict(), "sets": sets, "temps": temps, "second": second.to_dict()}))

if __name__ == "__main__":  # the workers (spawned) import this file too
    main(*map(Path, sys.argv[1:5]))
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs a user namespace to mount a small tmpfs (unshare -Urm)")
def test_a_full_disk_fails_the_scans_it_hits_and_a_rerun_completes(tmp_path, raw, reference):
    """A 500 kB tmpfs holds one subject's files (about 350 kB), not two: the second fails alone, with one
    line, nothing of it on disk; the build says so (exit 1, stopped); with space freed a re-run completes
    with the bytes of an uninterrupted build."""
    out, copy, result = tmp_path / "mica", tmp_path / "copy", tmp_path / "result.json"
    (out / SUBSET).mkdir(parents=True)
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT)
    cmd = (f"mount -t tmpfs -o size=500k tmpfs {out / SUBSET} && "
           f"exec {sys.executable} {script} {raw / SUBSET} {out} {copy} {result}")
    done = subprocess.run(["unshare", "-Urm", "--kill-child", "sh", "-c", cmd], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(result.read_text())
    first = data["first"]
    assert first["exit_code"] == 1 and first["registered"] == 1 and first["failed"] == 1
    assert "No space left on device" in first["stopped"]
    (failed,) = [r for r in first["records"] if r["status"] == "failed"]
    assert failed["error"].endswith(f"No space left on device; nothing of {failed['name']} was written")
    assert all(s in ([True] * 3, [False] * 3) for s in data["sets"].values()), f"half-set: {data['sets']}"
    assert data["sets"][failed["name"]] == [False] * 3 and not data["temps"]
    second = data["second"]
    assert second["exit_code"] == 0 and second["built_now"] == 1 and second["registered"] == 2
    assert_same_files(dataset_files(copy), reference[1])


# --- a damaged manifest (27.6) -----------------------------------------------------------------------------------

def test_manifest_records_of_wrong_types_mean_rebuild_those_scans(tmp_path, raw, reference, head, capsys):
    out = tmp_path / "mica"
    shutil.copytree(reference[0], out)
    path = out / SUBSET / "build" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["records"][SUBJECTS[0]]["inputs"] = ["not", "a", "mapping"]     # a field of the wrong type
    manifest["records"][SUBJECTS[1]] = [1, 2, 3]                           # a record that is no mapping
    path.write_text(json.dumps(manifest))
    path.with_name("manifest.json.journal").write_text('{"name": "F1001/F1001_N", "record": {"stat')  # cut by kill -9
    rep = build_subset(SUBSET, raw / SUBSET, out, head, workers=1, progress=True)
    assert rep.exit_code == 0 and rep.built == 2, rep.format_table()
    assert any("2 record(s) with missing or wrongly typed fields" in w for w in rep.warnings)
    assert any("1 unusable line(s)" in w for w in rep.warnings)
    assert_same_files(dataset_files(out), reference[1])
    assert "build: 2/2" in capsys.readouterr().err  # n/N as it goes
    again = build_subset(SUBSET, raw / SUBSET, out, head, workers=1)
    assert again.built == 0 and again.exit_code == 0 and not again.warnings


# --- interrupts (27.6) -------------------------------------------------------------------------------------------

def _cli_build(raw: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "onflame.cli", "build", "--source", SUBSET, "--raw", str(raw / SUBSET),
            "--out", str(out), "--model", "procedural", "--workers", str(workers)]


def _workers_starting(pid: int) -> bool:
    for child in descendants(pid):
        try:
            if b"spawn_main" in (Path("/proc") / str(child) / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux's /proc")
@pytest.mark.parametrize("how", ["library", "command"])
def test_ctrl_c_twice_while_the_workers_start_prints_no_traceback(tmp_path, raw, how):
    out = tmp_path / "mica"
    cmd = build_script(raw, out, (SUBSET,), 2) if how == "library" else _cli_build(raw, out, 2)
    proc = start_and_wait(cmd, lambda p: _workers_starting(p.pid))
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C, while the workers import
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    if how == "command":
        said = [line for line in err.splitlines() if line.startswith("onflame:")]
        assert len(said) == 1 and said[0].startswith("onflame: build:"), err[-2000:]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux's /proc")
@pytest.mark.parametrize("how", ["library", "command"])
def test_sigterm_ends_with_143_no_warning_and_no_workers(tmp_path, raw, how):
    """``build()`` in a script (the build's own SIGTERM handling) and ``onflame build`` (the command's)."""
    out = tmp_path / "mica"
    cmd = build_script(raw, out, (SUBSET,), 2) if how == "library" else _cli_build(raw, out, 2)
    proc = start_and_wait(cmd, lambda p: records(out, (SUBSET,)) >= 1)
    workers = descendants(proc.pid)
    assert workers, "the build's workers were not found"
    os.kill(proc.pid, signal.SIGTERM)  # as `kill PID`, a service manager stopping it
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 143, err[-2000:]
    assert "resource_tracker" not in err and "Traceback" not in err, err[-2000:]
    assert not wait_gone(workers, 5.0), "worker processes outlived the build"
    summary = json.loads((out / SUBSET / "build" / "summary.json").read_text())
    assert summary["interrupted"] or summary["terminated"]
    if how == "command":  # one line of onflame's saying so
        said = [line for line in err.splitlines() if line.startswith("onflame:")]
        assert len(said) == 1 and said[0].startswith("onflame: build:"), err[-2000:]
    else:
        assert summary["terminated"] and summary["exit_code"] == 143


# --- leftovers of kill -9 (27.9) ---------------------------------------------------------------------------------

def test_temporaries_of_killed_processes_are_removed_by_the_next(tmp_path, monkeypatch):
    """Ray tasks' private folders and the local pool's copy of the model, named after their process."""
    from onflame.dataset import build_ship
    from onflame.dataset.executors import MODEL_PREFIX

    monkeypatch.setattr(build_ship.tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = build_ship.HOST
    gone = tmp_path / f"{build_ship.SANDBOX_PREFIX}{host}-{dead.pid}-x1"
    alive = tmp_path / f"{build_ship.SANDBOX_PREFIX}{host}-{os.getpid()}-x2"
    other_host = tmp_path / f"{build_ship.SANDBOX_PREFIX}elsewhere-{dead.pid}-x3"
    for d in (gone, alive, other_host):
        (d / "out").mkdir(parents=True)
    model_copy = tmp_path / f"{MODEL_PREFIX}{host}-{dead.pid}-x4.npz"  # the local workers' copy of the model
    model_copy.write_bytes(b"npz")
    assert not running(dead.pid)
    build_ship._remove_abandoned_sandboxes()
    assert not gone.exists() and alive.exists() and other_host.exists() and model_copy.exists()
    build_ship.remove_abandoned(MODEL_PREFIX)
    assert not model_copy.exists()
