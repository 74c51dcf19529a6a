"""MICA image lists: the real per-subset lists, round trips, and malformed files."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from conftest import MICA_LISTS

from onflame.dataset import read_image_paths, summarise_image_paths, write_image_paths
from onflame.errors import InputError

# actors / images per subset, as published with MICA's lists (shared/README.md)
KNOWN_COUNTS = {
    "BP4D": (127, 12119), "BU3DFE": (100, 5000), "D3DFACS": (10, 6047), "FACEWAREHOUSE": (150, 3000),
    "FLORENCE": (53, 14207), "FRGC": (531, 42206), "LYHM": (1211, 2422), "STIRLING": (96, 649),
}


@pytest.mark.parametrize("subset", sorted(KNOWN_COUNTS))
def test_real_lists_load_and_summarise_to_known_counts(subset):
    path = MICA_LISTS / f"{subset}.npy"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    mapping = read_image_paths(path)
    summary = summarise_image_paths(mapping)
    actors, images = KNOWN_COUNTS[subset]
    assert (summary["actors"], summary["images"]) == (actors, images)
    assert summary["min_images"] <= summary["mean_images"] <= summary["max_images"]
    assert summary["mean_images"] == pytest.approx(images / actors)
    actor, (imgs, npz) = next(iter(mapping.items()))
    # entries are relative paths inside the actor's folder
    assert npz.endswith(".npz") and all(isinstance(p, str) for p in imgs)
    assert npz.split("/")[0] == actor


def test_summary_of_a_small_mapping():
    s = summarise_image_paths({"a": (["a/1.jpg", "a/2.jpg", "a/3.jpg"], "a/a.npz"), "b": (["b/1.jpg"], "b/b.npz")})
    assert s == {"actors": 2, "images": 4, "min_images": 1, "max_images": 3, "mean_images": 2.0}


def test_write_then_read_round_trip_with_json_copy(tmp_path):
    mapping = {"F001": (["F001/0001.jpg", "F001/0002.png"], "F001/F001.npz"), "M002": ([], "M002/x.npz")}
    path = tmp_path / "image_paths" / "BP4D.npy"
    write_image_paths(path, mapping)
    assert read_image_paths(path) == mapping
    # stored as MICA stores it: a 0-d object array holding the dict (read here with numpy's own loader
    # on a file this test just wrote)
    arr = np.load(path, allow_pickle=True)
    assert arr.shape == () and arr.dtype == object and arr.item()["F001"][1] == "F001/F001.npz"
    assert json.loads((tmp_path / "image_paths" / "BP4D.json").read_text()) == {
        "F001": [["F001/0001.jpg", "F001/0002.png"], "F001/F001.npz"], "M002": [[], "M002/x.npz"]}
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_write_without_json_copy(tmp_path):
    write_image_paths(tmp_path / "X.npy", {"a": (["a/1.jpg"], "a/a.npz")}, json_copy=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy"]


def _save_object(path, obj):
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)


@pytest.mark.parametrize("obj, words", [
    (["not", "a", "dict"], "expected a dict"),
    ({"a": "a/a.npz"}, "actor 'a'"),
    ({"a": (["a/1.jpg", 3], "a/a.npz")}, "not a list of strings"),
    ({"a": (["a/1.jpg"], None)}, "npz path is not a string"),
    ({1: (["a/1.jpg"], "a/a.npz")}, "not a string"),
])
def test_malformed_lists_raise_input_error_naming_the_file(tmp_path, obj, words):
    path = tmp_path / "BAD.npy"
    _save_object(path, obj)
    with pytest.raises(InputError) as err:
        read_image_paths(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_refuses_to_write_a_malformed_mapping(tmp_path):
    with pytest.raises(InputError):
        write_image_paths(tmp_path / "X.npy", {"a": ("a/1.jpg", "a/a.npz", "extra")})
    assert not list(tmp_path.iterdir())


def test_list_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo should-not-run",))

    path = tmp_path / "EVIL.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array({"a": Evil()}, dtype=object), fh, protocol=3)
    with pytest.raises(InputError) as err:
        read_image_paths(path)
    assert str(path) in str(err.value) and "os" in str(err.value)


def test_missing_and_non_npy_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image_paths(tmp_path / "nope.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(InputError, match="junk.npy"):
        read_image_paths(tmp_path / "junk.npy")
