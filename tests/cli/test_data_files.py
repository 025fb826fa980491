"""Data sets by name from IDX files: format checks, splits, the rotated test set."""

import gzip
import os

import pytest
import torch

from pyro_dirmag.data import (
    DataError,
    load_dataset,
    read_idx,
    rotate_images,
    validation_split,
    write_idx,
)

from .conftest import write_synthetic


def test_idx_round_trip_plain_and_gzip(tmp_path):
    t = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    write_idx(str(tmp_path / "a"), t)
    assert torch.equal(read_idx(str(tmp_path / "a")), t)
    with open(tmp_path / "a", "rb") as f, gzip.open(tmp_path / "a.gz", "wb") as g:
        g.write(f.read())
    assert torch.equal(read_idx(str(tmp_path / "a.gz")), t)


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0c\x01\x00\x00\x00\x02ab")  # float32 type code
    with pytest.raises(DataError, match="bad.*magic"):
        read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="short.*header"):
        read_idx(str(short))
    write_idx(str(tmp_path / "t"), torch.zeros(4, 3, dtype=torch.uint8))
    with open(tmp_path / "t", "ab") as f:
        f.write(b"extra")
    with pytest.raises(DataError, match="t is truncated or corrupt"):
        read_idx(str(tmp_path / "t"))


def test_datasets_by_name_and_their_errors(tmp_path):
    root = write_synthetic(tmp_path, folder="KMNIST", n_train=30, n_test=10)
    x, y = load_dataset("kmnist", train=False, root=root)
    assert x.shape == (10, 784) and y.shape == (10,) and x.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="FashionMNIST.raw"):
        load_dataset("fashion-mnist", root=root)
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("cifar10", root=root)
    labels = os.path.join(root, "KMNIST", "raw", "t10k-labels-idx1-ubyte")
    write_idx(labels, torch.zeros(9, dtype=torch.uint8))
    with pytest.raises(DataError, match="do not match"):
        load_dataset("kmnist", train=False, root=root)


def test_validation_split_is_a_seeded_partition():
    x = torch.arange(20.0).unsqueeze(-1)
    y = torch.arange(20)
    (xt, yt), (xv, yv) = validation_split(x, y, 5, seed=1)
    assert len(yv) == 5 and len(yt) == 15
    assert sorted(torch.cat([yt, yv]).tolist()) == list(range(20))
    assert torch.equal(validation_split(x, y, 5, seed=1)[1][1], yv)
    with pytest.raises(ValueError, match="val_size"):
        validation_split(x, y, 20, seed=1)


def test_rotation_by_90_degrees_is_a_quarter_turn():
    images = torch.randn(3, 784)
    rotated = rotate_images(images, 90).reshape(3, 28, 28)
    expected = torch.rot90(images.reshape(3, 28, 28), 1, dims=(-2, -1))
    torch.testing.assert_close(rotated, expected, atol=1e-4, rtol=0)
    background = -0.1307 / 0.3081
    corner = rotate_images(torch.full((1, 784), background), 45)
    torch.testing.assert_close(corner, torch.full((1, 784), background), atol=1e-5, rtol=0)
