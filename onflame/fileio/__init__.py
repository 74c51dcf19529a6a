"""Reading and writing files safely: one layer every reader and writer of onflame goes through.

- :mod:`.paths`: a path is read only when it is a regular file (:func:`open_regular`,
  :func:`check_regular`; a FIFO, socket or device is refused without blocking); writes can be confined
  to an output folder (:func:`confine_writes`), never following a link inside it; :func:`refuse_links`
  refuses links where a command will write, before any work.
- :mod:`.read`: reads bounded by what the format can hold (:func:`read_bounded`, :func:`gunzip_bounded`,
  :func:`read_npy`, :func:`read_npz`, :func:`zip_member_bytes`), checked before memory is spent.
- :mod:`.write`: atomic writes with the umask's file mode (:func:`atomic_open`, :func:`write_bytes`,
  :func:`write_text`, :func:`write_json`, :func:`write_npz`, :func:`written_together`,
  :func:`all_or_none`), temporaries a later run recognises and removes (:func:`sweep_temporaries`),
  output checks before any work (:func:`check_output_dir`, :func:`check_output_file`).
- :mod:`.aligned`: ``.npz`` files of stored, aligned members whose arrays are views of one read of the
  file (a FLAME model's pickle-free copy, read on every run), checked as :func:`read_npz` checks.
"""
from __future__ import annotations

import re

from .paths import (LINK_PROBLEM, check_folder, check_regular, confine_writes, confined_parent, confined_to,
                    file_kind, open_regular, refuse_links, remove_file, write_root)
from .read import (MAX_READ_BYTES, MESH_MAX_BYTES, PARAMS_MAX_BYTES, SIDE_FILE_MAX_BYTES, gunzip_bounded, npy_header,
                   read_bounded, read_maybe_gzip, read_npy, read_npz, read_text, zip_member_bytes)
from .write import (all_or_none, atomic_open, check_output_dir, check_output_file, json_default, sweep_temporaries,
                    temporary_name, write_bytes, write_json, write_npz, write_text, written_together)

_json_default = json_default  # the name the command line imports

__all__ = [
    "LINK_PROBLEM", "MAX_READ_BYTES", "MESH_MAX_BYTES", "PARAMS_MAX_BYTES", "SIDE_FILE_MAX_BYTES", "all_or_none",
    "atomic_open", "check_folder", "check_output_dir", "check_output_file", "check_regular", "confine_writes",
    "confined_parent", "confined_to", "file_kind", "gunzip_bounded", "json_default", "npy_header",
    "open_regular", "read_bounded", "refuse_links", "read_maybe_gzip", "read_npy", "read_npz", "read_text", "remove_file",
    "safe_name", "sweep_temporaries", "temporary_name", "write_bytes", "write_json", "write_npz", "write_root",
    "write_text", "written_together", "zip_member_bytes",
]


def safe_name(label: str, fallback: str = "_") -> str:
    """``label`` as one file-name component: runs of anything but letters, digits, ``.``, ``_``, ``+``
    and ``-`` become ``_``, leading and trailing dots and underscores go; ``fallback`` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._") or fallback
