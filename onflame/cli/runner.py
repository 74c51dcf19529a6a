"""Running one command: parse, set up logging, run it, and turn every way it can end into an exit code
and at most one line on stderr per problem.

- Bad usage (argparse's errors, :class:`UsageError`): one line, exit 2, before any work.
- :class:`OnflameError` (bad input): one line naming the file, exit 1.
- Ctrl-C (once or twice) and SIGTERM: one line ``onflame: <command>: interrupted`` (or ``terminated``),
  exit 130 (143); once a command has been interrupted, further Ctrl-C and SIGTERM are ignored while it
  tidies up (outputs are written to temporaries and renamed, so nothing half-written is left).
- Any other exception: one line with a hint to rerun with ``--debug``, which shows its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import warnings
from typing import Iterator

from ..errors import OnflameError, UsageError, one_line
from . import _command
from .common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, say_error,
                     say_exception)
from .parser import build_parser

#: Commands that call :func:`.common.start_up_done` once their imports and model are loaded.
QUICK_START = ("register", "fit-mesh")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is. A KeyboardInterrupt, so that everything that stops cleanly on
    Ctrl-C (the worker pools let their running items finish, temporaries are removed) does so on SIGTERM
    too; the exit code says which it was."""


#: Set once SIGTERM arrived: a command that ends interrupted (130) then ends with 143.
_TERMINATED = threading.Event()


def _raise_terminated(signum: int, frame: object) -> None:
    _TERMINATED.set()
    raise Terminated()


def _interrupted_code() -> int:
    return EXIT_TERMINATED if _TERMINATED.is_set() else EXIT_INTERRUPTED


@contextlib.contextmanager
def _signals(restore: bool = True) -> Iterator[None]:
    """Inside the block Ctrl-C raises KeyboardInterrupt and SIGTERM :class:`Terminated`; with ``restore``
    the previous handlers come back after it (the executable keeps them: a signal arriving while it
    exits must not find Python's defaults again). Only in the main thread (Python delivers signals there
    alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _TERMINATED.clear()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if restore:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _ignore_signals() -> None:
    """After an interrupt: a second Ctrl-C or SIGTERM must not break the tidying up with a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _main_input(args: argparse.Namespace) -> object:
    """The command's main input, named in the line of an error that does not name its own file."""
    value = getattr(args, getattr(args, "main_input", ""), None)
    return value[0] if isinstance(value, list) and len(value) == 1 else value


#: Loggers whose warnings are notes about the command's progress (an interrupt being handled), not about a file.
_NOTE_LOGGERS = ("onflame.workers",)


class _LineFormatter(logging.Formatter):
    """onflame's warnings as the one line every problem gets (``onflame: <file>: <problem>``: their
    messages start with the file); notes as they are; other records (-v, --debug) with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = one_line(record.getMessage())
        ours = record.name == "onflame" or record.name.startswith("onflame.")
        if ours and record.levelno >= logging.WARNING:
            return text if record.name in _NOTE_LOGGERS else f"onflame: {text}"
        return f"{record.levelname} {record.name}: {text}" if not ours else f"{record.levelname} {text}"


def _set_up_logging(args: argparse.Namespace) -> None:
    level = (logging.DEBUG if args.debug else logging.ERROR if args.quiet else logging.INFO if args.verbose
             else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    if not (args.verbose or args.debug):  # a library's log record is no line of onflame's; -v and --debug show them
        handler.addFilter(lambda r: r.name == "onflame" or r.name.startswith("onflame."))
    logging.basicConfig(level=level, handlers=[handler])
    if not args.debug:  # a library's warning is no line of onflame's; -v and --debug show them
        warnings.simplefilter("ignore" if not args.verbose else "default")


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    """Run one ``onflame`` command; returns its exit code.

    ``owns_process``: called as the executable (:func:`run`), so the command may tune this process's
    garbage collector and its signal handlers stay in place until the process ends.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad usage (2, one line already printed), --help or --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        say_error(None, "interrupted")
        return EXIT_INTERRUPTED
    if args.verbose and args.quiet:
        say_error(None, "give -v or -q, not both (see 'onflame --help')")
        return EXIT_USAGE
    if owns_process and not (args.verbose or args.debug):
        # worker processes (and multiprocessing's resource tracker) start with this environment: their
        # libraries' warnings stay off the command's stderr too
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
    args.owns_process = owns_process and args.command in QUICK_START
    if args.owns_process:
        gc.disable()  # start-up's imports allocate ~200k objects that live as long as the process
    with warnings.catch_warnings(), _signals(restore=not owns_process):
        _set_up_logging(args)
        try:
            return _run(args)
        finally:
            gc.enable()


