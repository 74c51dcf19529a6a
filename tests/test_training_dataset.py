"""MICA's training Dataset: sampling semantics, values, targets, errors, the decoded cache, mixing, collation."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from onflame.dataset import write_image_paths
from onflame.errors import InputError
from onflame.flame import FlameParams
from onflame.training import MicaDataset, collate_samples, mix_subsets


def make_subset(root: Path, subset: str, photos_per_actor: dict[str, int], seed: int = 0) -> dict:
    """A prepared subset written directly: crop ``i`` of an actor is noise, its blob is constant ``i / 100``."""
    rng = np.random.default_rng(seed)
    listing, truth = {}, {}
    for actor, n in photos_per_actor.items():
        names = []
        for i in range(n):
            rel = f"{actor}/img_{i:03d}.png"  # PNG: lossless, so the expected pixels are known exactly
            path = root / subset / "arcface_input" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(path)
            np.save(path.with_suffix(".npy"), np.full((3, 112, 112), i / 100, dtype=np.float32))
            names.append(rel)
        betas, pose = rng.normal(size=400), rng.normal(size=15)
        FlameParams.from_mica(betas, pose).save(root / subset / "FLAME_parameters" / actor / "p.npz")
        listing[actor] = (names, f"{actor}/p.npz")
        truth[actor] = (betas, pose)
    write_image_paths(root / "image_paths" / f"{subset}.npy", listing)
    return truth


def _pixels(root: Path, subset: str, actor: str, i: int) -> np.ndarray:
    return np.asarray(Image.open(root / subset / "arcface_input" / f"{actor}/img_{i:03d}.png"))


def test_training_sample(tmp_path):
    truth = make_subset(tmp_path, "SYN", {"a": 6, "b": 5})
    ds = MicaDataset(tmp_path, "SYN", K=4)
    assert len(ds) == 2 and ds.min_K == 5 and ds.max_K == 6 and ds.total_images == 11
    torch.manual_seed(0)
    s = ds[0]
    assert s["imagename"] == "a" and s["dataset"] == "SYN"
    assert s["image"].shape == (4, 3, 224, 224) and s["image"].dtype == torch.float32
    assert s["arcface"].shape == (4, 3, 112, 112)
    chosen = [round(float(s["arcface"][k, 0, 0, 0]) * 100) for k in range(4)]
    assert len(set(chosen)) == 4 and all(0 <= i < 6 for i in chosen)  # without replacement
    for k, i in enumerate(chosen):  # each image is its own photo, / 255
        expected = _pixels(tmp_path, "SYN", "a", i).transpose(2, 0, 1) / 255.0
        assert np.allclose(s["image"][k].numpy(), expected, atol=1e-7)
    betas, pose = truth["a"]
    f = s["flame"]
    assert f["shape_params"].shape == (4, 300) and f["expression_params"].shape == (4, 100)
    assert f["pose_params"].shape == (4, 6)
    assert np.allclose(f["shape_params"].numpy(), np.tile(betas[:300], (4, 1)), atol=1e-6)
    assert np.allclose(f["expression_params"].numpy(), np.tile(betas[300:], (4, 1)), atol=1e-6)
    assert np.allclose(f["pose_params"][2].numpy(), pose[[0, 1, 2, 6, 7, 8]], atol=1e-6)
    # draws vary
    draws = {tuple(round(float(ds[0]["arcface"][k, 0, 0, 0]) * 100) for k in range(4)) for _ in range(20)}
    assert len(draws) > 1


def test_eval_mode_is_deterministic(tmp_path):
    make_subset(tmp_path, "SYN", {"a": 6, "b": 3, "c": 9})
    ds = MicaDataset(tmp_path, "SYN", mode="eval")
    assert ds.eval_K == 3
    for idx in range(3):
        s = ds[idx]
        assert [round(float(s["arcface"][k, 0, 0, 0]) * 100) for k in range(3)] == [0, 1, 2]
    capped = MicaDataset(tmp_path, "SYN", mode="eval", max_eval_K=2)
    assert capped[2]["image"].shape[0] == 2


def test_problems_are_reported_or_skipped(tmp_path):
    make_subset(tmp_path, "SYN", {"a": 6, "b": 2, "c": 5})
    with pytest.raises(InputError, match=r"SYN.npy: actor b: has 2 photos, fewer than K=4"):
        MicaDataset(tmp_path, "SYN", K=4)
    (tmp_path / "SYN" / "arcface_input" / "c" / "img_001.npy").unlink()
    with pytest.raises(InputError, match=r"actor c: 1 of 5 photos missing"):
        MicaDataset(tmp_path, "SYN", K=2)
    ds = MicaDataset(tmp_path, "SYN", K=4, on_problem="skip")
    assert ds.actors == ["a", "c"] and set(ds.skipped) == {"b", "c"}
    assert ds.min_K == 4  # c keeps its 4 complete photos

    (tmp_path / "SYN" / "FLAME_parameters" / "a" / "p.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match=r"actor a: .*p.npz: not a readable .npz"):
        MicaDataset(tmp_path, "SYN", K=1)


def test_decoded_cache_gives_the_same_samples_and_follows_changes(tmp_path):
    make_subset(tmp_path, "SYN", {"a": 5, "b": 4})
    plain = MicaDataset(tmp_path, "SYN", K=3)
    cached = MicaDataset(tmp_path, "SYN", K=3, cache_dir=tmp_path / "cache")
    assert cached._cache.rebuilt
    for idx in range(2):
        torch.manual_seed(idx)
        x = plain[idx]
        torch.manual_seed(idx)
        y = cached[idx]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["arcface"], y["arcface"])
        assert y["image"].is_contiguous()
    assert not MicaDataset(tmp_path, "SYN", K=3, cache_dir=tmp_path / "cache")._cache.rebuilt

    # a crop rewritten with new pixels: the cache notices and serves them
    path = tmp_path / "SYN" / "arcface_input" / "b" / "img_000.png"
    Image.fromarray(np.full((224, 224, 3), 9, np.uint8)).save(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    fresh = MicaDataset(tmp_path, "SYN", K=3, mode="eval", cache_dir=tmp_path / "cache")
    assert fresh._cache.rebuilt
    assert torch.allclose(fresh[1]["image"][0], torch.full((3, 224, 224), 9 / 255))


def test_mixing_follows_the_weights(tmp_path):
    make_subset(tmp_path, "ONE", {f"a{i}": 1 for i in range(3)})
    make_subset(tmp_path, "TWO", {f"b{i}": 1 for i in range(7)}, seed=1)
    one, two = MicaDataset(tmp_path, "ONE", K=1), MicaDataset(tmp_path, "TWO", K=1)
    data, sampler = mix_subsets([one, two], weights=[3, 1], num_samples=8000,
                                generator=torch.Generator().manual_seed(0))
    assert len(data) == 10 and len(sampler) == 8000
    drawn = np.array(list(sampler))
    assert abs((drawn < 3).mean() - 0.75) < 0.02  # subset ONE drawn 3 times as often as TWO
    assert len(set(drawn[drawn < 3].tolist())) == 3
    _, plain = mix_subsets([one, two], generator=torch.Generator().manual_seed(0))
    assert len(plain) == 10  # one epoch; every actor equally likely
    with pytest.raises(ValueError):
        mix_subsets([one, two], weights=[1])
    assert data[4]["dataset"] == "TWO"


def test_collate_matches_default_in_a_worker(tmp_path):
    make_subset(tmp_path, "SYN", {"a": 4, "b": 4, "c": 4})
    ds = MicaDataset(tmp_path, "SYN", K=2, mode="eval")
    ours = next(iter(DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_samples)))
    ref = default_collate([ds[i] for i in range(3)])
    for key in ("image", "arcface"):
        assert torch.equal(ours[key], ref[key])
    for key in ref["flame"]:
        assert torch.equal(ours["flame"][key], ref["flame"][key])
    assert ours["imagename"] == ["a", "b", "c"] and ours["dataset"] == ["SYN"] * 3


@pytest.mark.parametrize("damage", ["crops cut short", "blobs a pickle", "index a fifo", "index not json"])
def test_a_damaged_decoded_cache_is_built_again(tmp_path, damage):
    """27.7 (follow-up): a cache file cut short, replaced by a pickled ``.npy`` of the same name or a FIFO,
    or an index that is not JSON, is never loaded: the cache is built again and serves the right pixels."""
    make_subset(tmp_path, "SYN", {"a": 5, "b": 4})
    cached = MicaDataset(tmp_path, "SYN", K=3, cache_dir=tmp_path / "cache")
    folder = cached._cache.folder
    torch.manual_seed(0)
    want = cached[0]["image"]
    if damage == "crops cut short":
        data = (folder / "crops.npy").read_bytes()
        (folder / "crops.npy").write_bytes(data[: len(data) // 2])
    elif damage == "blobs a pickle":
        np.save(folder / "blobs.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif damage == "index a fifo":
        (folder / "index.json").unlink()
        os.mkfifo(folder / "index.json")
    else:
        (folder / "index.json").write_bytes(b"\xff{")
    again = MicaDataset(tmp_path, "SYN", K=3, cache_dir=tmp_path / "cache")
    assert again._cache.rebuilt
    torch.manual_seed(0)
    assert torch.equal(again[0]["image"], want)
