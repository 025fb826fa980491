r"""
Pre-training: the first epochs of a run train the deterministic twin of a DirMag
classifier (the same architecture with plain weight-normalized layers), whose weights
then initialize the DirMag layers (thesis, section 6: start the variational phase from
a network that already fits the data; the noise and the prior then only have to decide
what to remove).

The twin trains by cross-entropy, which is :math:`1/N` times the ELBO of the
classifier with every latent fixed at its mean, with :class:`torch.optim.Adam` at the
recipe's ``lr`` and a :class:`~pyro_dirmag.infer.FlatThenLinear` schedule over the
pre-training epochs. A twin epoch costs about as much as a plain network's (no noise
is drawn), so pre-training is cheap next to the variational epochs it replaces.
"""

import copy
import math

import torch
import torch.nn.functional as F

from ..nn import load_deterministic_
from .recipe import Recipe
from .training import check_run_sizes, run_epochs

__all__ = ["pretrain_", "train_deterministic"]


def train_deterministic(
    net,
    x,
    y,
    *,
    epochs,
    batch_size=100,
    recipe=None,
    callback=None,
    generator=None,
):
    r"""
    Trains a plain classifier ``net`` (logits out) on ``(x, y)`` by cross-entropy:
    Adam at ``recipe.lr``, :class:`~pyro_dirmag.infer.FlatThenLinear` with
    ``recipe.flat_fraction`` over the ``epochs``. A non-finite loss or gradient stops
    the run before any parameter is updated
    (:class:`~pyro_dirmag.infer.NonFiniteLossError`).

    :param torch.nn.Module net: the network, trained in place (``train()`` mode, left in
        ``eval()`` mode).
    :param int epochs: passes over the data.
    :param int batch_size: mini-batch size.
    :param Recipe recipe: default :class:`~pyro_dirmag.infer.Recipe`.
    :param callable callback: called as ``callback(epoch, record)`` after each epoch,
        ``record`` a dict with ``epoch``, ``loss`` (mean cross-entropy), ``lr`` and
        ``seconds``.
    :param torch.Generator generator: for the mini-batch order.
    :returns: the list of per-epoch records.
    """
    check_run_sizes(x, y, epochs, batch_size)
    recipe = recipe or Recipe()
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    scheduler = recipe.lr_scheduler(optimizer, epochs * math.ceil(len(x) / batch_size))
    net.train()
    history = run_epochs(
        x,
        y,
        lambda xb, yb, step: F.cross_entropy(net(xb), yb),
        optimizer,
        scheduler,
        epochs=epochs,
        batch_size=batch_size,
        summary=lambda mean_loss, steps_done: {"loss": mean_loss},
        callback=callback,
        generator=generator,
    )
    net.eval()
    return history


def pretrain_(model, twin, x, y, *, epochs, batch_size=100, recipe=None, **kwargs):
    r"""
    Pre-trains ``model``'s DirMag layers in place: trains ``twin`` (a plain network with
    the same layers, e.g. :func:`pyro_dirmag.models.deterministic_model`) with
    :func:`train_deterministic`, then copies its weights into ``model`` with
    :func:`~pyro_dirmag.nn.load_deterministic_`. Build the guide (or run it for the
    first time) only afterwards: it reads its initial magnitudes from the layers.

    The layers are checked against the twin before the training starts, so a mismatch
    fails at once rather than after the epochs.

    :returns: the twin's per-epoch records.
    """
    load_deterministic_(copy.deepcopy(model), twin)  # checks the pairing up front
    history = train_deterministic(
        twin, x, y, epochs=epochs, batch_size=batch_size, recipe=recipe, **kwargs
    )
    load_deterministic_(model, twin)
    return history