def _run(args: argparse.Namespace) -> int:
    try:
        try:
            code = args.run(args)
            if code == EXIT_INTERRUPTED:  # the command stopped on an interrupt and said so
                _ignore_signals()
                return _interrupted_code()
            return code
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Terminated)
            _ignore_signals()
            say_error(None, f"{args.command}: {'terminated' if _TERMINATED.is_set() else 'interrupted'}")
            return _interrupted_code()
        except UsageError as exc:
            say_exception(exc, None)
            return EXIT_USAGE
        except OnflameError as exc:
            say_exception(exc, None)
            return EXIT_FAILED
        except BrokenPipeError:  # output piped into head/less that closed early: not an error
            sys.stderr.close()
            return EXIT_OK
        except Exception as exc:  # noqa: BLE001  the last net: one line, never a traceback unless asked for
            if args.debug:
                raise
            say_exception(exc, _main_input(args) or args.command)
            return EXIT_FAILED
    except KeyboardInterrupt:  # a second one, while the first was being reported
        _ignore_signals()
        return _interrupted_code()


def run() -> None:
    """The ``onflame`` executable: :func:`main`, then the exit.

    Start-up and exit cost a one-scan ``onflame register`` about 0.6 s beyond its imports: the garbage
    collector walking the ~200k objects that importing torch makes (several full passes while they
    are made, one more during the registration; :func:`main` holds it until the command's start-up is
    done, then freezes what start-up made), and tearing the interpreter down (modules and tensors
    freed one by one). Where the command left nothing to tidy (no worker process, no Python thread, no
    Ray), its outputs are already renamed into place, so the process flushes its streams and leaves:
    after torch was loaded, after an interrupt, and always after :data:`QUICK_START`'s commands.
    """
    try:
        code = main(owns_process=True)
    except KeyboardInterrupt:  # between the command's end and here
        _ignore_signals()
        code = _interrupted_code()
    interrupted = code in (EXIT_INTERRUPTED, EXIT_TERMINATED)
    if interrupted:
        _ignore_signals()
        _end_idle_workers()
    quick = _command() in QUICK_START  # (numpy's and scipy's teardown: ~0.02 s of a one-scan register)
    if ("torch" in sys.modules or interrupted or quick) and _nothing_left_to_tidy(threads=not interrupted):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed (a pipe's reader left): nothing more to say
                pass
        os._exit(code)
    sys.exit(code)


def _end_idle_workers() -> None:
    """After an interrupt, worker processes still alive have nothing left to do (the pools handed over the
    tasks that were running; a worker whose start the interrupt cut short waits for work forever), so
    they are ended rather than waited for at exit."""
    if "multiprocessing" not in sys.modules:
        return
    import multiprocessing

    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            child.kill()
            child.join(5)


def _nothing_left_to_tidy(threads: bool = True) -> bool:
    """No worker process (and, with ``threads``, no other thread) and no Ray: exiting at once loses nothing.
    After an interrupt the pools' helper threads only wait for workers that are gone."""
    children = "multiprocessing" in sys.modules and sys.modules["multiprocessing"].active_children()
    return not children and (not threads or threading.active_count() == 1) and "ray" not in sys.modules
