"""Scan → FLAME registration: a registration mesh in FLAME topology and fitted FLAME parameters."""
from .pipeline import MeshFit, Registration, fit_mesh, register, save_registration

__all__ = ["MeshFit", "Registration", "fit_mesh", "register", "save_registration"]
