"""MNIST as in-memory tensors, read from local IDX files (never downloaded).

The data set is looked up in ``root``, then ``$PYRO_DIRMAG_DATA``, then
``../shared/data`` relative to the current directory and to the repository.
"""

import os

import torch

__all__ = ["default_data_root", "load_mnist"]

# Mean and standard deviation of the MNIST training pixels (in [0, 1]).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_data_root():
    """The first candidate folder that holds ``MNIST/raw``, or ``None``."""
    candidates = [
        os.environ.get("PYRO_DIRMAG_DATA"),
        os.path.join(os.getcwd(), "..", "shared", "data"),
        os.path.join(_REPO_ROOT, "..", "shared", "data"),
    ]
    for root in candidates:
        if root and os.path.isdir(os.path.join(root, "MNIST", "raw")):
            return os.path.abspath(root)
    return None


def load_mnist(train=True, subset=None, root=None, flatten=True, normalize=True, seed=0):
    """Load MNIST as a pair ``(images, labels)`` of tensors.

    :param bool train: the 60,000-image training split, else the 10,000-image test split.
    :param int subset: keep this many images, drawn without replacement with ``seed``
        (stratification is not attempted; MNIST classes are nearly balanced).
    :param str root: folder holding ``MNIST/raw``; see :func:`default_data_root`.
    :param bool flatten: return images as ``(N, 784)`` rather than ``(N, 1, 28, 28)``.
    :param bool normalize: standardize pixels with the training-set mean and std.
    :returns: float32 images and int64 labels.
    :raises FileNotFoundError: when no MNIST copy is found (nothing is downloaded).
    """
    from torchvision.datasets import MNIST

    root = root or default_data_root()
    if root is None:
        raise FileNotFoundError(
            "MNIST not found: pass root=..., or set PYRO_DIRMAG_DATA to a folder holding "
            "MNIST/raw (the four IDX files)"
        )
    data = MNIST(root=root, train=train, download=False)
    images = data.data.to(torch.float32).div_(255.0)
    labels = data.targets.to(torch.int64)
    if subset is not None:
        if not 0 < subset <= len(labels):
            raise ValueError(f"subset must be in [1, {len(labels)}], got {subset}")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(labels), generator=generator)[:subset]
        images, labels = images[index], labels[index]
    if normalize:
        images = (images - MNIST_MEAN) / MNIST_STD
    images = images.reshape(len(labels), -1) if flatten else images.unsqueeze(1)
    return images.contiguous(), labels
