"""A tiny synthetic MNIST-format data set for the command-line tests (no network)."""

import os

import pytest
import torch

from pyro_dirmag.data import IDX_FILES, write_idx


def write_synthetic(root, folder="MNIST", n_train=240, n_test=60, seed=0):
    """Writes learnable 28x28 images: class c lights up a 7x7 block at position c, plus
    noise. Returns the root."""
    g = torch.Generator().manual_seed(seed)
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    for train, n in ((True, n_train), (False, n_test)):
        labels = torch.arange(n) % 10
        labels = labels[torch.randperm(n, generator=g)]
        images = torch.randint(0, 60, (n, 28, 28), generator=g)
        for c in range(10):
            r, col = divmod(c, 4)
            images[labels == c, 7 * r : 7 * r + 7, 7 * col : 7 * col + 7] += 190
        images_file, labels_file = IDX_FILES[train]
        write_idx(os.path.join(raw, images_file), images.clamp(0, 255).to(torch.uint8))
        write_idx(os.path.join(raw, labels_file), labels.to(torch.uint8))
    return str(root)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data"))
