"""The MICA dataset: open a root (folders or subset zips), iterate subjects, image lists, validate, export.

>>> from onflame.dataset import open_root, validate_root
>>> root = open_root("MICA")                       # BP4D/, FRGC.zip, ..., image_paths/
>>> for subject in root.subjects():
...     subject.params.training_targets()          # MICA's shape/expression/pose targets
>>> print(validate_root("MICA").format_table())
>>> build_subset("BU3DFE", "/data/BU-3DFE", "MICA", "generic_model.pkl", workers=8).exit_code
"""
from .build import BuildReport, build, build_all_synthetic, build_subset
from .export import export_params
from .image_paths import read_image_paths, summarise_image_paths, write_image_paths
from .layout import SUBSETS, MicaRoot, Subject, Subset, extract_subset, open_root
from .validate import Problem, SubsetStats, ValidationReport, validate_root

__all__ = [
    "BuildReport", "build", "build_all_synthetic", "build_subset", "SUBSETS", "MicaRoot", "Problem", "Subject", "Subset", "SubsetStats", "ValidationReport", "export_params",
    "extract_subset", "open_root", "read_image_paths", "summarise_image_paths", "validate_root",
    "write_image_paths",
]
