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
import time

import torch
import torch.nn.functional as F

from ..nn import load_deterministic_
from .recipe import FlatThenLinear, Recipe
from .training import refuse_invalid_values, refuse_non_finite_step

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
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must have the same, non-zero length, got {len(x)}, {len(y)}")
    recipe = recipe or Recipe()
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, FlatThenLinear(epochs * steps_per_epoch, recipe.flat_fraction)
    )
    history, step = [], 0
    net.train()
    for epoch in range(epochs):
        start, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            with refuse_invalid_values(step + 1):
                loss = F.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = float(loss.detach())
            refuse_non_finite_step(optimizer, step + 1, value)
            optimizer.step()
            scheduler.step()
            loss_sum += value
            step += 1
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / steps_per_epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        if callback is not None:
            callback(epoch + 1, record)
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
