"""
Architectures as lists of modules built from layer factories: the one place where the
networks of the thesis are declared.

``layers(name, linear, conv)`` returns the modules of one network in order, calling
``linear(in_features, out_features)`` and ``conv(in_channels, out_channels,
kernel_size)`` for its weight layers, so that one definition serves the DirMag
model, the deterministic baseline, the noisy networks (:func:`~pyro_dirmag.models.build`,
:func:`~pyro_dirmag.nn.noisy_mlp`) and any other noise layer. Every network accepts
MNIST images either flat ``(N, 784)`` or as ``(N, 1, 28, 28)``; :func:`mlp` is the
fully connected body alone, for inputs of any size.
"""

from torch import nn

__all__ = ["ARCHITECTURES", "INPUT_SHAPE", "NUM_CLASSES", "AsImages", "layers", "mlp"]

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10

#: Hidden sizes of the fully-connected nets, or "conv" for LeNet5.
ARCHITECTURES = {
    "lenet300": (300, 100),
    "lenet500": (500, 300),
    "lenet5": "conv",
    "fc1024": (1024, 1024, 2048),
}


class AsImages(nn.Module):
    """Reshapes a batch to ``(N, 1, 28, 28)`` (flat or image input)."""

    def forward(self, x):
        return x.reshape((x.shape[0],) + INPUT_SHAPE)


def mlp(sizes, linear):
    """
    The modules ``linear -> ReLU -> ... -> linear`` of a fully connected network whose
    layer widths are ``sizes`` (input, hidden..., output), returning the last layer's
    output (logits) without an activation.

    :param sizes: at least two positive ints.
    :param callable linear: ``linear(in_features, out_features) -> nn.Module``.
    :rtype: list
    """
    sizes = tuple(sizes)
    if len(sizes) < 2 or not all(isinstance(n, int) and n >= 1 for n in sizes):
        raise ValueError(f"Expected parameter sizes ({sizes}) to be at least two positive ints")
    mods = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if k:
            mods.append(nn.ReLU())
        mods.append(linear(n_in, n_out))
    return mods


def _mlp(hidden, linear):
    sizes = (INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2],) + tuple(hidden) + (NUM_CLASSES,)
    return [nn.Flatten()] + mlp(sizes, linear)


def _lenet5(linear, conv):
    # Caffe's LeNet5 as in the thesis: conv 20 and 50 filters of 5x5, each followed by
    # 2x2 max-pooling, then a 500-unit dense layer (ReLU) and the 10 logits.
    return [
        AsImages(),
        conv(1, 20, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        conv(20, 50, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        linear(50 * 4 * 4, 500),
        nn.ReLU(),
        linear(500, NUM_CLASSES),
    ]


def layers(name, linear, conv=None):
    """
    The modules of the network ``name``.

    :param str name: one of :data:`ARCHITECTURES`.
    :param callable linear: ``linear(in_features, out_features) -> nn.Module``.
    :param callable conv: ``conv(in_channels, out_channels, kernel_size) -> nn.Module``
        (needed for ``"lenet5"`` only).
    :rtype: list
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[name]
    if spec == "conv":
        if conv is None:
            raise ValueError(f"{name!r} needs a conv layer factory")
        return _lenet5(linear, conv)
    return _mlp(spec, linear)
