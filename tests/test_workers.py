"""onflame.workers.run_in_processes, the process pool the build, evaluation, the report and prepare share."""
from __future__ import annotations

import os

import pytest

from onflame.evaluation.parallel import run_parallel
from onflame.workers import WorkerDied, run_in_processes

_TAG: str | None = None


def _tag(value: str) -> None:
    global _TAG
    _TAG = value


def square_or_die(x: int) -> tuple[int, int, str | None, str | None]:
    """x², the worker's pid, its OMP_NUM_THREADS and the initializer's tag; 13 kills its worker."""
    if x == 13:
        os._exit(9)
    return x * x, os.getpid(), os.environ.get("OMP_NUM_THREADS"), _TAG


def test_only_the_task_that_kills_its_worker_dies_and_the_rest_finish():
    before = os.environ.get("OMP_NUM_THREADS")
    got: dict[int, object] = {}
    interrupted = run_in_processes(square_or_die, [1, 2, 13, 4, 5, 6], 2, got.__setitem__,
                                   initializer=_tag, initargs=("ready",), threads=3)
    assert not interrupted
    assert set(got) == {1, 2, 13, 4, 5, 6}
    assert isinstance(got[13], WorkerDied) and "died" in got[13].reason
    for x in (1, 2, 4, 5, 6):
        value, pid, threads, tag = got[x]
        assert value == x * x and pid != os.getpid()
        assert threads == "3" and tag == "ready"  # the workers' BLAS threads and the initializer
    assert os.environ.get("OMP_NUM_THREADS") == before  # this process's own setting is back


def test_tasks_are_taken_one_at_a_time_as_workers_free_up():
    """A run over a generator holds at most the running tasks and one look-ahead: memory does not grow
    with the number of tasks; a generator that stops early ends the run."""
    pulled: list[int] = []

    def tasks(n: int, stop_after: int | None = None):
        for i in range(n):
            if stop_after is not None and len(pulled) >= stop_after:
                return
            pulled.append(i)
            yield i

    pulled_at_first_outcome: list[int] = []

    def on_outcome(task, outcome):
        if not pulled_at_first_outcome:
            pulled_at_first_outcome.append(len(pulled))

    assert not run_in_processes(square_or_die, tasks(30), 2, on_outcome)
    assert pulled_at_first_outcome[0] <= 3 and len(pulled) == 30  # 2 running + 1 look-ahead
    pulled.clear()
    got: dict = {}
    assert not run_in_processes(square_or_die, tasks(30, stop_after=5), 2, got.__setitem__)
    assert sorted(got) == [0, 1, 2, 3, 4]


def test_evaluation_gives_a_dying_task_its_broken_result_and_runs_alone_in_process():
    results: list = []
    run_parallel(square_or_die, [3, 13, 7], 2, results.append, on_broken=lambda task, why: ("broken", task, why))
    assert sorted(r[0] for r in results if r[0] != "broken") == [9, 49]
    assert [r[:2] for r in results if r[0] == "broken"] == [("broken", 13)]
    one: list = []
    run_parallel(square_or_die, [3, 4], 1, one.append, on_broken=lambda task, why: None)
    assert [r[0] for r in one] == [9, 16] and {r[1] for r in one} == {os.getpid()}  # 1 worker: this process


def test_prepare_records_the_photo_that_kills_its_worker_as_unreadable(killer_photos):
    from onflame.training import prepare

    tasks = [prepare._Task("a", f"p{i}.jpg", f"/kill/{i}" if i == 5 else f"/nonexistent/{i}.jpg", f"p{i}.jpg",
                           "out", 0.5, [i, 0]) for i in range(9)]  # batches of 4: the second one dies
    got: list = []
    prepare._run_tasks(tasks, None, "pool-test-killer", {}, 2, got.append, batch=4)
    by_source = {r.source: r for r in got}
    assert sorted(by_source) == sorted(t.source for t in tasks) and len(got) == len(tasks)
    assert by_source["p5.jpg"].status == prepare.UNREADABLE and "died" in by_source["p5.jpg"].detail
    assert all(r.status == prepare.UNREADABLE and "died" not in r.detail for s, r in by_source.items() if s != "p5.jpg")


@pytest.fixture
def killer_photos(monkeypatch):
    """Workers that build no detector and whose photo reader dies on ``/kill/...`` (a native crash on one
    photo) and finds no other file."""
    from onflame.training import prepare

    monkeypatch.setattr(prepare, "_init_worker", _stub_init)  # pickled by name: the workers run _stub_init


def _stub_init(name: str, options: dict) -> None:
    from onflame.training import prepare

    prepare.read_photo = _read_or_die  # in the worker's own copy of the module


def _read_or_die(path: str):
    from onflame.errors import InputError

    if str(path).startswith("/kill/"):
        os._exit(9)
    raise InputError(path, "no such file")
