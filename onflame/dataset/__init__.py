"""The MICA dataset: open a root (folders or subset zips), iterate subjects, image lists, validate, export.

>>> from onflame.dataset import open_root, validate_root
>>> root = open_root("MICA")                       # BP4D/, FRGC.zip, ..., image_paths/
>>> for subject in root.subjects():
...     subject.params.training_targets()          # MICA's shape/expression/pose targets
>>> print(validate_root("MICA").format_table())
>>> build_subset("BU3DFE", "/data/BU-3DFE", "MICA", "generic_model.pkl", workers=8).exit_code
"""
from .export import export_params
from .image_paths import read_image_paths, summarise_image_paths, write_image_paths
from .layout import MicaRoot, Subject, Subset, open_root
from .names import SUBSETS
from .stores import extract_subset
from .validate import Problem, SubsetStats, ValidationReport, validate_root

#: Names served by :mod:`.build`, imported on first use: it brings registration and torch, which reading,
#: validating and exporting a root do not need. (Its several-subset ``build`` stays in the module, whose
#: name it shares.)
_BUILD_NAMES = ("BuildReport", "build_subset")


def __getattr__(name: str):
    if name in _BUILD_NAMES:
        import importlib

        return getattr(importlib.import_module(".build", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SUBSETS", "BuildReport", "MicaRoot", "Problem", "Subject", "Subset", "SubsetStats", "ValidationReport",
    "build_subset", "export_params", "extract_subset", "open_root",
    "read_image_paths", "summarise_image_paths", "validate_root", "write_image_paths",
]
