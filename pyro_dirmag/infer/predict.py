r"""
Predictions of a DirMag model under its own likelihood, from the mean network, from one
sampled network, or from an ensemble of networks (thesis eq. 49; docs/MATH.md section 6).

The model is run on chunks of the input, so memory stays bounded whatever the size of
the input: the per-example latent copies of the DirMag sites (one per example and
unit) times ``num_samples`` would otherwise grow without bound.

* ``"mean"``: every DirMag latent at its posterior mean (:math:`g = m`,
  :math:`\epsilon = E[\epsilon]`, :math:`\phi = E[\phi] = 0`), no noise; other latents
  (fitted by ``DirMagGuide(other=...)`` or an ``AutoGuideList``) at their posterior
  median;
* ``"sample"``: one network, i.e. one global draw of every latent and one :math:`\Phi`
  per layer, used for the whole input (all chunks);
* ``"ensemble"``: ``num_samples`` posterior draws, averaged. Each example gets its own
  independent draw (the per-example sites of the guide), which has the same
  expectation per example as averaging over whole networks.

**What is returned follows the likelihood**, the distribution at the model's one sample
site that the guide does not provide (``site=`` picks one when there are several):

* ``Categorical`` / ``OneHotCategorical`` / ``Bernoulli``: the predictive probabilities,
  :math:`\bar p = \frac1S \sum_s p_s`, shaped like the distribution's ``probs``;
* any other distribution with a ``mean`` and a ``variance`` (``Normal``, ``StudentT``,
  ``Laplace``, ``Poisson``, ...): :class:`PredictiveMoments` of the predictive
  mixture, by the law of total variance

  .. math::

      E[y] = \frac1S \sum_s \mu_s, \qquad
      \mathrm{Var}[y] = \frac1S \sum_s \sigma_s^2
          + \frac1S \sum_s \mu_s^2 - \Big(\frac1S \sum_s \mu_s\Big)^2 ,

  the first term the noise of the likelihood (aleatoric), the rest the spread of the
  networks (epistemic). A ``StudentT`` with ``df <= 2`` has an infinite variance,
  reported as such;
* anything else raises a ``ValueError``.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from pyro import poutine
from pyro.distributions import Bernoulli, Categorical, MaskedDistribution, OneHotCategorical
from pyro.infer.autoguide import AutoGuide, AutoGuideList
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent

from ..checkpoint import check_params
from ..nn.dirmag import direction_noise
from ..nn.evaluation import EVAL_MODES
from .guide import DirMagGuide

__all__ = ["PREDICT_MODES", "PredictiveMoments", "predict"]

#: The modes of :func:`predict`: the package's one vocabulary,
#: :data:`pyro_dirmag.nn.EVAL_MODES`.
PREDICT_MODES = EVAL_MODES
_PROBABILITIES = (Categorical, OneHotCategorical, Bernoulli)


class PredictiveMoments(NamedTuple):
    """Mean and variance of the predictive distribution, each batch first."""

    mean: torch.Tensor
    variance: torch.Tensor


@torch.no_grad()
def predict(
    model: Callable,
    guide: AutoGuide,
    x: torch.Tensor,
    mode: str = "ensemble",
    num_samples: int = 50,
    batch_size: int = 256,
    site: str | None = None,
) -> torch.Tensor | PredictiveMoments:
    """
    The predictive distribution of a DirMag model at the inputs ``x``, summarized as
    its likelihood allows (see the module notes)::

        probs = predict(classifier, guide, x_test)                 # (N, classes)
        mean, variance = predict(regression, guide, x_test)        # (N,), (N,)

    :param model: the model, called as ``model(x_chunk)``.
    :param guide: its fitted guide: a :class:`~pyro_dirmag.infer.DirMagGuide` (with or
        without ``other=``), or an ``AutoGuideList`` holding one (``"ensemble"`` mode
        takes any Pyro guide).
    :param torch.Tensor x: inputs, batch first.
    :param str mode: ``"mean"``, ``"sample"`` or ``"ensemble"``.
    :param int num_samples: networks averaged in ``"ensemble"`` mode.
    :param int batch_size: examples per chunk (bounds the memory).
    :param str site: the likelihood's site name; by default the one sample site of the
        model that the guide does not provide.
    :returns: probabilities (a tensor) for a ``Categorical``, ``OneHotCategorical`` or
        ``Bernoulli`` likelihood, else :class:`PredictiveMoments`.
    :raises ValueError: for a likelihood it cannot summarize, an ambiguous or unknown
        ``site``, or a param store that disagrees with the model's parameters (see
        :func:`pyro_dirmag.checkpoint.check_params`).
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
    if getattr(guide, "prototype_trace", None) is None:
        with poutine.block():
            guide(chunks[0])
    # Also brings the guide's parameters up to date with the param store.
    check_params(model, guide, chunks[0][:1])
    summary = _Summary()
    if mode == "ensemble":
        for chunk in chunks:
            acc = _Accumulator()
            for _ in range(num_samples):
                guide_trace = poutine.trace(guide).get_trace(chunk)
                replayed = poutine.replay(model, trace=guide_trace)
                trace = poutine.trace(replayed).get_trace(chunk)
                acc.add(_likelihood(trace, guide_trace.nodes, site))
            summary.append(acc)
        return summary.result()
    values = _point_values(guide, mode, chunks[0])
    conditioned = poutine.condition(model, data=values)
    with direction_noise(model, "mean" if mode == "mean" else "shared", share=True):
        for chunk in chunks:
            acc = _Accumulator()
            trace = poutine.trace(conditioned).get_trace(chunk)
            acc.add(_likelihood(trace, values, site))
            summary.append(acc)
    return summary.result()


