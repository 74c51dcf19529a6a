"""Every benchmark script still imports and parses its options: a rename in onflame that a script uses
fails here rather than when someone next runs the benchmark (they take minutes, so no test runs them)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "doc_tables.py")


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 8, [p.name for p in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_script_imports_and_shows_its_help(script):
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                         cwd=script.parents[1])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout
