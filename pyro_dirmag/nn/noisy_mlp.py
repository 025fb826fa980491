"""A fully connected network of :class:`~pyro_dirmag.nn.NoisyLinear` layers.

The thesis's non-variational experiments (section 5.1, tables 1-2) use an
FC 1024-1024-2048 network on MNIST with the same noise in every layer: the network
``"fc1024"`` of :data:`pyro_dirmag.models.ARCHITECTURES`, where every architecture is
declared.
"""

from torch import nn

from .noisy_layers import NoisyLinear

__all__ = ["noisy_mlp"]


def noisy_mlp(in_features=784, hidden_sizes=None, out_features=10, **noise_kwargs):
    """``NoisyLinear -> ReLU -> ... -> NoisyLinear`` returning logits.

    Every layer, the output layer included, gets the same noise, so with
    ``on="activation"`` the first layer perturbs the input pixels themselves.

    :param int in_features: input size (784 for flattened MNIST).
    :param hidden_sizes: widths of the hidden layers; default those of ``"fc1024"`` in
        :data:`pyro_dirmag.models.ARCHITECTURES`, ``(1024, 1024, 2048)``.
    :param int out_features: number of classes.
    :param noise_kwargs: ``noise``, ``alpha``, ``magnitude``, ``magnitude_alpha``, ``on``,
        ``per_example``, passed to every :class:`~pyro_dirmag.nn.NoisyLinear`.
    :rtype: torch.nn.Sequential
    """
    # pyro_dirmag.models builds on pyro_dirmag.nn: its architecture table is read here,
    # when called, not when pyro_dirmag.nn is imported.
    from pyro_dirmag.models.architectures import ARCHITECTURES, mlp

    if hidden_sizes is None:
        hidden_sizes = ARCHITECTURES["fc1024"]
    sizes = (in_features, *hidden_sizes, out_features)
    return nn.Sequential(*mlp(sizes, lambda n_in, n_out: NoisyLinear(n_in, n_out, **noise_kwargs)))
