"""What one subset build did: :class:`BuildReport` (``build/summary.json`` and ``build/summary.txt``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Order of the statuses in summaries.
STATUSES = ("registered", "suspect", "failed", "pending")
#: Steps shown in the summary's timing line (seconds, from :attr:`Registration.timings` and the task's own:
#: ``write``, ``task`` wall seconds, ``cpu`` the worker's CPU seconds).
TIMING_STEPS = ("read", "landmarks", "rigid", "fit", "refine", "refit", "write", "task", "cpu")
#: Exit codes of :attr:`BuildReport.exit_code`.
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 130, 143


@dataclass
class BuildReport:
    """What one subset build did.

    Attributes:
        subset: MICA subset name; ``source_title`` the dataset's usual name.
        raw: the raw release folder; ``out``: the subset folder written.
        executor, workers: where the tasks ran; ``mode``: how they reached their files (``"in place"``,
            or ``"shipped"``: through Ray's object store, written by the build's own process).
        records: one per scan found, sorted by name: the manifest record plus ``cached`` (True: up to date
            from an earlier run, not built now). Scans not run because the build stopped early have
            status ``pending``.
        problems: one line per input file that was not built as asked (failed scans, skipped duplicates).
        warnings: other notes (missing textures, an unreadable manifest, ...).
        interrupted: the build was stopped by Ctrl-C; ``terminated``: by SIGTERM.
        stopped: why the build stopped starting scans before the end (a full disk), or None.
        wall_s: seconds the build took (the whole build's: subsets built together share one pool).
        built_together: how many subsets that build ran at once; with more than one, ``wall_s`` is not
            this subset's own time, and :meth:`task_s` (its scans' worker seconds) is.
    """

    subset: str
    source_title: str
    raw: str
    out: str
    executor: str
    workers: int
    mode: str = "in place"
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    terminated: bool = False
    stopped: str | None = None
    wall_s: float = 0.0
    built_together: int = 1

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def built(self) -> int:
        """Scans registered (or failed) by this run, not taken from an earlier one."""
        return sum(not r.get("cached") and r["status"] != "pending" for r in self.records)

    @property
    def exit_code(self) -> int:
        """0: every scan registered (suspects included); 1: some failed, were skipped or not reached (a full
        disk); 130: interrupted (Ctrl-C); 143: terminated (SIGTERM)."""
        if self.terminated:
            return EXIT_TERMINATED
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.problems or self.stopped else EXIT_OK

    def task_s(self) -> float:
        """Worker wall seconds of the scans this run built (their tasks' ``task`` timings summed)."""
        return float(sum(r.get("timings_s", {}).get("task", 0.0) for r in self.records if not r.get("cached")))

    def scans_per_s(self) -> float | None:
        """Scans built per wall second; None where nothing was timed or other subsets shared the build."""
        return self.built / self.wall_s if self.wall_s > 0 and self.built_together == 1 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, scans per second, mean step timings, records, problems and warnings."""
        return {
            "subset": self.subset, "source": self.source_title, "raw": self.raw, "out": self.out,
            "executor": self.executor, "workers": self.workers, "mode": self.mode,
            "interrupted": self.interrupted, "terminated": self.terminated, "stopped": self.stopped,
            "exit_code": self.exit_code, "scans": len(self.records), "built_now": self.built,
            **{s: self.count(s) for s in STATUSES},
            "wall_s": round(self.wall_s, 3), "built_together": self.built_together,
            "task_s": round(self.task_s(), 3),
            "scans_per_s": None if self.scans_per_s() is None else round(self.scans_per_s(), 4),
            "mean_timings_s": self.mean_timings(),
            "records": self.records, "problems": self.problems, "warnings": self.warnings,
        }

    def mean_timings(self) -> dict[str, float]:
        """Mean seconds per step over the scans built by this run."""
        rows = [r["timings_s"] for r in self.records if not r.get("cached") and r.get("timings_s")]
        out = {}
        for step in TIMING_STEPS:
            vals = [t[step] for t in rows if step in t]
            if vals:
                out[step] = round(float(np.mean(vals)), 3)
        return out

    def format_table(self) -> str:
        """One row per scan (name, status, verdict, seconds, landmark source, reasons), totals, problems."""
        head = ["scan", "status", "verdict", "time s", "landmarks", "reasons"]
        rows = [self._row(r) for r in self.records]
        widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head) - 1)]
        fmt = lambda x: "  ".join([c.ljust(w) for c, w in zip(x[:-1], widths)] + [x[-1]]).rstrip()  # noqa: E731
        mode = "" if self.mode == "in place" else f", inputs {self.mode}"
        lines = [f"build {self.subset} ({self.source_title}) from {self.raw} -> {self.out} "
                 f"[{self.executor}, {self.workers} worker(s){mode}]", fmt(head), "  ".join("-" * w for w in widths)]
        lines += [fmt(x) for x in rows]
        lines.append("")
        counts = ", ".join(f"{s} {self.count(s)}" for s in STATUSES if s != "pending" or self.count(s))
        rate = f"; {self.scans_per_s():.3f} scans/s" if self.scans_per_s() is not None and self.built else ""
        took = (f"in {self.wall_s:.1f} s{rate}" if self.built_together == 1 else
                f"in {self.task_s():.1f} s of worker time (the build of {self.built_together} subsets together took "
                f"{self.wall_s:.1f} s)")
        lines.append(f"{counts} of {len(self.records)} scans ({self.built} built now, "
                     f"{len(self.records) - self.built - self.count('pending')} up to date) {took}")
        if self.mean_timings():
            lines.append("mean s per scan built: " + ", ".join(f"{k} {v:.2f}" for k, v in self.mean_timings().items()))
        lines += [f"WARNING {w}" for w in self.warnings]
        lines += [f"ERROR   {p}" for p in self.problems]
        if self.stopped:
            lines.append(f"STOPPED: {self.stopped}")
        if self.interrupted or self.terminated:
            lines.append(f"{'TERMINATED' if self.terminated else 'INTERRUPTED'}: run the same command again to finish")
        return "\n".join(lines)

    @staticmethod
    def _row(r: dict) -> list[str]:
        t = r.get("timings_s", {}).get("task")
        lmk = r.get("landmarks") or "-"
        lmk = "file" if lmk not in ("-", "given", "detected", "geometry") else lmk
        reasons = "; ".join(r.get("reasons") or []) if r["status"] != "failed" else (r.get("error") or "")
        return [r["name"], r["status"] + (" (up to date)" if r.get("cached") else ""), r.get("verdict") or "-",
                "-" if t is None else f"{t:.2f}", lmk, reasons]
