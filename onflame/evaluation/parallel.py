"""Evaluation work items over local processes.

Items are independent and the results small, so a ``spawn`` process pool is all it takes; each worker
keeps numpy's BLAS at one thread (the point queries run libigl's own threads). With one worker everything
runs in this process (no start-up cost, easy to debug).
"""
from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def run_parallel(fn: Callable[[T], R], tasks: Iterable[T], workers: int,
                 on_broken: Callable[[T, str], R]) -> Iterator[R]:
    """``fn(task)`` for every task, results in completion order.

    Args:
        fn: a module-level function (it is pickled by name for the workers).
        tasks: picklable task descriptions.
        workers: processes (1: in this process).
        on_broken: the result to give for a task whose worker process died (a native crash, the
            out-of-memory killer), with the reason.
    """
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield fn(task)
        return
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)
    try:
        running = {pool.submit(fn, t): t for t in tasks}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                task = running.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    yield on_broken(task, "worker process died (a crash or out of memory)")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
