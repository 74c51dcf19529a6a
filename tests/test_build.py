"""``onflame build``: synthetic raw releases -> MICA subsets; resume after SIGKILL / Ctrl-C, Ray, bad input.

The reference build registers two small synthetic releases (FRGC range images and Stirling OBJ, two
actors each) with one worker. Every other build of the same releases (killed and resumed, interrupted
and resumed, two workers, Ray) must write byte-identical dataset files and reports.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from build_helpers import (assert_same_files, build_script, dataset_files, descendants, records, running,
                           start_and_wait, temporaries)
from conftest import MICA_LISTS

from onflame.cli import main as cli_main
from onflame.dataset import read_image_paths, validate_root
from onflame.dataset.build import build, build_subset
from onflame.synthetic.raw_releases import build_all_synthetic
from onflame.dataset.build_task import BUILD_DIR
from onflame.dataset.executors import WORKER_DIED, LocalPool
from onflame.errors import InputError
from onflame.sources import SOURCES, get_source
from onflame.synthetic.raw_releases import MICA_FACTS, write_raw_release

SUBSETS = ("FRGC", "STIRLING")


@pytest.fixture(scope="module")
def head(procedural_head):
    return procedural_head


@pytest.fixture(scope="module")
def raw(tmp_path_factory, head) -> Path:
    """Two raw releases, two actors each: ``raw/<SUBSET>/``."""
    root = tmp_path_factory.mktemp("raw")
    for seed, name in enumerate(SUBSETS):
        write_raw_release(name, root / name, head, n_actors=2, seed=seed)
    return root


def _jobs(raw: Path) -> list[tuple[str, Path]]:
    return [(name, raw / name) for name in SUBSETS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, raw, head) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path_factory.mktemp("reference")
    reports = build(_jobs(raw), out, head, workers=1)
    for rep in reports.values():
        assert rep.exit_code == 0, rep.format_table()
        assert rep.count("registered") == 2
    files = dataset_files(out)
    assert len([k for k in files if k.endswith(".npz")]) == 4
    return out, files


# --- the eight sources ----------------------------------------------------------------------------------------

def test_all_eight_synthetic_releases_build_and_validate(tmp_path, head):
    reports = build_all_synthetic(tmp_path, head, n_actors=1, workers=2)
    assert sorted(reports) == sorted(SOURCES)
    for name, rep in reports.items():
        assert rep.exit_code == 0 and rep.count("failed") == 0, rep.format_table()
        actor, stem, _ = MICA_FACTS[name][0]
        sub = tmp_path / "mica" / name
        npz = sub / "FLAME_parameters" / actor / f"{stem}.npz"
        assert npz.is_file() and (sub / "registrations" / actor / f"{stem}.obj").is_file()
        listing = MICA_LISTS / f"{name}.npy"
        if listing.is_file():  # the names are MICA's own
            assert read_image_paths(listing)[actor][1] == f"{actor}/{stem}.npz"
        summary = json.loads((sub / BUILD_DIR / "summary.json").read_text())
        assert summary["scans"] == 1 and summary["failed"] == 0
    report = validate_root(tmp_path / "mica")  # the root carries its model.npz: registration vs FLAME(params)
    assert report.ok, report.format_table()
    assert all(s.compared == 1 and s.mean_mm < 0.1 for s in report.subsets.values()), report.format_table()


# --- resumable and deterministic -------------------------------------------------------------------------------

def test_rerun_skips_finished_work_and_redoes_changed_work(tmp_path, raw, reference, head):
    out = tmp_path / "mica"
    shutil.copytree(reference[0], out)
    again = build(_jobs(raw), out, head, workers=1)
    assert all(r.built == 0 and r.exit_code == 0 for r in again.values())

    # a deleted output and a half-written one (a killed run's) are both redone, the rest is not
    obj = out / "FRGC" / "registrations" / "02463" / "02463d546.obj"
    obj.unlink()
    npz = out / "STIRLING" / "FLAME_parameters" / "F1001" / "F1001_N.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    # temporaries a kill -9 leaves: of one file's write, and of a subject's files written together
    (npz.parent / ".F1001_N.npz.abc123.tmp").write_bytes(b"partial")
    (npz.parent / ".F1001_N.1a2b3c4d.tmp.npz").write_bytes(b"partial")
    (obj.parent / ".02463d546.1a2b3c4d.tmp.obj").write_bytes(b"partial")
    again = build(_jobs(raw), out, head, workers=1)
    assert again["FRGC"].built == 1 and again["STIRLING"].built == 1
    assert not temporaries(out)
    assert_same_files(dataset_files(out), reference[1])


def test_sigkill_part_way_then_resume_is_byte_identical(tmp_path, raw, reference, head):
    out = tmp_path / "mica"
    proc = _start_and_wait_for_records(raw, out, 1)
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its workers, wherever they are
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= _records(out) < 4, "the kill came too late to test a resume"

    done_before = _records(out)
    resumed = build(_jobs(raw), out, head, workers=2)
    cached = sum(rec["cached"] for r in resumed.values() for rec in r.records)
    assert cached == done_before, "scans finished before the kill were built again (or lost)"
    assert sum(r.built for r in resumed.values()) == 4 - done_before
    assert all(r.exit_code == 0 and r.count("registered") == 2 for r in resumed.values())
    assert not temporaries(out) and not list(out.rglob("lock"))
    assert_same_files(dataset_files(out), reference[1])


def _records(out: Path) -> int:
    return records(out, SUBSETS)


def _start_and_wait_for_records(raw: Path, out: Path, n: int, workers: int = 1) -> subprocess.Popen:
    return start_and_wait(build_script(raw, out, SUBSETS, workers), lambda proc: _records(out) >= n)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux's /proc")
def test_sigkill_of_the_build_alone_takes_its_workers_with_it(tmp_path, raw, reference, head):
    """``kill -9`` of the build's process only (not its group): its two workers and multiprocessing's helper
    end within seconds, nothing is written into the tree afterwards, and a re-run finishes the same files."""
    out = tmp_path / "mica"
    proc = _start_and_wait_for_records(raw, out, 1, workers=2)
    helpers = descendants(proc.pid)
    assert len(helpers) >= 2, "the build's workers were not found"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 5.0
    while any(running(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [p for p in helpers if running(p)]
    for p in survivors:  # do not leave them to the next test
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"processes of the killed build still run after 5 s: {survivors}"
    assert _records(out) < 4, "the kill came after the last scan"
    after_kill = _tree(out)
    time.sleep(3.0)
    assert _tree(out) == after_kill, "files changed in the tree after the build was killed"

    resumed = build(_jobs(raw), out, head, workers=2)
    assert all(r.exit_code == 0 for r in resumed.values())
    assert_same_files(dataset_files(out), reference[1])


def test_subsets_built_together_report_their_own_time(reference):
    """Two subsets share one build: each summary gives its scans' worker seconds and names the shared wall
    time as the build's, with no per-subset scans/s (the whole build's divided by one subset's scans)."""
    out, _ = reference
    for name in SUBSETS:
        summary = json.loads((out / name / BUILD_DIR / "summary.json").read_text())
        tasks = [r["timings_s"]["task"] for r in summary["records"]]
        assert summary["built_together"] == 2 and summary["scans_per_s"] is None
        assert summary["task_s"] == pytest.approx(sum(tasks), abs=1e-3) and 0 < summary["task_s"] <= summary["wall_s"] * 2
        text = (out / name / BUILD_DIR / "summary.txt").read_text()
        assert f"in {summary['task_s']:.1f} s of worker time (the build of 2 subsets together took " \
               f"{summary['wall_s']:.1f} s)" in text


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(tmp_path, raw, reference, head):
    out = tmp_path / "mica"
    proc = _start_and_wait_for_records(raw, out, 1)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    summaries = [json.loads((out / n / BUILD_DIR / "summary.json").read_text()) for n in SUBSETS]
    assert all(s["interrupted"] for s in summaries)
    assert sum(s["pending"] for s in summaries) >= 1, "Ctrl-C came after the last scan"
    assert not list(out.rglob("lock"))

    resumed = build(_jobs(raw), out, head, workers=1)
    assert all(r.exit_code == 0 and r.count("pending") == 0 for r in resumed.values())
    assert_same_files(dataset_files(out), reference[1])


