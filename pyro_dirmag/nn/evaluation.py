"""The thesis's three ways to evaluate a noise-regularized network (section 5, eq. 49).

The modes are named as for the Bayesian models (:func:`~pyro_dirmag.infer.predict`, the
command line's metrics):

* ``"mean"``: noise off, every noise replaced by its mean (mean weights; the thesis's
  "deterministic network");
* ``"sample"``: one random draw of the noise, as in training;
* ``"ensemble"``: the predictive probabilities averaged over ``S`` draws,
  ``p(y | x) ~= (1/S) sum_s p(y | x, w_s)``.

Usage::

    model.eval()
    with noise_mode(model, "sample"):
        logits = model(x)                      # one noisy forward pass
    probs = predict_probs(model, x, "ensemble", num_samples=30)

.. note:: ``"deterministic"``, this module's former name of ``"mean"``, is still accepted
    with a ``FutureWarning`` and will be removed.
"""

import contextlib
import warnings

import torch

from .noise import check_choice
from .noisy_layers import NoisyWeightNorm

__all__ = ["EVAL_MODES", "noise_mode", "predict_probs"]

#: The evaluation modes of every model of the package, noisy or Bayesian.
EVAL_MODES = ("mean", "sample", "ensemble")


def _mode(mode, allowed, what):
    """``mode`` checked against ``allowed``, with the deprecated ``"deterministic"`` read
    as ``"mean"``."""
    if mode == "deterministic":
        warnings.warn(
            f"{what} 'deterministic' is deprecated, use 'mean' (the name predict() and the "
            "command line use)",
            FutureWarning,
            stacklevel=4,  # the user's call, through one wrapper (no_grad, contextmanager)
        )
        return "mean"
    return check_choice(mode, allowed, what)


@contextlib.contextmanager
def noise_mode(model, mode):
    """Context manager that sets whether the noisy layers of ``model`` draw noise in
    ``eval()`` mode (``"sample"``) or not (``"mean"``); restores them on exit.
    In ``train()`` mode noise is always drawn.

    :param torch.nn.Module model: a module containing :class:`~pyro_dirmag.nn.NoisyLinear`
        or :class:`~pyro_dirmag.nn.NoisyConv2d` layers.
    :param str mode: ``"mean"`` or ``"sample"``.
    """
    mode = _mode(mode, EVAL_MODES[:2], "noise mode")
    layers = [m for m in model.modules() if isinstance(m, NoisyWeightNorm)]
    saved = [m.sample_in_eval for m in layers]
    try:
        for m in layers:
            m.sample_in_eval = mode == "sample"
        yield model
    finally:
        for m, s in zip(layers, saved, strict=True):
            m.sample_in_eval = s


@torch.no_grad()
def predict_probs(model, x, mode="ensemble", num_samples=30, batch_size=None):
    """Class probabilities of ``model`` (which returns logits) in one evaluation mode.

    The model is put in ``eval()`` mode for the call and its mode restored afterwards.

    :param torch.nn.Module model: maps inputs to logits over the last dimension.
    :param torch.Tensor x: inputs.
    :param str mode: ``"mean"``, ``"sample"`` or ``"ensemble"``.
    :param int num_samples: number ``S`` of noise draws averaged by ``"ensemble"``.
    :param int batch_size: evaluate ``x`` in chunks of this many rows (all at once if None).
    :returns: probabilities, shape ``model(x).shape``.
    """
    mode = _mode(mode, EVAL_MODES, "evaluation mode")
    if mode == "ensemble" and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    was_training = model.training
    model.eval()
    try:
        chunks = [x] if batch_size is None else torch.split(x, batch_size)
        out = []
        for chunk in chunks:
            if mode == "mean":
                with noise_mode(model, "mean"):
                    out.append(model(chunk).softmax(-1))
                continue
            with noise_mode(model, "sample"):
                draws = num_samples if mode == "ensemble" else 1
                probs = model(chunk).softmax(-1)
                for _ in range(draws - 1):
                    probs += model(chunk).softmax(-1)
                out.append(probs / draws)
        return torch.cat(out)
    finally:
        model.train(was_training)
