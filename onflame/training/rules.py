"""Per-source photo rules: which photos of a subset go into MICA's training inputs.

One table, :data:`PHOTO_RULES`, keyed by MICA's subset name; the facts come from MICA's own dataset
preparation. Per-source modules import it; :func:`photo_rules` gives the rules for any subset name
(unknown subsets get :data:`DEFAULT_RULES`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class PhotoRules:
    """How to pick and keep a subset's photos.

    Attributes:
        min_score: detections scoring below this are skipped (MICA: 0 unless a source sets one).
        exclude: photos whose path (relative to the photo folder) contains any of these strings are left out.
        sample_per_actor: keep at most this many photos per actor, drawn without replacement with ``seed``
            (``None``: keep all).
        seed: seed of that draw; the draw for an actor depends only on the seed, the actor name and its
            sorted photo list, so re-runs pick the same photos.
        extensions: photo file suffixes taken (lower case).
        actor_from: ``"folder"``: photos live under ``<photos>/<actor>/...``; ``"filename"``: one flat
            folder, the actor is the file name up to the first ``_``, upper-cased (Stirling's ``F1001_003.jpg``).
        crop_suffix: file suffix of the 224×224 crop; MICA's lists name ``.png`` crops for the sources whose
            photos were PNG.
    """

    min_score: float = 0.0
    exclude: tuple[str, ...] = ()
    sample_per_actor: int | None = None
    seed: int = 0
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
    actor_from: str = "folder"
    crop_suffix: str = ".jpg"

    def with_overrides(self, **changes: Any) -> PhotoRules:
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


DEFAULT_RULES = PhotoRules()

#: MICA's per-source photo rules.
PHOTO_RULES: dict[str, PhotoRules] = {
    "BP4D": PhotoRules(sample_per_actor=100, extensions=(".jpg",)),
    "BU3DFE": PhotoRules(extensions=(".jpg",)),
    "D3DFACS": PhotoRules(extensions=(".jpg",)),
    "FACEWAREHOUSE": PhotoRules(extensions=(".png",), crop_suffix=".png"),
    "FLORENCE": PhotoRules(min_score=0.85, exclude=("PTZ-Outdoor",), sample_per_actor=1000, extensions=(".jpg",)),
    "FRGC": PhotoRules(exclude=("Spring2003range",), extensions=(".jpg",)),
    "LYHM": PhotoRules(extensions=(".png",), crop_suffix=".png"),
    "STIRLING": PhotoRules(min_score=0.75, actor_from="filename"),
}

#: ArcFace's 5-point template for the 112×112 crop (pixels): eye centres, nose tip, mouth corners.
ARCFACE_TEMPLATE_112 = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041),
)


def photo_rules(subset: str) -> PhotoRules:
    """The rules for ``subset`` (case-insensitive), or :data:`DEFAULT_RULES`."""
    return PHOTO_RULES.get(subset.upper(), DEFAULT_RULES)
