"""``onflame report``: a static, browsable quality report of a MICA root (a site in one folder).

>>> from onflame.report import write_report
>>> write_report("MICA", "MICA-report", subsets=["FRGC"]).index     # open it in a browser, no server needed

Modules: :mod:`.collect` (what the dataset's files say), :mod:`.pictures` (renders of each subject),
:mod:`.cache` (content keys: an unchanged root draws nothing again), :mod:`.stats` (distributions and
outliers), :mod:`.charts` (inline SVG), :mod:`.pages` (HTML from the templates), :mod:`.site` (all of it).
"""
from .site import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
