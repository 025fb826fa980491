"""A fully connected network of :class:`~pyro_dirmag.nn.NoisyLinear` layers.

The thesis's non-variational experiments (section 5.1, tables 1-2) use an
FC 1024-1024-2048 network on MNIST with the same noise in every layer.
"""

from torch import nn

from .noisy_layers import NoisyLinear

__all__ = ["THESIS_HIDDEN_SIZES", "noisy_mlp"]

THESIS_HIDDEN_SIZES = (1024, 1024, 2048)


def noisy_mlp(in_features=784, hidden_sizes=THESIS_HIDDEN_SIZES, out_features=10, **noise_kwargs):
    """``NoisyLinear -> ReLU -> ... -> NoisyLinear`` returning logits.

    Every layer, the output layer included, gets the same noise, so with
    ``on="activation"`` the first layer perturbs the input pixels themselves.

    :param int in_features: input size (784 for flattened MNIST).
    :param hidden_sizes: widths of the hidden layers.
    :param int out_features: number of classes.
    :param noise_kwargs: ``noise``, ``alpha``, ``magnitude``, ``magnitude_alpha``, ``on``,
        ``per_example``, passed to every :class:`~pyro_dirmag.nn.NoisyLinear`.
    :rtype: torch.nn.Sequential
    """
    sizes = (in_features,) + tuple(hidden_sizes)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [NoisyLinear(fan_in, fan_out, **noise_kwargs), nn.ReLU()]
    layers.append(NoisyLinear(sizes[-1], out_features, **noise_kwargs))
    return nn.Sequential(*layers)