def test_ray_executor_matches_the_local_pool(tmp_path, raw, reference, head):
    pytest.importorskip("ray")
    out = tmp_path / "mica"
    reports = build(_jobs(raw), out, head, workers=2, executor="ray")
    assert all(r.executor == "ray" and r.exit_code == 0 for r in reports.values())
    assert_same_files(dataset_files(out), reference[1])


# --- failures are isolated -------------------------------------------------------------------------------------

def test_bad_scans_fail_alone_with_their_file_named(tmp_path, head):
    raw = tmp_path / "raw"
    release = write_raw_release("FRGC", raw, head, n_actors=3, seed=4)
    broken = release.scan("04200").path            # a truncated gzip
    broken.write_bytes(broken.read_bytes()[:200])
    empty = release.scan("04936").path             # a range image with no valid point
    import gzip
    with gzip.open(empty, "wt") as fh:
        fh.write("2 rows\n2 columns\npixels (flag X Y Z):\n0 0 0 0\n" + "-999999 " * 4 + "\n" + "-999999 " * 4
                 + "\n" + "-999999 " * 4 + "\n")
    good = release.scan("02463").path
    twin = raw / "nd1" / "Fall2004range" / good.name      # the same capture twice: the first is built
    twin.parent.mkdir(parents=True)
    shutil.copy(good, twin)
    good.with_suffix("").with_suffix(".ppm").unlink()      # its texture photo is missing: a warning only
    rep = build_subset("FRGC", raw, tmp_path / "mica", head, workers=2)
    assert rep.exit_code == 1
    status = {r["name"]: r["status"] for r in rep.records}
    assert status == {"02463/02463d546": "registered", "04200/04200d74": "failed", "04936/04936d100": "failed"}
    assert any(str(broken) in p for p in rep.problems) and any(str(empty) in p for p in rep.problems)
    assert any(str(twin) in p and "duplicate" in p for p in rep.problems)
    assert any(str(good) in w and "texture" in w for w in rep.warnings)
    shutil.rmtree(twin.parent)
    assert not (tmp_path / "mica" / "FRGC" / "FLAME_parameters" / "04200").exists()
    summary = (tmp_path / "mica" / "FRGC" / BUILD_DIR / "summary.txt").read_text()
    assert "04200d74" in summary and "ERROR" in summary

    # the same bad input fails the same way: not redone until it changes
    again = build_subset("FRGC", raw, tmp_path / "mica", head, workers=1)
    assert again.built == 0 and again.exit_code == 1
    write_raw_release("FRGC", raw, head, n_actors=3, seed=4)  # the good files back
    fixed = build_subset("FRGC", raw, tmp_path / "mica", head, workers=1)
    assert fixed.built == 2 and fixed.exit_code == 0 and fixed.count("registered") == 3


