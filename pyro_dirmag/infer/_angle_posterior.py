r"""
The angle posterior :math:`\mathcal{TN}(\mu, \sigma, 0, \pi/2)` with a sampler built for
many draws of few distributions.

The guide draws one angle per example and unit (``batch x units`` draws of only
``units`` distinct laws). :class:`~pyro_dirmag.distributions.TruncatedNormal` samples
each draw through a robust log-space inverse CDF with implicit gradients, whose cost
per draw dominated a training step. :class:`AngleTruncatedNormal` keeps every other
method (density, entropy, KL registrations, moments) and samples by the inverse CDF
with the per-law work done once per unit:

.. math::

    \epsilon = \mu + \sigma\, \Phi^{-1}\big(\Phi(\alpha) + U (\Phi(\beta) - \Phi(\alpha))\big),
    \qquad U \sim \mathcal{U}(0, 1),

in float64, in the mirrored frame (:math:`x \to -x`) when :math:`\alpha > 0`, so that both
standardized bounds lie where :math:`\Phi` keeps its relative precision (MATH.md
section 2). Per draw this costs one :math:`\Phi^{-1}` and a few products; the pathwise
gradient is the implicit one (see :class:`_InverseCDF`), a few more products. Laws
whose bounds both lie more than ``_DEEP`` standard deviations into one tail (where
:math:`\Phi` underflows even in float64) are sampled by the parent class.
"""

import math

import torch

from ..distributions import TruncatedNormal

__all__ = ["AngleTruncatedNormal"]

_DEEP = 30.0
_FLOAT32_TAIL = 8.0
_EMPTY = torch.Size()


class _InverseCDF(torch.autograd.Function):
    r"""Draws by the inverse CDF; the pathwise gradient is the implicit one.

    With :math:`F` the CDF, :math:`\zeta, \alpha, \beta` the standardized draw and
    bounds, and :math:`F(x) = U` exactly (inverse CDF), :math:`dx/d\theta =
    -(\partial F / \partial \theta) / p(x)` gives::

        d_lo = (1 - U) phi(alpha) / phi(zeta),   d_hi = U phi(beta) / phi(zeta)
        dx/dloc = 1 - d_lo - d_hi,               dx/dscale = zeta - alpha d_lo - beta d_hi

    evaluated in the working (possibly mirrored) frame, in the precision of the draw
    (float64, or float32 where the forward pass chose it). The bounds are constants
    here (no gradient).
    """

    @staticmethod
    def forward(ctx, loc, scale, low, high, sample_shape):
        dtype = loc.dtype
        loc64, scale64 = loc.double(), scale.double()
        alpha = (low.double() - loc64) / scale64
        beta = (high.double() - loc64) / scale64
        flip = alpha > 0
        sign = torch.where(flip, -1.0, 1.0).to(torch.float64)
        lo = torch.where(flip, -beta, alpha)
        hi = torch.where(flip, -alpha, beta)
        deep = hi < -_DEEP
        lo = torch.where(deep, torch.zeros_like(lo), lo)  # placeholders, replaced below
        hi = torch.where(deep, torch.ones_like(hi), hi)
        # exp(log_ndtr): torch's ndtr returns 0 below about -8 even in float64.
        p_lo = torch.special.log_ndtr(lo).exp()
        p_hi = torch.special.log_ndtr(hi).exp()
        # Per-draw work in float32 for float32 laws whose working-frame upper bound is
        # not deep in the lower tail (then Phi(hi) >= 6e-16 and every quantity below is
        # a normal float32 number); the inverse CDF is then exact to float32 resolution
        # of U, like any float32 sampler. Otherwise float64.
        if dtype == torch.float32 and bool((hi >= -_FLOAT32_TAIL).all()):
            lo, hi, sign = lo.float(), hi.float(), sign.float()
            p_lo, p_hi = p_lo.float(), p_hi.float()
        shape = torch.Size(sample_shape) + loc.shape
        u = torch.rand(shape, dtype=lo.dtype, device=loc.device)
        z = torch.special.ndtri(p_lo + u * (p_hi - p_lo))
        z = torch.maximum(torch.minimum(z, hi), lo)  # rounding guard
        if z.dtype == dtype:
            x = loc + scale * (sign * z)
        else:
            x = (loc64 + scale64 * sign * z).to(dtype)
        ctx.save_for_backward(z, u, lo, hi, sign)
        ctx.param_shapes = (loc.shape, scale.shape)
        return x, deep

    @staticmethod
    def backward(ctx, grad, _):
        z, u, lo, hi, sign = ctx.saved_tensors
        # Where z is not clamped the exponents stay far below overflow (z lies within a
        # few units of the mass of the working frame). A draw clamped at a bound (p
        # rounded to 0 or 1, probability at the working precision's resolution) could
        # give 0 * inf: the cap keeps that product 0.
        cap = 80.0 if z.dtype == torch.float32 else 700.0
        half_z2 = 0.5 * z * z
        d_lo = (1 - u) * (half_z2 - 0.5 * lo * lo).clamp(max=cap).exp()
        d_hi = u * (half_z2 - 0.5 * hi * hi).clamp(max=cap).exp()
        g = grad.to(z.dtype)
        d_loc = (g * (1 - d_lo - d_hi)).sum_to_size(ctx.param_shapes[0])
        d_scale = (g * sign * (z - lo * d_lo - hi * d_hi)).sum_to_size(ctx.param_shapes[1])
        return d_loc.to(grad.dtype), d_scale.to(grad.dtype), None, None, None


class AngleTruncatedNormal(TruncatedNormal):
    """:class:`~pyro_dirmag.distributions.TruncatedNormal` with a fast batched ``rsample``.

    Gradients flow to ``loc`` and ``scale``; ``low`` and ``high`` are treated as constants.
    """

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(AngleTruncatedNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    def entropy(self):
        r"""
        Closed form (MATH.md section 2), per law, in float64 and in the mirrored frame:

        .. math::

            H = \log(\sqrt{2\pi e}\, \sigma Z)
                + \frac{\alpha\phi(\alpha) - \beta\phi(\beta)}{2Z} ,

        with :math:`\log Z` from ``log_ndtr`` and :math:`\phi(\cdot)/Z` formed in log
        space, so that it stays accurate when both bounds lie in one tail. (The parent's
        quadrature is exact too but costs 64 nodes per law in every training step.)
        """
        dtype = self.loc.dtype
        loc, scale = self.loc.double(), self.scale.double()
        alpha = (self.low.double() - loc) / scale
        beta = (self.high.double() - loc) / scale
        flip = alpha > 0
        lo = torch.where(flip, -beta, alpha)  # H is invariant under the mirror
        hi = torch.where(flip, -alpha, beta)
        log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
        # log Z = log(Phi(hi) - Phi(lo)) = log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi)))
        log_z = log_hi + torch.log(-torch.expm1(log_lo - log_hi))
        half_log_2pi = 0.5 * math.log(2 * math.pi)
        phi_lo = torch.exp(-0.5 * lo * lo - half_log_2pi - log_z)  # phi(lo) / Z
        phi_hi = torch.exp(-0.5 * hi * hi - half_log_2pi - log_z)
        h = 0.5 + half_log_2pi + scale.log() + log_z + 0.5 * (lo * phi_lo - hi * phi_hi)
        return h.to(dtype)

    def rsample(self, sample_shape=_EMPTY):
        x, deep = _InverseCDF.apply(self.loc, self.scale, self.low, self.high, sample_shape)
        if deep.any():
            x = torch.where(deep, super().rsample(sample_shape), x)
        return torch.maximum(torch.minimum(x, self.high), self.low)
