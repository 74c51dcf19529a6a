"""Comparing two MICA image lists (``onflame image-paths diff A.npy B.npy``)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..dataset.image_paths import read_image_paths

ImageList = Mapping[str, tuple[list[str], str]]


def diff_image_paths(a: str | os.PathLike | ImageList, b: str | os.PathLike | ImageList) -> dict[str, Any]:
    """What differs between image lists ``a`` and ``b`` (paths, or mappings as ``read_image_paths`` returns).

    Returns::

        {"same": bool,
         "actors_only_in_a": [...], "actors_only_in_b": [...],              # sorted
         "photos_only_in_a": {actor: [...]}, "photos_only_in_b": {actor: [...]},  # actors in both
         "npz_differs": {actor: [npz_a, npz_b]},
         "counts": {"actors_a", "actors_b", "actors_common", "photos_a", "photos_b", "photos_common"}}

    Photo order within an actor does not count as a difference (MICA samples from the list).
    """
    la = a if isinstance(a, Mapping) else read_image_paths(a)
    lb = b if isinstance(b, Mapping) else read_image_paths(b)
    common = sorted(set(la) & set(lb))
    only_a: dict[str, list[str]] = {}
    only_b: dict[str, list[str]] = {}
    npz_differs: dict[str, list[str]] = {}
    photos_common = 0
    for actor in common:
        (ia, na), (ib, nb) = la[actor], lb[actor]
        sa, sb = set(ia), set(ib)
        photos_common += len(sa & sb)
        if sa - sb:
            only_a[actor] = sorted(sa - sb)
        if sb - sa:
            only_b[actor] = sorted(sb - sa)
        if na != nb:
            npz_differs[actor] = [na, nb]
    actors_a, actors_b = sorted(set(la) - set(lb)), sorted(set(lb) - set(la))
    result = {
        "actors_only_in_a": actors_a, "actors_only_in_b": actors_b,
        "photos_only_in_a": only_a, "photos_only_in_b": only_b, "npz_differs": npz_differs,
        "counts": {
            "actors_a": len(la), "actors_b": len(lb), "actors_common": len(common),
            "photos_a": sum(len(set(v[0])) for v in la.values()), "photos_b": sum(len(set(v[0])) for v in lb.values()),
            "photos_common": photos_common,
        },
    }
    result["same"] = not (actors_a or actors_b or only_a or only_b or npz_differs)
    return {"same": result.pop("same"), **result}


def format_diff(diff: Mapping[str, Any], limit: int = 20) -> str:
    """A short human-readable summary of :func:`diff_image_paths`' result (at most ``limit`` names per block)."""
    c = diff["counts"]
    lines = [f"actors: {c['actors_a']} in A, {c['actors_b']} in B, {c['actors_common']} in both",
             f"photos: {c['photos_a']} in A, {c['photos_b']} in B, {c['photos_common']} in both (common actors)"]
    if diff["same"]:
        lines.append("the lists are the same")
        return "\n".join(lines)
    for key, label in (("actors_only_in_a", "actors only in A"), ("actors_only_in_b", "actors only in B")):
        if diff[key]:
            names = diff[key]
            more = " ..." if len(names) > limit else ""
            lines.append(f"{label} ({len(names)}): " + ", ".join(names[:limit]) + more)
    for key, label in (("photos_only_in_a", "only in A"), ("photos_only_in_b", "only in B")):
        for actor, photos in list(diff[key].items())[:limit]:
            more = " ..." if len(photos) > 5 else ""
            lines.append(f"{actor}: {len(photos)} photos {label}: " + ", ".join(photos[:5]) + more)
    for actor, (na, nb) in list(diff["npz_differs"].items())[:limit]:
        lines.append(f"{actor}: npz {na} in A, {nb} in B")
    return "\n".join(lines)
