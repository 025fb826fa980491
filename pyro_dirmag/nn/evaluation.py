"""The thesis's three ways to evaluate a noise-regularized network (section 5, eq. 49).

* ``"deterministic"``: noise off, every noise replaced by its mean (mean weights);
* ``"sample"``: one random draw of the noise, as in training;
* ``"ensemble"``: the predictive probabilities averaged over ``S`` draws,
  ``p(y | x) ~= (1/S) sum_s p(y | x, w_s)``.

Usage::

    model.eval()
    with noise_mode(model, "sample"):
        logits = model(x)                      # one noisy forward pass
    probs = predict_probs(model, x, "ensemble", num_samples=30)
"""

import contextlib

import torch

from .noise import check_choice
from .noisy_layers import NoisyWeightNorm

__all__ = ["EVAL_MODES", "noise_mode", "predict_probs"]

EVAL_MODES = ("deterministic", "sample", "ensemble")


@contextlib.contextmanager
def noise_mode(model, mode):
    """Context manager that sets whether the noisy layers of ``model`` draw noise in
    ``eval()`` mode (``"sample"``) or not (``"deterministic"``); restores them on exit.
    In ``train()`` mode noise is always drawn.

    :param torch.nn.Module model: a module containing :class:`~pyro_dirmag.nn.NoisyLinear`
        or :class:`~pyro_dirmag.nn.NoisyConv2d` layers.
    :param str mode: ``"deterministic"`` or ``"sample"``.
    """
    check_choice(mode, EVAL_MODES[:2], "noise mode")
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
    :param str mode: ``"deterministic"``, ``"sample"`` or ``"ensemble"``.
    :param int num_samples: number ``S`` of noise draws averaged by ``"ensemble"``.
    :param int batch_size: evaluate ``x`` in chunks of this many rows (all at once if None).
    :returns: probabilities, shape ``model(x).shape``.
    """
    check_choice(mode, EVAL_MODES, "evaluation mode")
    if mode == "ensemble" and (not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    was_training = model.training
    model.eval()
    try:
        chunks = [x] if batch_size is None else torch.split(x, batch_size)
        out = []
        for chunk in chunks:
            if mode == "deterministic":
                with noise_mode(model, "deterministic"):
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