def _guide_parts(guide):
    """The DirMag guides and the other autoguides that make up ``guide``."""
    if isinstance(guide, DirMagGuide):
        return [guide], [] if guide.other is None else [guide.other]
    if isinstance(guide, AutoGuideList):
        dirmag, other = [], []
        for part in guide:
            d, o = _guide_parts(part)
            dirmag += d
            other += o
        return dirmag, other
    if isinstance(guide, AutoGuide):
        return [], [guide]
    raise ValueError(
        f"guide: modes 'mean' and 'sample' need a DirMagGuide (alone or in an AutoGuideList),"
        f" got {type(guide).__name__}; mode='ensemble' takes any guide"
    )


def _point_values(guide, mode, example):
    """One value per latent site: the posterior means (mean) or one draw (sample)."""
    dirmag, others = _guide_parts(guide)
    if not dirmag:
        raise ValueError(
            f"guide: modes 'mean' and 'sample' need a DirMagGuide, got {type(guide).__name__}"
        )
    values = {}
    for part in dirmag:
        values.update(part.posterior_mean() if mode == "mean" else part.sample_posterior())
    for part in others:
        if mode == "mean":
            try:
                values.update(part.median(example))
            except NotImplementedError as error:
                raise ValueError(
                    f"guide: mode='mean' needs the posterior median of {type(part).__name__},"
                    " which it does not provide; use mode='sample' or 'ensemble'"
                ) from error
        else:
            trace = poutine.trace(part).get_trace(example)
            values.update(
                {
                    name: node["value"]
                    for name, node in trace.iter_stochastic_nodes()
                    if not site_is_subsample(node)
                }
            )
    return values


def _likelihood(trace, provided, site):
    """The distribution at the likelihood site of a model trace."""
    if site is not None:
        if site not in trace.nodes or trace.nodes[site]["type"] != "sample":
            raise ValueError(f"site: the model has no sample site {site!r}")
        return trace.nodes[site]["fn"]
    names = [
        name
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not site_is_subsample(node) and name not in provided
    ]
    if len(names) != 1:
        raise ValueError(
            f"site: the model has {len(names)} sample sites that the guide does not provide "
            f"({names}); pass site= to say which one is the likelihood"
        )
    return trace.nodes[names[0]]["fn"]


def _base(fn):
    while isinstance(fn, (Independent, MaskedDistribution)):
        fn = fn.base_dist
    return fn


class _Accumulator:
    """Running sums over the draws of one chunk."""

    def __init__(self):
        self.count = 0
        self.probs = None
        self.moments = None

    def add(self, fn):
        base = _base(fn)
        self.count += 1
        if isinstance(base, _PROBABILITIES):
            p = base.probs
            self.probs = p if self.probs is None else self.probs + p
            return
        try:
            mean, variance = fn.mean, fn.variance
        except NotImplementedError as error:
            raise ValueError(
                f"predict cannot summarize a {type(base).__name__} likelihood: it has no "
                "mean and variance, and is not Categorical, OneHotCategorical or Bernoulli"
            ) from error
        mean = mean.expand(fn.shape())
        variance = variance.expand(fn.shape())
        sums = (mean, mean * mean, variance)
        if self.moments is None:
            self.moments = list(sums)
        else:
            self.moments = [a + b for a, b in zip(self.moments, sums, strict=True)]


class _Summary:
    def __init__(self):
        self.probs, self.means, self.variances = [], [], []

    def append(self, acc):
        n = acc.count
        if acc.probs is not None:
            self.probs.append(acc.probs / n)
            return
        s1, s2, sv = acc.moments
        mean = s1 / n
        # law of total variance; the clamp removes rounding below zero
        spread = (s2 / n - mean * mean).clamp_min(0)
        self.means.append(mean)
        self.variances.append(sv / n + spread)

    def result(self):
        if self.probs:
            return torch.cat(self.probs)
        return PredictiveMoments(torch.cat(self.means), torch.cat(self.variances))
