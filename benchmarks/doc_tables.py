"""Benchmark tables in ``docs/benchmarks.md``: each script owns one section and rewrites it.

A section is the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a script run with
``--write-docs`` replaces it with the command it was run as and the table it printed, so every number in
the docs is the output of the script named above it.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def command_line() -> str:
    """The command this script was run as, relative to the repository root (``python benchmarks/x.py ...``)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(DOC.parents[1])
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, [a for a in sys.argv[1:] if a != "--write-docs"])])


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace section ``name`` of ``doc`` with ``body`` (markdown), headed by the command line.

    Raises:
        KeyError: the document has no such section (add its two marker lines first).
    """
    text = doc.read_text(encoding="utf-8")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise KeyError(f"{doc}: no section {name!r} (markers {start} ... {end})")
    block = f"{start}\n`{command_line()}`\n\n{body.strip()}\n{end}"
    text = pattern.sub(lambda _: block, text)
    fd, tmp = tempfile.mkstemp(dir=doc.parent, prefix=f".{doc.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)
    os.replace(tmp, doc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table from a header and rows of cells (cells printed with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
