"""MICA's training inputs: photo rules, ArcFace alignment, ``prepare``, image-list diffs and the training Dataset.

>>> from onflame.training import prepare_subset, MicaDataset, mix_subsets
>>> report = prepare_subset("MICA", "FLORENCE", "raw/florence_photos", workers=2)
>>> print(report.format_table())                       # photos in / aligned / skipped by reason, K range
>>> ds = MicaDataset("MICA", "FLORENCE", K=4)           # ds[0]["image"]: (4, 3, 224, 224) in [0, 1]

``rules``, ``align``, ``photos`` and ``lists`` need only numpy and Pillow; ``dataset`` imports torch, so
its names are loaded on first use.
"""
from .align import AlignedFace, align_face, arcface_blob, arcface_template, similarity_transform, warp_crop
from .lists import diff_image_paths, format_diff
from .photos import read_photo, select_photos
from .prepare import PhotoRecord, PrepareReport, prepare_subset
from .rules import ARCFACE_TEMPLATE_112, DEFAULT_RULES, PHOTO_RULES, PhotoRules, photo_rules

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DEFAULT_RULES",
    "PHOTO_RULES",
    "AlignedFace",
    "MicaDataset",
    "PhotoRecord",
    "PhotoRules",
    "PrepareReport",
    "align_face",
    "arcface_blob",
    "arcface_template",
    "collate_samples",
    "diff_image_paths",
    "format_diff",
    "mix_subsets",
    "photo_rules",
    "prepare_subset",
    "read_photo",
    "select_photos",
    "similarity_transform",
    "warp_crop",
]


def __getattr__(name: str):  # the Dataset needs torch; import it only when asked for
    if name in ("MicaDataset", "collate_samples", "mix_subsets"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
