"""The ``onflame`` command line.

Each command is a thin wrapper: it parses arguments, calls the library function that does the work, and
prints a table (or JSON with ``--json``). The package is split by job:

- :mod:`.parser` assembles the commands; :mod:`.options` holds the option types every command shares
  (``--workers``, ``--subset``, ``--model``, ``-v``/``-q``/``--debug`` anywhere);
- :mod:`.model` decides which FLAME model a command uses (``--model``, ``ONFLAME_MODEL``, never silently);
- ``cmd_*`` modules hold the commands (their options, examples and code);
- :mod:`.runner` runs one command and turns every ending (errors, Ctrl-C, SIGTERM) into one line and an
  exit code: 0 success, 1 failure, 2 bad usage, 130 interrupted, 143 terminated.

This module imports nothing heavy: the executable (:func:`run`) first makes Ctrl-C and SIGTERM end the
process quietly (one line, exit 130 / 143) while numpy, torch and the commands are still being imported,
before any work has begun; :mod:`.runner` then takes over.
"""
from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    """Run one ``onflame`` command; returns its exit code (:func:`onflame.cli.runner.main`)."""
    from .runner import main as run_main

    return run_main(argv, owns_process)


def run() -> None:
    """The ``onflame`` executable (:func:`onflame.cli.runner.run`)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted_while_starting)
    from .runner import run as run_command

    run_command()


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM before the command has started: nothing to tidy, so one line and the exit code."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "onflame")
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    os.write(2, f"onflame: {command}: {how}\n".encode())
    os._exit(143 if signum == signal.SIGTERM else 130)


__all__ = ["main", "run"]
