"""Images: find the textures mesh files name as releases actually name them; open any image safely.

:func:`open_image` is how onflame decodes every image (textures, photos, crops): the file must be a
regular file of at most :data:`IMAGE_MAX_BYTES`, and an image whose pixel count passes PIL's
decompression-bomb limit is refused in one line naming it (PIL would only warn, on stderr, below twice
the limit, then decode it).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Iterator

from ..errors import InputError
from ..fileio import read_bounded

if TYPE_CHECKING:
    from PIL import Image

#: The largest image file read (a photo of a few tens of megapixels takes some 20 MB).
IMAGE_MAX_BYTES = 128 * 2**20


@contextlib.contextmanager
def open_image(source: str | os.PathLike | bytes, label: str | os.PathLike | None = None) -> Iterator["Image.Image"]:
    """A PIL image of ``source`` (a path, or an image file's bytes), for use inside the block.

    Errors inside the block (decoding happens on first use) become :class:`InputError` naming ``label``
    (default the path): missing, not a regular file, too large, a decompression bomb, corrupt.
    """
    from PIL import Image, UnidentifiedImageError

    label = label if label is not None else (str(source) if not isinstance(source, bytes) else "<image>")
    data = source if isinstance(source, bytes) else read_bounded(source, IMAGE_MAX_BYTES, label)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                yield img
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise InputError(label, f"refused: an image of {found[1] if found else 'too many'} pixels, more than "
                                    f"onflame decodes ({Image.MAX_IMAGE_PIXELS}; a decompression bomb?)") from None
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError, EOFError) as exc:
            raise InputError(label, f"cannot read image ({exc})") from None


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
    with open_image(path) as img:
        img.load()
        return img.size
