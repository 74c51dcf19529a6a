"""Scan → FLAME registration: a registration mesh in FLAME topology and fitted FLAME parameters."""
from .mesh_fit import MeshFit, fit_mesh
from .pipeline import register
from .result import Registration, save_registration

__all__ = ["MeshFit", "Registration", "fit_mesh", "register", "save_registration"]