def crashing_runner(task, model):
    """A stand-in for ``run_task``: kills its worker on one scan, returns a record for the others."""
    if task.name.endswith("d74"):
        os._exit(9)
    return {"name": task.name, "status": "registered", "verdict": "ok", "reasons": [], "timings_s": {}}


def test_a_scan_that_kills_its_worker_fails_alone(raw, head):
    items = get_source("FRGC").find_scans(raw / "FRGC") + get_source("STIRLING").find_scans(raw / "STIRLING")
    from onflame.dataset.build_task import BuildTask

    tasks = [BuildTask(it, "unused") for it in items]
    assert "04200/04200d74" in {t.name for t in tasks}
    got = {}
    t0 = time.monotonic()
    interrupted = LocalPool(2, runner=crashing_runner).run(tasks, head, lambda t, r: got.__setitem__(t.name, r))
    assert not interrupted and time.monotonic() - t0 < 120
    assert set(got) == {t.name for t in tasks}
    assert got["04200/04200d74"]["status"] == "failed" and WORKER_DIED in got["04200/04200d74"]["reasons"][0]
    assert all(r["status"] == "registered" for n, r in got.items() if n != "04200/04200d74")


def test_a_second_build_of_the_same_subset_is_refused(tmp_path, raw, head, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    import socket

    lock = tmp_path / "mica" / "FRGC" / BUILD_DIR / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{socket.gethostname()} 4242\n")
    with open(lock, "rb+") as held:  # a live build holds the lock: refused, naming it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another build is writing this subset .*4242"):
            build_subset("FRGC", raw / "FRGC", tmp_path / "mica", head, workers=1)
    # a worker of an earlier (killed) build still holds the workers' lock: the new build waits, then refuses
    from onflame.dataset.build_lock import BuildLock

    monkeypatch.setattr(BuildLock, "WORKER_GRACE_S", 0.5)
    with open(lock.with_name("workers.lock"), "ab") as worker:
        fcntl.flock(worker.fileno(), fcntl.LOCK_SH)
        with pytest.raises(InputError, match="workers of an earlier build"):
            build_subset("FRGC", raw / "FRGC", tmp_path / "mica", head, workers=1)
    # the file of a build that died (no holder: the kernel dropped its lock) is taken over
    lock.write_text(f"{socket.gethostname()} 999999999\n")
    rep = build_subset("FRGC", raw / "FRGC", tmp_path / "mica", head, workers=1,
                       only={"02463": "02463d546"})
    assert rep.exit_code == 0 and [r["name"] for r in rep.records] == ["02463/02463d546"]
    assert not lock.exists() and not lock.with_name("workers.lock").exists()


# --- the command line ------------------------------------------------------------------------------------------

def test_cli_build_json_and_errors(tmp_path, raw, capsys):
    code = cli_main(["build", "--source", "stirling", "--raw", str(raw / "STIRLING"), "--out", str(tmp_path),
                     "--model", "procedural", "--workers", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["subset"] == "STIRLING" and data["registered"] == 2 and data["failed"] == 0
    assert sorted(r["name"] for r in data["records"]) == ["F1001/F1001_N", "F1004/f1004b_N"]
    assert np.load(tmp_path / "STIRLING" / "FLAME_parameters" / "F1001" / "F1001_N.npz")["betas"].shape == (400,)

    assert cli_main(["build", "--source", "nope", "--raw", str(raw), "--out", str(tmp_path)]) == 2
    assert "unknown source" in capsys.readouterr().err
    assert cli_main(["build", "--source", "frgc", "--raw", str(tmp_path / "missing"), "--out", str(tmp_path),
                     "--model", "procedural"]) == 1
    assert "missing" in capsys.readouterr().err
    listing = MICA_LISTS / "STIRLING.npy"
    if listing.is_file():  # MICA's list keeps only MICA's subjects (both are)
        code = cli_main(["build", "--source", "STIRLING", "--raw", str(raw / "STIRLING"), "--out", str(tmp_path),
                         "--model", "procedural", "--image-list", str(listing)])
        assert code == 0 and "2 up to date" in capsys.readouterr().out
