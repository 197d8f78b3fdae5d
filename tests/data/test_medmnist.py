from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from monai_neurosql.data import (
    array_transforms,
    fashion_mnist_to_npz,
    load_medmnist_npz,
    medmnist_records,
    read_idx,
)
from monai_neurosql.data.medmnist import FASHION_MNIST_DIR


def write_npz(path, shape=(28, 28), n=(6, 3, 4), rgb=False, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        full = (count, *shape, 3) if rgb else (count, *shape)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=full, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, size=(count, 1))
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("shape,rgb,channels", [((28, 28), False, 1), ((64, 64), True, 3), ((28, 28, 28), False, 1)])
def test_records_and_transforms(tmp_path, shape, rgb, channels):
    path = write_npz(tmp_path / "set.npz", shape=shape, rgb=rgb)
    split = medmnist_records(path)
    assert [len(split[k]) for k in ("training", "validation", "test")] == [6, 3, 4]
    item = split["training"][2]
    assert item["image"].shape == (channels, *shape) and item["index"] == 2 and isinstance(item["label"], int)
    assert split["test"][0]["record_index"] == 9
    out = array_transforms(spatial_dims=len(shape))(item)["image"]
    assert out.shape == (channels, *shape) and 0 <= out.min() and out.max() <= 1
    resized = array_transforms(16, spatial_dims=len(shape), augment=True, clean_key="clean")(item)
    assert resized["image"].shape == (channels, *(16,) * len(shape)) == resized["clean"].shape


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_medmnist_npz(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        load_medmnist_npz(bad)
    with pytest.raises(ValueError, match=r"missing the MedMNIST keys \['val_images'\]"):
        load_medmnist_npz(write_npz(tmp_path / "a.npz", val_images=None))
    with pytest.raises(ValueError, match="key 'train_images': shape"):
        load_medmnist_npz(write_npz(tmp_path / "b.npz", train_images=np.zeros((3, 28), np.uint8)))
    with pytest.raises(ValueError, match="expected \\(N, D, H, W\\)"):
        load_medmnist_npz(write_npz(tmp_path / "c.npz"), spatial_dims=3)
    with pytest.raises(ValueError, match="2 rows for 6 images"):
        load_medmnist_npz(write_npz(tmp_path / "d.npz", train_labels=np.zeros((2, 1))))


def test_read_idx(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape) + array.tobytes())
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_repack(tmp_path):
    path = fashion_mnist_to_npz(tmp_path / "fmnist.npz", max_train=100, max_test=50, num_val=20)
    data = load_medmnist_npz(path)
    assert data["train"][0].shape == (100, 28, 28) and data["val"][0].shape == (20, 28, 28)
    assert data["test"][1].shape == (50, 1) and data["train"][0].dtype == np.uint8
    assert set(np.unique(data["train"][1])) <= set(range(10))
    assert fashion_mnist_to_npz(tmp_path / "fmnist.npz") == path  # reused
