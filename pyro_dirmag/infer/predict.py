r"""
Predictions of a DirMag model: class probabilities from the mean network, from one
sampled network, or from an ensemble of networks (thesis eq. 49; MATH.md section 6).

All three run the model through :class:`pyro.infer.Predictive` on chunks of the input,
so memory stays bounded whatever the size of the input: the per-example latent
copies of the DirMag sites (one per example and unit) times ``num_samples`` would
otherwise grow without bound.

* ``"mean"``: every latent at its posterior mean (:math:`g = m`,
  :math:`\epsilon = E[\epsilon]`, :math:`\phi = E[\phi] = 0`), no noise;
* ``"sample"``: one network, i.e. one global draw of :math:`g, \epsilon` and one
  :math:`\Phi` per layer, used for the whole input (all chunks);
* ``"ensemble"``: probabilities averaged over ``num_samples`` posterior draws. Each
  example gets its own independent draw (the per-example sites of the guide), which
  has the same expectation per example as averaging over whole networks.

The model must return the logits of shape ``(batch, classes)`` (as in the README).
"""

import torch
from pyro import poutine
from pyro.infer import Predictive

from ..checkpoint import check_params
from ..nn.dirmag import direction_noise

__all__ = ["PREDICT_MODES", "predict"]

PREDICT_MODES = ("mean", "sample", "ensemble")


@torch.no_grad()
def predict(model, guide, x, mode="ensemble", num_samples=50, batch_size=256):
    """
    Class probabilities of a DirMag model for the inputs ``x``.

    :param model: the model; called as ``model(x_chunk)`` and returning logits.
    :param guide: its fitted :class:`~pyro_dirmag.infer.DirMagGuide`.
    :param torch.Tensor x: inputs, batch first.
    :param str mode: ``"mean"``, ``"sample"`` or ``"ensemble"``.
    :param int num_samples: networks averaged in ``"ensemble"`` mode.
    :param int batch_size: examples per chunk (bounds the memory).
    :returns: probabilities of shape ``(len(x), classes)``.
    :raises ValueError: if Pyro's param store disagrees with the model's parameters
        (see :func:`pyro_dirmag.checkpoint.check_params`).
    """
    if mode not in PREDICT_MODES:
        raise ValueError(f"mode must be one of {PREDICT_MODES}, got {mode!r}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty tensor with the batch first")
    chunks = x.split(batch_size)
    if guide.prototype_trace is None:
        with poutine.block():
            guide(chunks[0])
    # Also brings the guide's parameters up to date with the param store.
    check_params(model, guide, chunks[0][:1])
    out = []
    if mode == "ensemble":
        predictive = Predictive(
            model, guide=guide, num_samples=num_samples, return_sites=["_RETURN"]
        )
        for chunk in chunks:
            logits = predictive(chunk)["_RETURN"]
            out.append(logits.softmax(-1).mean(0))
        return torch.cat(out)
    values = guide.posterior_mean() if mode == "mean" else guide.sample_posterior()
    predictive = Predictive(
        model,
        posterior_samples={k: v.unsqueeze(0) for k, v in values.items()},
        return_sites=["_RETURN"],
    )
    with direction_noise(model, "mean" if mode == "mean" else "shared", share=True):
        for chunk in chunks:
            out.append(predictive(chunk)["_RETURN"][0].softmax(-1))
    return torch.cat(out)
