"""Evaluation work items over local processes (:func:`onflame.workers.run_in_processes`).

Items are independent and their results small. With one worker everything runs in this process (no
start-up cost, easy to debug).
"""
from __future__ import annotations

from typing import Callable, Iterable, TypeVar

from ..workers import WorkerDied, run_in_processes

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(fn: Callable[[T], R], tasks: Iterable[T], workers: int, on_result: Callable[[R], None],
                 on_broken: Callable[[T, str], R]) -> None:
    """``on_result(fn(task))`` for every task, in completion order.

    Args:
        fn: a module-level function (it is pickled by name for the workers).
        tasks: picklable task descriptions.
        workers: processes (1: in this process).
        on_result: takes each result, in this process.
        on_broken: the result to give for a task whose worker process died running it (a native crash,
            the out-of-memory killer), with the reason.

    Raises:
        KeyboardInterrupt: on Ctrl-C, once the running tasks have finished and been handed over.
    """
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_result(fn(task))
        return

    def outcome(task: T, result: R | WorkerDied) -> None:
        on_result(on_broken(task, result.reason) if isinstance(result, WorkerDied) else result)

    if run_in_processes(fn, tasks, workers, outcome):
        raise KeyboardInterrupt
