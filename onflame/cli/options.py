"""Option types and option groups shared by the commands: every value is checked while the command line
is parsed, so bad usage ends in one line and exit 2 before any work."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import one_line
from .common import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """argparse with bad usage reported in one line (``onflame: <problem> (see ... --help)``), exit code 2,
    and descriptions and examples printed as written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"onflame: {one_line(message)} (see '{self.prog} --help')\n")


def global_options(parser: argparse.ArgumentParser, in_subcommand: bool) -> None:
    """``-v``, ``-q``, ``--debug``: accepted before the command and after it (in a sub-command they only
    set what they name, so one given before the command is kept)."""
    default = argparse.SUPPRESS if in_subcommand else False
    group = parser.add_argument_group("options of every command")
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="more detail: each item's numbers and timings, and log messages")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="no progress and no notes on stderr: only results and errors")
    group.add_argument("--debug", action="store_true", default=default,
                       help="show the traceback of an unexpected error (and debug log messages)")


def workers(text: str) -> int:
    """``--workers``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def add_workers(parser: argparse.ArgumentParser, what: str) -> None:
    """The one ``--workers`` option: default None, which every command reads as all available cores."""
    parser.add_argument("--workers", type=workers, metavar="N",
                        help=f"{what} (default: every CPU core this process may use; at least 1)")


def score(text: str) -> float:
    """``--min-score``: a detection score in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be a score from 0 to 1, got {text!r}")
    return value


def subset(text: str) -> str:
    """``prepare --subset``: one of MICA's subsets, any case, as its canonical name."""
    from ..dataset.names import SUBSETS

    if text.upper() not in SUBSETS:
        raise argparse.ArgumentTypeError(f"unknown subset {text!r} (MICA's are {', '.join(SUBSETS)})")
    return text.upper()


def add_subsets(parser: argparse.ArgumentParser) -> None:
    """The one ``--subset`` syntax of commands that read several subsets: names separated by spaces or
    commas (``--subset FRGC LYHM`` or ``--subset FRGC,LYHM``), checked against the root before any work."""
    parser.add_argument("--subset", nargs="+", action="extend", metavar="NAME",
                        help="only these subsets of the root (names separated by spaces or commas; default: all)")


def subset_list(values: list[str] | None) -> list[str] | None:
    """``--subset`` values as one list of names (commas split)."""
    if not values:
        return None
    return [name for value in values for name in value.split(",") if name]


def check_subsets(names: list[str] | None, available: list[str], root: object) -> list[str] | None:
    """``names`` as the root spells them; :class:`UsageError` naming the first that the root does not have."""
    from ..errors import UsageError

    if names is None:
        return None
    by_upper = {n.upper().replace("-", ""): n for n in available}
    out = []
    for name in names:
        key = by_upper.get(name.upper().replace("-", ""))
        if key is None:
            raise UsageError(root, f"--subset {name}: no such subset here (it has {', '.join(available) or 'none'})")
        out.append(key)
    return list(dict.fromkeys(out))


def source(text: str) -> str:
    """``build --source``: a known source dataset, as its MICA subset name."""
    from ..sources import get_source

    try:
        return get_source(text).name
    except KeyError as exc:
        raise argparse.ArgumentTypeError(str(exc.args[0])) from None


def landmark_template(text: str) -> str:
    """``build --landmarks``: auto, none, or a file-name template with known fields only."""
    from ..dataset.build_task import check_landmark_option
    from ..errors import UsageError

    try:
        return check_landmark_option(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def landmark_convention(text: str) -> str:
    """``--landmark-convention``: auto, a family (mica, flame) or a named convention (mica51, flame68, ...)."""
    from ..flame.embedding import CONVENTIONS, convention_family

    known = ("auto", *dict.fromkeys(convention_family(c) for c in CONVENTIONS), *CONVENTIONS)
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown landmark convention {text!r} (use {', '.join(known)})")
    return text


def detector(text: str) -> str:
    """``prepare --detector``: a registered face detector (or auto)."""
    from ..detection import available_detectors

    names = available_detectors()
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown detector {text!r} (use {', '.join(names)})")
    return text


def add_model(parser: argparse.ArgumentParser, needed: bool, what: str = "") -> None:
    """``--model`` (a file, a folder or ``procedural``), ``--embedding`` and ``--masks``."""
    from .model import MODEL_VARIABLE

    default = (f"default: ${MODEL_VARIABLE}; without either the command stops" if needed else
               f"default: ${MODEL_VARIABLE}" + (f", else {what}" if what else ""))
    parser.add_argument("--model", metavar="FILE|FOLDER|procedural",
                        help=f"FLAME model: generic_model.pkl / flame2023.pkl / an onflame .npz, the folder "
                             f"holding it, or 'procedural' for onflame's procedural head ({default})")
    parser.add_argument("--embedding", type=Path, nargs="+", metavar="FILE",
                        help="landmark embedding file(s) (default: those beside the model)")
    parser.add_argument("--masks", type=Path, metavar="FILE", help="FLAME_masks.pkl (default: the one beside the model)")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
