"""The report's HTML pages, from Jinja2 templates (package data in ``templates/``; ``assets/`` holds the
style sheet and the gallery's sort/filter script)::

    index.html                            overview: counts per subset, worst cases, problems
    <subset>/index.html                   gallery: a card per subject, sortable and filterable
    <subset>/statistics.html              parameter distributions and outliers
    <subset>/subjects/<subject>.html      one subject: numbers, reasons, pictures, parameters, photos, files
    assets/report.css, assets/report.js

Every link is relative, so the folder opens from ``file://`` and can be moved or copied whole.
"""
from __future__ import annotations

import datetime as _dt
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset.layout import MicaRoot
from ..fileio import safe_name, write_bytes, write_text
from ..render import colormap
from . import charts, pictures
from .collect import VERDICTS, SubjectInfo, SubsetInfo
from .stats import SCALARS, SHAPE_SHOWN, SubsetStats, histogram

#: Numbers on the gallery's cards, sortable and filterable: key, label, short label, unit, factor from stored
#: to shown.
NUMBERS = (
    ("scan_to_mesh_median_mm", "scan → registration median", "median", "mm", 1.0),
    ("scan_to_mesh_p95_mm", "scan → registration p95", "p95", "mm", 1.0),
    ("coverage", "coverage", "coverage", "%", 100.0),
    ("landmark_median_mm", "landmark error median", "landmarks", "mm", 1.0),
    ("params_mean_mm", "registration ↔ FLAME(params) mean", "↔ params", "mm", 1.0),
    ("shape_distance", "shape distance (robust Mahalanobis)", "shape dist.", "", 1.0),
)
VERDICT_LABELS = {"ok": "ok", "suspect": "suspect", "failed": "failed", "unknown": "no build record"}
POSE_NAMES = ("global", "neck", "jaw", "left eye", "right eye")
WORST_SHOWN = 5
PROBLEMS_SHOWN = 200


