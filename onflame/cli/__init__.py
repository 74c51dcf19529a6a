"""The ``onflame`` command line.

Each command is a thin wrapper: it parses arguments, calls the library function that does the work, and
prints a table (or JSON with ``--json``). The package is split by job:

- :mod:`.parser` assembles the commands; :mod:`.options` holds the option types every command shares
  (``--workers``, ``--subset``, ``--model``, ``-v``/``-q``/``--debug`` anywhere);
- :mod:`.model` decides which FLAME model a command uses (``--model``, ``ONFLAME_MODEL``, never silently);
- ``cmd_*`` modules hold the commands (their options, examples and code);
- :mod:`.runner` runs one command and turns every ending (errors, Ctrl-C, SIGTERM) into one line and an
  exit code: 0 success, 1 failure, 2 bad usage, 130 interrupted, 143 terminated.
"""
from .runner import main, run

__all__ = ["main", "run"]
