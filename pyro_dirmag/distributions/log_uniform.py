import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from .._shapes import broadcast_size, shape_mismatch
from ._support import all_within

_EMPTY = torch.Size()


class _NegLogAbs(torch.autograd.Function):
    r"""``-log|x|`` with the derivative :math:`-1/x` everywhere, including ``x = 0``:
    ``-inf`` at ``+0`` and ``+inf`` at ``-0`` (the limits from the zero's side). Autograd
    through ``abs`` and ``log`` gives ``0 * inf = NaN`` there (``abs``' subgradient 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs().log().neg()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return -grad / x  # differentiable: second derivatives are 1 / x^2


class LogUniform(TorchDistribution):
    r"""
    Improper log-uniform (scale-invariant) prior on the real line,

    .. math:: p(x) \propto \frac{1}{|x|}, \qquad \log p(x) = -\log |x|,

    the magnitude prior of sparse variational dropout [1]. It is improper: it can
    score a value (``+inf`` at 0, never NaN, with the derivative :math:`-1/x`, an
    infinity of the zero's sign at 0) but not be sampled, so use it where
    only ``log_prob`` and the registered
    ``kl_divergence(Normal, LogUniform)`` are needed (the Molchanov et al.
    approximation, see :mod:`pyro_dirmag.distributions.kl`). Where a sampleable
    prior is required (Pyro's ``Predictive`` and autoguide prototype traces draw
    every latent from its prior), use :class:`SymmetricLogUniform` instead.

    **References:**

    [1] D. Molchanov, A. Ashukha, D. Vetrov (2017) "Variational Dropout Sparsifies
        Deep Neural Networks"

    :param torch.Size batch_shape: Batch shape of the prior.
    """

    arg_constraints = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, batch_shape=_EMPTY, *, validate_args=None):
        batch_shape = torch.Size(batch_shape)
        if any(size < 0 for size in batch_shape):
            raise ValueError(
                f"Expected parameter batch_shape to have sizes >= 0, but found {batch_shape}"
            )
        super().__init__(batch_shape, validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, **arg_shapes):
        """Not available: the batch shape is the constructor's argument itself, not the
        shape of a tensor parameter, so it cannot be inferred from argument shapes.

        :raises NotImplementedError: always.
        """
        raise NotImplementedError(
            "LogUniform has no tensor parameters: its batch_shape is given directly, "
            "LogUniform(batch_shape), and cannot be inferred from argument shapes"
        )

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        # Tensor.expand's rule: existing dimensions keep their size or grow from 1.
        if len(batch_shape) < len(self.batch_shape) or any(
            old not in (1, new)
            for old, new in zip(self.batch_shape[::-1], batch_shape[::-1], strict=False)
        ):
            raise ValueError(
                f"Expected parameter batch_shape {tuple(batch_shape)} to be an expansion of "
                f"the batch shape {tuple(self.batch_shape)} (sizes equal or grown from 1)"
            )
        new = self._get_checked_instance(LogUniform, _instance)
        super(LogUniform, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    def _improper(self, *args, **kwargs):
        raise NotImplementedError(
            "LogUniform is an improper prior (p(x) proportional to 1/|x| does not "
            "normalize) and cannot be sampled; use SymmetricLogUniform(low, high) "
            "where samples are needed"
        )

    sample = rsample = _improper

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = broadcast_size(value.shape, self.batch_shape)
        return _NegLogAbs.apply(value).expand(shape)


class _SymmetricInterval(constraints.Constraint):
    """Constrain to ``{x : low <= |x| <= high}``."""

    is_discrete = False
    event_dim = 0

    def __init__(self, low, high):
        self.low = low
        self.high = high
        super().__init__()

    def check(self, value):
        a = value.abs()
        return (a >= self.low) & (a <= self.high)

    def __repr__(self):
        return f"SymmetricInterval(low={self.low}, high={self.high})"


class SymmetricLogUniform(TorchDistribution):
    r"""
    Proper log-uniform law on :math:`\{x : a \le |x| \le b\}` (``a = low``,
    ``b = high``), the sampleable stand-in for :class:`LogUniform`,

    .. math::

        p(x) = \frac{1}{2 |x| \log(b / a)}, \qquad
        x = s\, e^{u}, \quad s = \pm 1, \quad u \sim \mathrm{Uniform}(\log a, \log b).

    Use it as the magnitude prior of a Bayesian layer wherever the prior must be
    sampled (``Predictive``, autoguide initialization). Its registered
    ``kl_divergence(Normal, SymmetricLogUniform)`` is the Molchanov et al.
    approximation of the improper prior shifted by :math:`\log(2 \log(b/a))`; see
    :mod:`pyro_dirmag.distributions.kl`. ::

        g = pyro.sample("g", SymmetricLogUniform(1e-4, 1e4).expand([out]).to_event(1))

    :param torch.Tensor low: Positive lower bound :math:`a` of :math:`|x|`.
    :param torch.Tensor high: Upper bound :math:`b > a` of :math:`|x|`.
    """

    arg_constraints = {"low": constraints.positive, "high": constraints.positive}
    has_rsample = True

    def __init__(self, low, high, *, validate_args=None):
        low, high = (
            x if isinstance(x, torch.Tensor) else torch.tensor(float(x)) for x in (low, high)
        )
        try:
            self.low, self.high = torch.broadcast_tensors(low, high)
        except RuntimeError:
            raise shape_mismatch(low=low.shape, high=high.shape) from None
        super().__init__(self.low.shape, validate_args=validate_args)
        if self._validate_args and not (self.low < self.high).all():
            raise ValueError(
                "Expected parameter high to be greater than low, but found "
                f"low={self.low} and high={self.high}"
            )

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SymmetricLogUniform, _instance)
        batch_shape = torch.Size(batch_shape)
        new.low = self.low.expand(batch_shape)
        new.high = self.high.expand(batch_shape)
        super(SymmetricLogUniform, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return _SymmetricInterval(self.low, self.high)

    @property
    def _log_ratio(self):
        # log(b/a) = log1p((b - a)/a): b - a is exact for b <= 2a (Sterbenz), where the
        # difference of logarithms would cancel (narrow intervals in float32).
        return torch.log1p((self.high - self.low) / self.low)

    def rsample(self, sample_shape=_EMPTY):
        shape = self._extended_shape(sample_shape)
        return self.icdf(torch.rand(shape, dtype=self.low.dtype, device=self.low.device))

    def log_prob(self, value):
        if self._validate_args and not torch.is_tensor(value):
            super()._validate_sample(value)  # torch's error for a non-tensor value
        a = value.abs()
        inside = self._all_inside(a)
        if self._validate_args:
            self._validate_sample(value, inside)
        lp = torch.add(a.log(), (2 * self._log_ratio).log()).neg_()
        if inside:
            return lp
        return torch.where(self.support.check(value), lp, torch.full_like(lp, -math.inf))

    def _all_inside(self, a):
        """Whether every ``|value|`` lies in ``[low, high]``, from one min/max pass when the
        bounds are the same for every law (as for a layer's prior); else ``False``."""
        return all_within(a, self.low, self.high)

    def _validate_sample(self, value, inside=None):
        # The support check by one min/max pass where possible (see log_prob; ``inside``:
        # its result, if known); any other case, and any failure, goes to torch's check
        # and its message.
        if inside is None and torch.is_tensor(value):
            inside = self._all_inside(value.abs())
        if not torch.is_tensor(value) or not inside:
            return super()._validate_sample(value)
        try:
            broadcast_size(value.shape, self.batch_shape)
        except ValueError:
            super()._validate_sample(value)

    def cdf(self, value):
        if self._validate_args:
            self._validate_sample(value)
        a = value.abs().clamp(self.low, self.high)
        half = 0.5 * torch.log1p((a - self.low) / self.low) / self._log_ratio
        return torch.where(value < 0, 0.5 - half, 0.5 + half)

    def icdf(self, value):
        # Inverting cdf: u < 1/2: x = -a (b/a)^(1 - 2u); u >= 1/2: x = a (b/a)^(2u - 1).
        neg = value < 0.5
        e = torch.where(neg, 1 - 2 * value, 2 * value - 1)
        # a (b/a)^e, kept inside [a, b] against rounding (narrow intervals in float32)
        mag = (self.low * torch.exp(e * self._log_ratio)).clamp(self.low, self.high)
        return torch.where(neg, -mag, mag)

    @property
    def mean(self):
        return torch.zeros_like(self.low)

    @property
    def variance(self):
        return (self.high - self.low) * (self.high + self.low) / (2 * self._log_ratio)

    def entropy(self):
        return 0.5 * (self.low.log() + self.high.log()) + (2 * self._log_ratio).log()