def _env():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("onflame.report", "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    return env


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    a = abs(float(v))
    if a != 0 and (a < 10 ** -(digits - 1) or a >= 1e5):
        return f"{float(v):.{digits - 1}e}"
    return f"{float(v):.{digits}g}" if a >= 1 else f"{float(v):.{digits}f}".rstrip("0").rstrip(".")


def _shown(s: SubjectInfo, key: str, factor: float) -> float | None:
    v = s.numbers.get(key)
    return None if v is None or not math.isfinite(v) else float(v) * factor


def _badness(s: SubjectInfo) -> tuple:
    """Sort key of the worst cases: failed or with a problem, suspect, flagged by the statistics, then the
    largest distances."""
    rank = 3 if s.problems else {"failed": 3, "suspect": 2}.get(s.verdict, 1 if s.outliers else 0)
    return (-rank, -(s.numbers.get("scan_to_mesh_p95_mm") or 0.0), -(s.numbers.get("params_mean_mm") or 0.0), s.name)


def _why(s: SubjectInfo) -> str:
    lines = s.problems[:1] + (s.reasons if s.verdict in ("failed", "suspect") else []) + s.outliers
    return "; ".join(lines) or "largest distances of the subset"


class _Site:
    """Page writer: paths, the template environment, and the pages written (for pruning)."""

    def __init__(self, out: Path, mica: MicaRoot, infos: list[SubsetInfo], stats: dict[str, SubsetStats],
                 photos: dict[str, dict], run: dict):
        self.out, self.mica, self.infos, self.stats, self.photos, self.run = out, mica, infos, stats, photos, run
        self.env = _env()
        # the subject pages' colour bars: the same on every page
        ramp = colormap(np.linspace(0, 1, 11), 0, 1, pictures.CMAP)
        self.heat_bar = charts.color_bar(ramp, pictures.HEAT_MAX_MM, "mm")
        self.fit_bar = charts.color_bar(ramp, pictures.FIT_MAX_MM, "mm")
        self.written: set[Path] = set()
        self.folders = {}
        taken: set[str] = {"assets", "img"}
        for info in infos:
            slug = safe_name(info.name)
            while slug.lower() in taken:
                slug += "_"
            taken.add(slug.lower())
            self.folders[info.name] = slug
        self.generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")

    def page(self, rel: str, template: str, **context: Any) -> None:
        depth = rel.count("/")
        html = self.env.get_template(template).render(root="../" * depth, site=self, verdicts=VERDICTS,
                                                      verdict_labels=VERDICT_LABELS, numbers=NUMBERS, **context)
        path = self.out / rel
        write_text(path, html)
        self.written.add(path)

    def subject_href(self, s: SubjectInfo, from_root: bool = False) -> str:
        rel = f"subjects/{s.slug}.html"
        return f"{self.folders[s.subset]}/{rel}" if from_root else rel

    # --- the pages ---

    def assets(self) -> None:
        for name in ("report.css", "report.js"):
            data = resources.files("onflame.report").joinpath("assets", name).read_bytes()
            write_bytes(self.out / "assets" / name, data)
            self.written.add(self.out / "assets" / name)

    def overview(self) -> None:
        rows, worst, problems = [], [], []
        for info in self.infos:
            subjects = info.subjects
            outliers = sum(bool(s.outliers) for s in subjects)
            rows.append({"info": info, "folder": self.folders[info.name], "outliers": outliers,
                         "counts": {v: info.count(v) for v in VERDICTS},
                         "build": info.build_counts,
                         "actors": len({s.actor for s in subjects}),
                         "wall_s": None if info.summary is None else info.summary.get("wall_s"),
                         "built_together": 1 if info.summary is None else info.summary.get("built_together", 1),
                         "problems": len(info.problems) + sum(len(s.problems) for s in subjects)})
            ranked = sorted(subjects, key=_badness)[:WORST_SHOWN]
            worst.append({"info": info, "subjects": [(s, self.subject_href(s, True), _why(s)) for s in ranked]})
            lines = list(info.problems) + [p for s in subjects for p in s.problems]
            problems.append({"info": info, "lines": lines[:PROBLEMS_SHOWN], "more": max(0, len(lines) - PROBLEMS_SHOWN)})
        totals = {v: sum(r["counts"][v] for r in rows) for v in VERDICTS}
        root_problems = [str(p) for p in self.mica.problems]
        self.page("index.html", "index.html", rows=rows, worst=worst, problems=problems, totals=totals,
                  root_problems=root_problems, mica=self.mica)

    def gallery(self, info: SubsetInfo) -> None:
        folder = self.folders[info.name]
        cards = []
        for s in info.subjects:
            cards.append({"s": s, "href": self.subject_href(s), "thumb": s.images.get("thumb"),
                          "values": {k: _shown(s, k, f) for k, _, _, _, f in NUMBERS}})
        counts = {v: info.count(v) for v in VERDICTS}
        self.page(f"{folder}/index.html", "gallery.html", info=info, cards=cards, counts=counts,
                  outliers=sum(bool(s.outliers or s.problems) for s in info.subjects))

    def subject(self, info: SubsetInfo, i: int) -> None:
        s = info.subjects[i]
        folder = self.folders[info.name]
        prev_s = info.subjects[i - 1] if i > 0 else None
        next_s = info.subjects[i + 1] if i + 1 < len(info.subjects) else None
        report_numbers = [(k, v) for k, v in (s.report or {}).items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)]
        params = None
        if s.params is not None:
            p = s.params
            pose = np.asarray(p.pose, dtype=np.float64).reshape(5, 3)
            params = {
                "shape_chart": charts.bar_chart(p.shape, [f"shape {i}" for i in range(len(p.shape))], bar_width=2.0,
                                                title="shape coefficients"),
                "expression_chart": charts.bar_chart(p.expression, [f"expression {i}" for i in range(len(p.expression))],
                                                     bar_width=5.0, title="expression coefficients"),
                "pose_chart": charts.bar_chart(np.rad2deg(pose.ravel()),
                                               [f"{POSE_NAMES[j // 3]} {'xyz'[j % 3]} (°)" for j in range(15)],
                                               bar_width=14.0, title="pose (degrees)"),
                "pose": [(POSE_NAMES[j], np.rad2deg(pose[j])) for j in range(5)],
                "trans_mm": np.asarray(p.trans, dtype=np.float64) * 1000.0,
                "shape": p.shape, "expression": p.expression,
                "extras": sorted(k for k in p.extras),
            }
        photos = [(ph, self.photos.get(info.name, {}).get((s.name, ph.name), {})) for ph in s.photos]
        files = [("parameters", s.params_rel), ("registration", s.registration_rel),
                 ("rejected registration", s.rejected_rel), ("build report", s.report_rel)]
        files = [(k, info.subset.label(v)) for k, v in files if v is not None]
        if s.scan:
            files.append(("scan", s.scan))
        if s.report and s.report.get("landmarks_file"):
            files.append(("landmarks", s.report["landmarks_file"]))
        self.page(f"{folder}/{self.subject_href(s)}", "subject.html", info=info, s=s, params=params,
                  report_numbers=report_numbers, photos=photos, files=files, folder=folder,
                  prev=None if prev_s is None else self.subject_href(prev_s).split("/")[-1],
                  next=None if next_s is None else self.subject_href(next_s).split("/")[-1],
                  heat_bar=self.heat_bar, fit_bar=self.fit_bar)

    def statistics(self, info: SubsetInfo) -> None:
        st = self.stats[info.name]
        by_name = {s.name: s for s in info.subjects}
        href = {n: self.subject_href(by_name[n]) for n in st.names}
        flagged = [n in st.outliers for n in st.names]
        shape_flag = [any(r.startswith("shape") for r in st.outliers.get(n, [])) for n in st.names]
        shape_charts = []
        for j in range(min(SHAPE_SHOWN, st.shape.shape[1] if st.shape.ndim == 2 else 0)):
            col = st.shape[:, j]
            counts, edges = histogram(col)
            marks = [(float(col[i]), n, href[n]) for i, n in enumerate(st.names) if shape_flag[i]]
            shape_charts.append((f"shape {j}", charts.histogram_chart(counts, edges, marks)))
        scalar_charts = []
        for key, values in st.scalars.items():
            label, unit, _ = SCALARS[key]
            counts, edges = histogram(values)
            marks = [(float(values[i]), n, href[n]) for i, n in enumerate(st.names)
                     if any(r.startswith(label) for r in st.outliers.get(n, [])) and math.isfinite(values[i])]
            scalar_charts.append((label, charts.histogram_chart(counts, edges, marks, unit=unit)))
        distance_chart = None
        if st.shape_distance is not None:
            counts, edges = histogram(st.shape_distance)
            marks = [(float(st.shape_distance[i]), n, href[n]) for i, n in enumerate(st.names) if shape_flag[i]]
            distance_chart = charts.histogram_chart(counts, edges, marks)
        scatter = None
        if st.shape.ndim == 2 and st.shape.shape[1] >= 2 and len(st.names) >= 2:
            scatter = charts.scatter_chart(st.shape[:, 0], st.shape[:, 1], st.names, [href[n] for n in st.names],
                                           flagged, "shape 0", "shape 1")
        outliers = [(by_name[n], href[n], reasons) for n, reasons in sorted(st.outliers.items())]
        self.page(f"{self.folders[info.name]}/statistics.html", "statistics.html", info=info, st=st,
                  shape_charts=shape_charts, scalar_charts=scalar_charts, distance_chart=distance_chart,
                  scatter=scatter, outliers=outliers,
                  limit=None if st.shape_limit is None else float(np.median(st.shape_limit)))


def write_pages(out: Path, mica: MicaRoot, infos: list[SubsetInfo], stats: dict[str, SubsetStats],
                photos: dict[str, dict], run: dict) -> set[Path]:
    """Write every page and the assets; returns the pages written.

    Args:
        out: the site folder.
        mica: the opened root (its path and the zips it could not open).
        infos: the subsets, with each subject's pictures, numbers and outliers filled in.
        stats: subset name -> its statistics.
        photos: subset name -> ``{(subject name, photo name): {"crop": rel, "blob": rel}}``.
        run: ``model`` (label or None), ``heatmaps``, ``drawn``, ``cached``, ``seconds``.
    """
    site = _Site(out, mica, infos, stats, photos, run)
    site.assets()
    # pages before the pages that link to them, the overview last: a run cut short (a full disk) leaves
    # no index.html, or the last complete run's, linking to a page that was never written
    for info in infos:
        for i in range(len(info.subjects)):
            site.subject(info, i)
        site.statistics(info)
        site.gallery(info)
    site.overview()
    return site.written
