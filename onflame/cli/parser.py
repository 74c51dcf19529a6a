"""The ``onflame`` command line's parser: the commands, each with its description, options and examples."""
from __future__ import annotations

import argparse

from .. import __version__
from . import cmd_build, cmd_data, cmd_evaluate, cmd_register, cmd_report
from .options import Parser, global_options

DESCRIPTION = """Put 3D face scans on FLAME; build, check and serve the MICA dataset.

Every command ends in its result or in one line 'onflame: <file>: <problem>' on stderr (one per failed
item of a batch, which goes on with the next). -v, -q and --debug work before or after the command."""

EPILOG = """a first run:
  onflame demo                                    everything, on onflame's procedural head
  onflame register scan.obj --model FLAME2020/ --out regs
  onflame build --source BU3DFE --raw /data/BU-3DFE --out MICA --model FLAME2020/
  onflame validate MICA && onflame report MICA --out MICA-report

The model: --model FILE|FOLDER|procedural, or ONFLAME_MODEL for every command.
exit codes: 0 success; 1 failure (bad input, a failed item: the batch still went through every item);
2 bad usage (refused before any work); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
'onflame COMMAND --help' shows a command's options, examples and exit codes."""

#: The modules that define the commands, in the order ``--help`` lists them.
COMMAND_MODULES = (cmd_data, cmd_register, cmd_build, cmd_report, cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; ``parse_args`` gives ``run`` (the command's function) and its options."""
    ap = Parser(prog="onflame", description=DESCRIPTION, epilog=EPILOG)
    ap.add_argument("--version", action="version", version=f"onflame {__version__}")
    global_options(ap, in_subcommand=False)
    in_command = Parser(add_help=False)
    global_options(in_command, in_subcommand=True)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_parsers(sub, [in_command])
    return ap
