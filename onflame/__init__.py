"""onflame: put 3D face scans on FLAME; build, check and serve the MICA dataset.

Pipeline, one way: ``mesh`` (I/O) → ``registration`` (scan → FLAME) → ``dataset`` (MICA layout)
→ ``training`` (inputs and loaders). ``flame`` holds the model; ``synthetic`` the embedded default
(a procedural FLAME-structured head, synthetic scans and datasets) that runs on a fresh machine.
"""
__version__ = "0.1.0"

from .errors import InputError, OnflameError, UnsafePickleError

__all__ = ["InputError", "OnflameError", "UnsafePickleError", "__version__"]
