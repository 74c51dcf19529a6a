"""Scan → FLAME registration: a registration mesh in FLAME topology and fitted FLAME parameters."""
from .pipeline import Registration, register, save_registration

__all__ = ["Registration", "register", "save_registration"]
