"""
The DirMag Bayesian classifiers and their deterministic baselines.
"""

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from pyro_dirmag.nn import DirMagConv2d, DirMagLinear, DirMagModel

from .architectures import layers

__all__ = [
    "DirMagClassifier",
    "NoLatents",
    "PlainClassifier",
    "deterministic_model",
    "dirmag_model",
]


def _categorical(logits):
    return dist.Categorical(logits=logits)


class DirMagClassifier(DirMagModel):
    """
    A categorical likelihood on top of a network of DirMag layers, called inside a
    subsampled data plate (so per-example noise, one KL per step and the :math:`N/M`
    likelihood weight all hold for any batch size): a
    :class:`~pyro_dirmag.nn.DirMagModel` with ``Categorical(logits=net(x))``.

    :param torch.nn.Sequential net: a ``PyroModule[nn.Sequential]`` returning logits.
    :param int num_data: size :math:`N` of the training set.
    """

    def __init__(self, net, num_data):
        super().__init__(net, _categorical, num_data)


def dirmag_model(name, num_data, **layer_kwargs):
    """
    The DirMag Bayesian version of the network ``name``.

    :param str name: ``"lenet300"``, ``"lenet500"``, ``"lenet5"`` or ``"fc1024"``.
    :param int num_data: training set size :math:`N`.
    :param layer_kwargs: passed to every :class:`~pyro_dirmag.nn.DirMagLinear` and
        :class:`~pyro_dirmag.nn.DirMagConv2d` (e.g. ``direction_noise=False``, ``phi=``);
        ``reverse=True`` applies to the dense layers only (the thesis's "FC reverse").
    :rtype: DirMagClassifier
    """
    reverse = layer_kwargs.pop("reverse", False)

    def linear(n_in, n_out):
        return DirMagLinear(n_in, n_out, reverse=reverse, **layer_kwargs)

    def conv(c_in, c_out, k):
        return DirMagConv2d(c_in, c_out, k, **layer_kwargs)

    net = PyroModule[nn.Sequential](*layers(name, linear, conv))
    return DirMagClassifier(net, num_data)


def deterministic_model(name):
    """
    The plain weight-normalized network ``name`` (``torch.nn.utils.parametrizations.
    weight_norm`` on every weight layer, magnitudes per output unit): a
    :class:`torch.nn.Sequential` returning logits.
    """

    def linear(n_in, n_out):
        return weight_norm(nn.Linear(n_in, n_out))

    def conv(c_in, c_out, k):
        return weight_norm(nn.Conv2d(c_in, c_out, k))

    return nn.Sequential(*layers(name, linear, conv))


class PlainClassifier(PyroModule):
    """
    A categorical likelihood on top of a plain (or non-variational noisy) network, in the
    same subsampled data plate as :class:`DirMagClassifier`, so that one ELBO trains
    both: with no latent site (the guide :class:`NoLatents`), the loss is
    :math:`-\\frac{N}{M} \\sum_{i \\le M} \\log p(y_i \\mid x_i)`, :math:`N` times the mean
    cross-entropy.

    :param torch.nn.Module net: a network returning logits (its noise layers draw in
        ``train()`` mode).
    :param int num_data: size :math:`N` of the training set.
    """

    def __init__(self, net, num_data):
        super().__init__()
        if not isinstance(num_data, int) or num_data < 1:
            raise ValueError(f"num_data must be a positive int, got {num_data!r}")
        self.net = net
        self.num_data = num_data

    def forward(self, x, y=None):
        with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
            logits = self.net(x)
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


class NoLatents(nn.Module):
    """The guide of a model without latent sites (:class:`PlainClassifier`)."""

    def forward(self, *args, **kwargs):
        return {}
