"""Texture images named by mesh files: find them as releases actually name them, and check they read."""
from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath

from ..errors import InputError


def resolve_reference(base_dir: str | os.PathLike, name: str) -> Path | None:
    """The file that a reference ``name`` inside a mesh file (texture, material library) means, or None.

    Tried in order: ``name`` relative to ``base_dir`` (or absolute); its base name (scanner software
    often writes the capture machine's absolute Windows path, e.g. ``C:\\3dMD\\F0001.bmp``); the base
    name matched without regard to case (releases made on Windows mix ``.BMP`` and ``.bmp``).
    """
    base_dir = Path(base_dir)
    name = name.strip()
    if not name:
        return None
    direct = base_dir / name
    if direct.is_file():
        return direct
    leaf = PureWindowsPath(name).name  # handles both "/" and "\" separators
    if leaf and (base_dir / leaf).is_file():
        return base_dir / leaf
    try:
        lowered = leaf.lower()
        return next((p for p in base_dir.iterdir() if p.name.lower() == lowered and p.is_file()), None)
    except OSError:
        return None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image after decoding it fully (so a truncated file is caught here).

    Raises :class:`InputError` naming the image if it is missing, unreadable or corrupt.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's bad-file errors
        raise InputError(path, f"cannot read image ({exc})") from None
