"""MNIST-like data sets as in-memory tensors, read from local IDX files.

Three data sets share torchvision's layout, ``<root>/<folder>/raw/<file>``, with the
four uncompressed IDX files of :data:`IDX_FILES` (``.gz`` copies are read too):

================= ================ ====================================
name              folder           pixel mean / std (training images)
================= ================ ====================================
``mnist``         ``MNIST``        0.1307 / 0.3081
``fashion-mnist`` ``FashionMNIST`` 0.2860 / 0.3530
``kmnist``        ``KMNIST``       0.1918 / 0.3483
================= ================ ====================================

The root folder is ``root``, else ``$PYRO_DIRMAG_DATA``, else ``../shared/data``
relative to the current directory or to the repository. :func:`load_dataset`
downloads (through torchvision) only when asked to; a missing, truncated or corrupt
file raises :class:`DataError` naming the file and what is wrong with it.
"""

import gzip
import os

import torch

__all__ = [
    "DATASETS",
    "IDX_FILES",
    "DataError",
    "default_data_root",
    "load_dataset",
    "load_mnist",
    "read_idx",
    "rotate_images",
    "take_subset",
    "validation_split",
    "write_idx",
]

# Mean and standard deviation of the MNIST training pixels (in [0, 1]).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

#: ``name: (folder under the root, torchvision class, pixel mean, pixel std)``.
DATASETS = {
    "mnist": ("MNIST", "MNIST", MNIST_MEAN, MNIST_STD),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST", 0.2860, 0.3530),
    "kmnist": ("KMNIST", "KMNIST", 0.1918, 0.3483),
}

#: ``split: (images file, labels file)`` in every data set's ``raw`` folder.
IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DataError(ValueError):
    """A data file is missing, truncated or not in the expected format."""


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"Expected parameter dataset ({name!r}) to be one of {sorted(DATASETS)}")
    return DATASETS[name]


def default_data_root(name="mnist"):
    """The first candidate folder that holds ``<folder>/raw`` of data set ``name``, or ``None``."""
    folder = _check_name(name)[0]
    candidates = [
        os.environ.get("PYRO_DIRMAG_DATA"),
        os.path.join(os.getcwd(), "..", "shared", "data"),
        os.path.join(_REPO_ROOT, "..", "shared", "data"),
    ]
    for root in candidates:
        if root and os.path.isdir(os.path.join(root, folder, "raw")):
            return os.path.abspath(root)
    return None


