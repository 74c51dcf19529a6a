"""onflame.fileio.aligned: .npz files whose arrays are views of one read of the file."""
from __future__ import annotations

import numpy as np
import pytest

from onflame.errors import InputError
from onflame.fileio.aligned import ALIGN, read_aligned_npz, write_aligned_npz

ARRAYS = {
    "f64": np.arange(30.0).reshape(5, 6), "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "i32": np.arange(7, dtype=np.int32), "big_endian": np.arange(5, dtype=">f4"), "text": np.array("onflame"),
    "texts": np.array(["ab", "cde"]), "flags": np.array([True, False, True]), "scalar": np.int64(-3),
    "empty": np.zeros((0, 3)), "odd": np.arange(3, dtype=np.uint8),
}


def test_arrays_come_back_as_written_and_np_load_reads_the_file(tmp_path):
    path = tmp_path / "a.npz"
    write_aligned_npz(path, **ARRAYS)
    got = read_aligned_npz(path)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(ARRAYS)
        for name, value in ARRAYS.items():
            value = np.asarray(value)
            for arr in (got[name], z[name]):
                assert arr.dtype == value.dtype and arr.shape == value.shape and np.array_equal(arr, value), name
            assert got[name].flags.writeable, name
            if value.size and value.dtype.alignment > 1:  # aligned data is a view, not a copy
                assert got[name].ctypes.data % ALIGN == 0, name


def test_a_file_it_cannot_read_whole_is_refused_naming_it(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, x=np.arange(10.0))
    with pytest.raises(InputError, match=f"{path}.*compressed"):
        read_aligned_npz(path)
    write_aligned_npz(path, x=np.arange(1000.0))
    with pytest.raises(InputError, match=f"{path}.*reads at most"):
        read_aligned_npz(path, limit=1000)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match=str(path)):
        read_aligned_npz(path)
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="pickled"):
        read_aligned_npz(path)
    with pytest.raises(TypeError, match="pickle-free"):
        write_aligned_npz(path, x=np.array([None], dtype=object))
