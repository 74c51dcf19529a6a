"""Length units a scan, a landmark file or a prediction may come in, as metres per unit.

onflame works in metres inside, like FLAME; every conversion of a named unit goes through this table.
"""
from __future__ import annotations

#: Metres per unit.
METRES_PER_UNIT = {"m": 1.0, "cm": 0.01, "mm": 0.001}


def mm_per_unit(unit: str) -> float:
    """Millimetres per ``unit`` (``"m"``, ``"cm"`` or ``"mm"``); KeyError for any other."""
    return METRES_PER_UNIT[unit] * 1000.0