def read_idx(path):
    """
    Reads one IDX file of unsigned bytes (the MNIST format: magic ``0 0 8 ndim``, then
    ``ndim`` big-endian int32 sizes, then the data), plain or gzip-compressed.

    :returns: a ``torch.uint8`` tensor of the stored shape.
    :raises DataError: when the header or the length does not match.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path} has a truncated IDX header")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = 1
    for s in shape:
        count *= s
    if len(data) != header + count:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises shape {tuple(shape)} "
            f"({header + count} bytes) but the file has {len(data)} bytes"
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def _find(raw, filename):
    for candidate in (filename, filename + ".gz"):
        path = os.path.join(raw, candidate)
        if os.path.exists(path):
            return path
    return None


def _download(name, root):
    import torchvision.datasets

    cls = getattr(torchvision.datasets, DATASETS[name][1])
    try:
        cls(root=root, train=True, download=True)
        cls(root=root, train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any network or server failure
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def load_dataset(name="mnist", train=True, root=None, *, download=False, normalize=True):
    """
    One split of an MNIST-like data set as ``(images, labels)``: float32 images of shape
    ``(N, 784)`` (pixels in [0, 1], standardized with the data set's training mean and
    std when ``normalize``) and int64 labels.

    :param str name: a key of :data:`DATASETS`.
    :param bool train: the training split, else the test split.
    :param str root: folder holding ``<folder>/raw``; see :func:`default_data_root`.
    :param bool download: download through torchvision into ``root`` (or the first
        candidate folder) when the files are missing.
    :raises FileNotFoundError: when the files are missing (and not downloaded), with one
        line naming the folder and the files expected.
    :raises DataError: when a file is truncated, corrupt, or images and labels disagree.
    """
    folder, _, mean, std = _check_name(name)
    root = root or default_data_root(name)
    if root is None and download:
        root = os.environ.get("PYRO_DIRMAG_DATA") or os.path.join(
            _REPO_ROOT, "..", "shared", "data"
        )
    raw = os.path.join(root, folder, "raw") if root else None
    files = IDX_FILES[bool(train)]
    paths = [_find(raw, f) if raw else None for f in files]
    if None in paths and download and root:
        problem = _download(name, root)
        paths = [_find(raw, f) for f in files]
        if None in paths:
            raise FileNotFoundError(
                f"{name}: download into {os.path.abspath(root)} failed ({problem}); put "
                f"{', '.join(files)} in {os.path.abspath(raw)}"
            )
    if None in paths:
        where = os.path.abspath(raw) if raw else f"$PYRO_DIRMAG_DATA/{folder}/raw"
        raise FileNotFoundError(
            f"{name} not found: expected {', '.join(files)} (or .gz) in {where}; pass "
            "--data-dir / root=, or set PYRO_DIRMAG_DATA"
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{paths[0]} and {paths[1]} do not match: images of shape {tuple(images.shape)}, "
            f"labels of shape {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{paths[0]} holds no image")
    images = images.to(torch.float32).div_(255.0)
    if normalize:
        images = (images - mean) / std
    return images.reshape(len(labels), -1).contiguous(), labels.to(torch.int64)


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
    images, labels = load_dataset("mnist", train, root, normalize=normalize)
    if subset is not None:
        images, labels = take_subset(images, labels, subset, seed)
    images = images if flatten else images.reshape(len(labels), 1, 28, 28)
    return images.contiguous(), labels


def take_subset(images, labels, subset, seed=0):
    """``subset`` examples drawn without replacement with ``seed`` (as :func:`load_mnist`)."""
    if not (isinstance(subset, int) and 0 < subset <= len(labels)):
        raise ValueError(f"subset must be in [1, {len(labels)}], got {subset}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(labels), generator=generator)[:subset]
    return images[index], labels[index]


def validation_split(images, labels, val_size, seed):
    """
    Splits ``(images, labels)`` into a training part and ``val_size`` held-out examples,
    chosen by a permutation drawn with ``seed``.

    :returns: ``((train_images, train_labels), (val_images, val_labels))``.
    """
    if not (isinstance(val_size, int) and 0 <= val_size < len(labels)):
        raise ValueError(
            f"Expected parameter val_size ({val_size}) to be in [0, {len(labels) - 1}] "
            f"(the data has {len(labels)} examples)"
        )
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    return (images[train], labels[train]), (images[val], labels[val])


def rotate_images(images, degrees, name="mnist"):
    """
    Rotates standardized images of data set ``name`` by ``degrees`` (counter-clockwise,
    bilinear, the background filled with the standardized 0 pixel): a distribution
    shift for evaluation. Flat ``(N, 784)`` or ``(N, 1, 28, 28)`` in, same shape out.
    """
    from torchvision.transforms.v2.functional import rotate

    _, _, mean, std = _check_name(name)
    shape = images.shape
    square = images.reshape(-1, 1, 28, 28)
    background = -mean / std
    out = rotate(
        square - background,
        float(degrees),
        interpolation=_bilinear(),
    )
    return (out + background).reshape(shape).contiguous()


def _bilinear():
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BILINEAR


def write_idx(path, tensor):
    """Writes a ``torch.uint8`` tensor as an IDX file (the inverse of :func:`read_idx`)."""
    if tensor.dtype != torch.uint8 or tensor.dim() < 1:
        raise ValueError(f"Expected parameter tensor to be uint8 with >= 1 dim, got {tensor.dtype}")
    header = bytes([0, 0, 0x08, tensor.dim()])
    header += b"".join(int(s).to_bytes(4, "big") for s in tensor.shape)
    with open(path, "wb") as f:
        f.write(header + tensor.contiguous().numpy().tobytes())
