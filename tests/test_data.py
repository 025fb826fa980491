import pytest
import torch

from pyro_dirmag.data import default_data_root, load_mnist

pytestmark = pytest.mark.skipif(default_data_root() is None, reason="MNIST not in ../shared/data")


def test_load_mnist_subset_shapes_and_normalization():
    images, labels = load_mnist(train=False, subset=500)
    assert images.shape == (500, 784) and images.dtype == torch.float32
    assert labels.shape == (500,) and labels.dtype == torch.int64
    assert set(labels.tolist()) <= set(range(10))
    # standardized with the training statistics: roughly zero mean, unit variance
    assert abs(images.mean().item()) < 0.2 and 0.8 < images.std().item() < 1.2


def test_load_mnist_unflattened_and_seeded():
    a, la = load_mnist(train=False, subset=10, flatten=False, seed=1)
    b, lb = load_mnist(train=False, subset=10, flatten=False, seed=1)
    assert a.shape == (10, 1, 28, 28)
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_load_mnist_rejects_bad_subset():
    with pytest.raises(ValueError, match="subset"):
        load_mnist(train=False, subset=0)


def test_load_mnist_missing_root_names_the_problem(tmp_path):
    with pytest.raises((FileNotFoundError, RuntimeError)):
        load_mnist(root=str(tmp_path))
