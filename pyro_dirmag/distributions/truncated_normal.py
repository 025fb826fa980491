r"""
The truncated normal law, accurate far into the tails. Its parts live beside it:
the standardization and the fast-path switch in ``_truncated_normal_std.py``, the
quantile solver and its gradients in ``_truncated_normal_quantile.py``, the moments
and the entropy in ``_truncated_normal_moments.py``.
"""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from .._shapes import broadcast_size, shape_mismatch
from ._normal_tails import log_ndtr_diff
from ._support import all_within
from ._truncated_normal_moments import _ClosedFormEntropy, entropy_quadrature, moments
from ._truncated_normal_quantile import _ImplicitICDF
from ._truncated_normal_std import (
    _compact,
    _fast,
    _tracing,
    choose_paths,
    fast_paths,
    log_prob_std,
    standardize,
)

__all__ = ["TruncatedNormal", "fast_paths"]

_EMPTY = torch.Size()


class TruncatedNormal(TorchDistribution):
    r"""
    Normal distribution truncated to ``[low, high]``, accurate far into the tails.

    .. math::

        p(x) = \frac{\phi((x - \mu)/\sigma)}{\sigma\,(\Phi(\beta) - \Phi(\alpha))},
        \qquad \alpha = \frac{\mathrm{low} - \mu}{\sigma},\quad
        \beta = \frac{\mathrm{high} - \mu}{\sigma},

    on ``low <= x <= high``; either bound may be infinite and parameters broadcast.
    It is the angle law of the plane-rotation posterior of [1] (section 3.2.3,
    ``TN(mu, sigma^2)`` on ``[0, pi/2]``), whose entropy enters the KL to the uniform prior.
    Samples invert the cdf and are reparametrized in all four parameters by implicit
    differentiation [2], ``dx/dtheta = -(dF(x; theta)/dtheta) / p(x)``, formed in log space.

    The textbook inverse ``mu + sigma Phi^{-1}(Phi(alpha) + u Z)`` ([1], appendix B, eq. 32)
    fails 6 standard deviations out in float32, where ``Phi(alpha)`` rounds to 1. Here
    every quantity is computed after reflecting the interval into the left tail
    (``x -> -x`` when ``alpha > 0``), in log space with the Gaussian factor written out
    exactly, and relative to the bound nearest the mode. Densities, cdfs and quantiles
    stay accurate, and samples finite and inside ``[low, high]``, with bounds 40 standard
    deviations out in float32 and 1000 in float64 (``log_prob`` and ``cdf`` agree with
    50-digit references to ~1e-15 in float64). Deep-tail quantiles solve the tail
    equation by Newton's method in the offset from the near bound
    (:func:`~pyro_dirmag.distributions._normal_tails.tail_offset`).

    The per-law quantities (standardized bounds, normalizer, masks) are computed on the
    parameters as given, before broadcasting, and on the originals of an ``expand``-ed
    law (stride-0 dimensions of parameter tensors are dropped too): many copies of few
    laws, e.g. ``d.expand((batch, units))``, cost per draw what ``d.rsample((batch,))``
    does, in the forward and the backward pass alike. They are computed once per law
    (and shared with expanded copies) for sampling, quantiles and densities that need
    no gradient; differentiable ones are formed per call (see ``_per_law``).

    Example::

        def model():
            angle = pyro.sample("angle", TruncatedNormal(0.3, 0.1, 0.0, math.pi / 2))

    .. note:: ``mean``, ``variance`` and ``entropy`` use a 64-point Gauss-Legendre rule on
        the offset from the mode of the truncated density (exact to rounding and
        differentiable): the closed forms cancel catastrophically in the tails, the
        variance by a factor ``alpha**4`` (scipy's is negative 1000 sd out). The
        entropy takes its closed form, in float64, when every law of the batch lies
        where it does not cancel (finite scalar bounds, intervals at least one standard
        deviation wide reaching within 5 of the mode: the variational angle
        posterior's regime).

    .. note:: Each operation has one reference path, valid for every law, and at most
        one fast path, taken by a batch whose laws all qualify: the standardization
        (``erf``/``erfc`` differences for finite scalar bounds near the mode), the
        entropy (the closed form) and the gradients of ``rsample`` (four batch sums per
        law near the mode). One function chooses them per batch of laws
        (``_truncated_normal_std.choose_paths``);
        ``with pyro_dirmag.distributions.truncated_normal.fast_paths(False):`` runs the
        reference paths only (the tests compare the two through it).

    **References:**

    [1] P. Kirichenko (2018) "Investigation of Bayesian Regularization Methods for
        Neural Networks" (BSc thesis, HSE; in Russian), appendix B

    [2] M. Figurnov, S. Mohamed, A. Mnih (2018) "Implicit Reparameterization Gradients"

    [3] M. Maechler (2012) "Accurately Computing :math:`\log(1 - e^{-|a|})`"

    :param torch.Tensor loc: mean of the untruncated normal.
    :param torch.Tensor scale: standard deviation of the untruncated normal (> 0).
    :param torch.Tensor low: lower bound, may be ``-inf``.
    :param torch.Tensor high: upper bound, may be ``inf``; must exceed ``low``.
    """

    arg_constraints = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "low": constraints.real,
        "high": constraints.real,
    }
    has_rsample = True

    def __init__(self, loc, scale, low, high, *, validate_args=None):
        try:
            self.loc, self.scale, self.low, self.high = broadcast_all(loc, scale, low, high)
        except RuntimeError:
            params = {"loc": loc, "scale": scale, "low": low, "high": high}
            shapes = {name: getattr(p, "shape", ()) for name, p in params.items()}
            raise shape_mismatch(**shapes) from None
        # The parameters before broadcasting (stride-0 dimensions dropped): every per-law
        # quantity (standardized bounds, normalizer, masks, moments) is computed on these
        # and broadcast, so that a law expanded to many copies costs one law, not one per
        # copy, and gradients are summed onto them once (see _ImplicitICDF).
        self._compact = tuple(
            _compact(p)
            if torch.is_tensor(p)
            else torch.as_tensor(p, dtype=b.dtype, device=b.device)
            for p, b in zip((loc, scale, low, high), self._params_full(), strict=True)
        )
        # per-law quantities, shared with expanded copies (see _per_law)
        self._cache = {}
        super().__init__(self.loc.shape, validate_args=validate_args)
        if self._validate_args and not torch.all(self.low < self.high):
            raise ValueError(
                f"Expected parameter low (Tensor of shape {tuple(self.low.shape)}) to be less "
                f"than parameter high (Tensor of shape {tuple(self.high.shape)}), but found "
                "low >= high or a NaN bound."
            )

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TruncatedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        for name in ("loc", "scale", "low", "high"):
            setattr(new, name, getattr(self, name).expand(batch_shape))
        new._compact = self._params()  # they broadcast to batch_shape
        new._cache = self._cache  # the same laws: their per-law quantities are shared
        super(TruncatedNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _params_full(self):
        return self.loc, self.scale, self.low, self.high

    def _params(self):
        """The compact parameters: they broadcast to ``batch_shape``, maybe not filling it."""
        return getattr(self, "_compact", None) or self._params_full()

    def _full(self, t, shape=_EMPTY):
        """``t`` (computed from compact parameters) broadcast to ``shape + batch_shape``."""
        return t.expand(broadcast_size(t.shape, shape, self.batch_shape))

    def _per_law(self):
        """The laws' fast paths and their detached standardization (standardized bounds,
        normalizer, masks), shaped like the compact parameters; ``None`` under a trace.

        Computed once per law: cached on the instance (and shared with its expanded
        copies), keyed by the parameters' version counters and the :func:`fast_paths`
        switch, so that an in-place update of a parameter (an optimizer step on a law
        kept across steps) recomputes them. Only detached tensors and flags are cached:
        no autograd graph is kept, so gradients, double backward and ``create_graph``
        see exactly what an uncached law gives them (``torch.distributions.utils.
        lazy_property`` would cache a graph, freed by the first ``backward``, and never
        notice an in-place update). ``Tensor._version`` is torch's own in-place check for
        autograd (an update through ``.data`` bypasses both); the tests fail loudly if it
        stops counting in-place updates.
        """
        params = self._params()
        if _tracing() or any(t.is_inference() for t in params):
            return None  # (inference tensors have no version counter)
        key = (_fast(), *(t._version for t in params))
        cached = self._cache.get("per_law")
        if cached is None or cached[0] != key:
            detached = tuple(t.detach() for t in params)
            paths = choose_paths(*detached)
            cached = (key, (paths, standardize(*detached, paths)))
            self._cache["per_law"] = cached
        return cached[1]

    def _paths(self):
        per_law = self._per_law()
        return choose_paths(*self._params()) if per_law is None else per_law[0]

    def _std(self):
        """Standardized bounds and the normalizer, free of inf * 0 in their gradients.

        Shaped like the compact parameters (see ``__init__``), not the batch. The cached
        detached ones when no gradient is asked for; else computed anew on the parameters
        (a cached differentiable copy would tie every call to the autograd graph of the
        first: freed by its ``backward``, and wrong after an in-place update).
        """
        params = self._params()
        per_law = self._per_law()
        if per_law is not None and not (
            torch.is_grad_enabled() and any(t.requires_grad for t in params)
        ):
            return per_law[1]
        paths = choose_paths(*params) if per_law is None else per_law[0]
        return standardize(*params, paths)

    def log_prob(self, value):
        inside = None
        if self._validate_args:
            inside = self._validate_sample(value)
        p = self._std()
        return self._full(log_prob_std(p, value, inside), value.shape)

    def _validate_sample(self, value):
        """Torch's checks, the support by one min/max pass when the bounds are scalars
        (the generic check compares every value with the broadcast bounds); anything
        else, and any failure, goes to torch's check and its error message. Returns
        whether every value was found inside by the quick pass (``log_prob`` then skips
        its own)."""
        _, _, low, high = self._params()
        if not torch.is_tensor(value) or not all_within(value, low, high):
            super()._validate_sample(value)
            return False
        try:
            broadcast_size(value.shape, self.batch_shape)
        except ValueError:
            super()._validate_sample(value)
        return True

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        p = self._std()
        # At or beyond a bound F is 0 or 1; evaluate those at an interior stand-in so that
        # log(0) never reaches the gradients.
        below, above = value <= p.low, value >= p.high
        inner = torch.where(
            p.low_inf,
            torch.where(p.high_inf, p.loc, p.high_f - p.scale),
            torch.where(p.high_inf, p.low_f + p.scale, 0.5 * (p.low_f + p.high_f)),
        )
        x = torch.where(below | above, inner, value)
        z = (x - p.loc) / p.scale
        omega_a = torch.where(p.low_inf, math.inf, (x - p.low_f) / p.scale)
        omega_b = (p.high_f - x) / p.scale
        s1, c1, _, _ = log_ndtr_diff(p.alpha, z, omega_a)
        # log F = s1 - s + log phi(c1) - log phi(c); c1 - c = z - beta = -omega_b exactly
        # when both intervals lie left of 0 and end at z and beta.
        dc = torch.where(~p.flip & p.left, -omega_b, c1 - p.c)
        log_f = s1 - p.s - 0.5 * dc * (c1 + p.c)
        cdf = torch.exp(log_f).clamp(max=1.0)
        return self._full(torch.where(below, 0.0, torch.where(above, 1.0, cdf)), value.shape)

    def icdf(self, value):
        value = torch.as_tensor(value, dtype=self.loc.dtype, device=self.loc.device)
        if self._validate_args and not _tracing():
            if not torch.all((value >= 0) & (value <= 1)):
                raise ValueError(f"Expected icdf value in [0, 1], found {value}")
        shape = broadcast_size(value.shape, self.batch_shape)
        value = value.expand(shape)
        x = _ImplicitICDF.apply(value, 1 - value.detach(), False, self._per_law(), *self._params())
        # the ends exactly (the solvers land within an ulp or two of them)
        _, _, low, high = self._params()
        return torch.where(value == 0, low, torch.where(value == 1, high, x))

    def rsample(self, sample_shape=_EMPTY):
        shape = self._extended_shape(sample_shape)
        r = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        # torch.rand returns multiples of 2^-m (m = 24 in float32, 53 in float64), 0
        # included; shift to the cell midpoints (k + 1/2) 2^-m so that neither u nor 1 - u
        # is 0 (no infinite draws), and form 1 - u exactly rather than by rounding.
        # Sampling needs no mirror image of u: the draw is made in the reflected frame.
        half = torch.finfo(r.dtype).eps / 4
        w = torch.rsub(r, 1).sub_(half)
        u = r.add_(half)
        return _ImplicitICDF.apply(u, w, True, self._per_law(), *self._params())

    def _moments(self):
        p = self._std()
        return (p, *moments(p))

    @property
    def mean(self):
        p, mean, _, _ = self._moments()
        return self._full(p.loc + p.scale * (p.c + mean))

    @property
    def variance(self):
        p, _, var, _ = self._moments()
        return self._full(p.scale.square() * var)

    def entropy(self):
        # reference: the quadrature; fast path: the closed form (see choose_paths)
        if self._paths().entropy:
            return self._full(_ClosedFormEntropy.apply(*self._params()))
        return self._full(entropy_quadrature(self._std()))
