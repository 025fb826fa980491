import functools
import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import Beta

from ._sphere import gauss_legendre

_EMPTY = torch.Size()


# pi/2 - fl64(pi/2): with it, pi/2 - |x| is formed without the rounding of pi/2.
_HALF_PI_LO64 = 6.123233995736766e-17


@functools.lru_cache(maxsize=8)
def _half_pi(dtype):
    """As Python numbers exact in ``dtype``: ``pi/2`` rounded to ``dtype``, the largest
    number of ``dtype`` below it, and the rounding error ``pi/2 - fl(pi/2)``."""
    hi = torch.tensor(math.pi / 2, dtype=dtype)
    below = torch.nextafter(hi, torch.zeros_like(hi))
    return hi.item(), below.item(), (math.pi / 2 - hi.item()) + _HALF_PI_LO64


class StretchedSymmetricBeta(TorchDistribution):
    r"""
    Symmetric Beta law stretched onto :math:`[-\pi/2, \pi/2]`: the thesis's
    rotation-angle law (section 3.2.3),

    .. math::

        \epsilon = \pi (B - 1/2), \quad B \sim \mathrm{Beta}(c, c), \qquad
        p(\epsilon) = \frac{1}{\pi}\,
            \frac{(1/2 + \epsilon/\pi)^{c-1} (1/2 - \epsilon/\pi)^{c-1}}{\mathrm{B}(c, c)}.

    Mean 0, variance :math:`\pi^2 / (4 (2c + 1))`. Small ``concentration`` spreads the
    angle towards :math:`\pm\pi/2` (``c = 1`` is uniform), large ``concentration``
    concentrates it at 0. Use it as the ``angle`` of a
    :class:`~pyro_dirmag.distributions.PlaneRotation`::

        w = pyro.sample("w", PlaneRotation(loc, StretchedSymmetricBeta(10.0)))

    **References:**

    [1] P. Kirichenko (2018) "Investigation of Bayesian Regularization Methods for
        Neural Networks" (BSc thesis, HSE; in Russian), section 3.2.3

    :param torch.Tensor concentration: Positive concentration :math:`c` of both
        Beta parameters.
    """

    arg_constraints = {"concentration": constraints.positive}
    support = constraints.interval(-math.pi / 2, math.pi / 2)
    has_rsample = True

    def __init__(self, concentration, *, validate_args=None):
        if not isinstance(concentration, torch.Tensor):
            concentration = torch.tensor(float(concentration))
        self.concentration = concentration
        super().__init__(self.concentration.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StretchedSymmetricBeta, _instance)
        batch_shape = torch.Size(batch_shape)
        new.concentration = self.concentration.expand(batch_shape)
        super(StretchedSymmetricBeta, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @property
    def _beta(self):
        return Beta(self.concentration, self.concentration, validate_args=False)

    def rsample(self, sample_shape=_EMPTY):
        x = math.pi * (self._beta.rsample(sample_shape) - 0.5)
        # Beta draws within half an ulp of 0.5 from 0 or 1 (common for c < 1) round to
        # +-pi/2, where the density is infinite: keep the draws strictly inside, as Beta
        # keeps its own in (0, 1). The bound is the largest number of the dtype below
        # its rounded pi/2, at which log_prob is finite. (A draw moved there gets no
        # gradient, as Beta's clamped draws get none.)
        _, edge, _ = _half_pi(x.dtype)
        return x.clamp(-edge, edge)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        inside = self.support.check(value)
        # By symmetry p(x) = p(-|x|): with u = (pi/2 - |x|)/pi in [0, 1/2] the Beta takes
        # log u and log(1 - u) with 1 - u >= 1/2 exact, so both ends are resolved alike.
        # pi/2 - |x| = (fl(pi/2) - |x|) + (pi/2 - fl(pi/2)): the first difference is exact
        # near the ends (Sterbenz), so u keeps its relative precision where the density
        # varies fastest. The clamp guards float32's pi/2, which exceeds the real pi/2.
        half_pi, _, half_pi_lo = _half_pi(value.dtype)
        u = torch.rsub(value.abs(), half_pi).add_(half_pi_lo).div_(math.pi).clamp_(min=0.0)
        u = torch.where(inside, u, torch.full_like(u, 0.5))
        lp = self._beta.log_prob(u) - math.log(math.pi)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    @property
    def mean(self):
        return torch.zeros_like(self.concentration)

    @property
    def variance(self):
        return math.pi**2 / (4 * (2 * self.concentration + 1))

    def entropy(self):
        return self._beta.entropy() + math.log(math.pi)

    def abs_quadrature(self, num_points):
        r"""
        Nodes ``t`` of :math:`|\epsilon|` on :math:`[0, \pi/2]`, probability weights ``p``
        and log densities ``log_f`` of :math:`|\epsilon|` at ``t`` (each of shape
        ``(num_points,) + batch_shape``, ``num_points`` even), such that
        :math:`E[g(|\epsilon|)] \approx \sum_i p_i\, g(t_i)` for functions ``g`` smooth
        on :math:`(0, \pi/2]` or with a logarithmic singularity at 0 (``log sin t``):
        :class:`PlaneRotation` takes its entropy and mean from them.

        With :math:`b = 1/2 - |\epsilon|/\pi`, the density of :math:`|\epsilon|` is
        :math:`f(t) = 2\, b^{c-1} (1 - b)^{c-1} / (\pi\, \mathrm{B}(c, c))`, infinite
        at :math:`t = \pi/2` when :math:`c < 1` (for ``c = 0.1``, 14 % of the mass lies
        within 1e-8 of it), which defeats a rule in ``t``. Gauss-Legendre rules of
        ``num_points / 2`` nodes run instead in two substituted variables:

        * :math:`b \in [0, 1/4]` as :math:`b = r^{3/c}/4`: then
          :math:`b^{c-1}\,db = 4^{-c} (3/c)\, r^2\,dr` takes the singularity away, and
          :math:`\log f` grows only as :math:`\log r` (times :math:`r^2`);
        * :math:`y = 1/2 - b \in [0, 1/4]` as :math:`y = v^3/4`, :math:`dy = (3/4) v^2 dv`:
          the density is smooth there, and :math:`\log \sin t` has its
          :math:`\log v` singularity damped by :math:`v^2`.

        Computed in float64 (``log B(c, c) + 2c log 2`` cancels for large ``c``), with
        ``log B(c, c) = 2 lgamma(c) - lgamma(2c)``, the weights normalized to sum 1, then
        cast to the dtype.

        :param int num_points: number of nodes (even).
        """
        c = self.concentration.double()
        zero = torch.zeros_like(c)
        r, w = gauss_legendre(zero, zero + 1, num_points // 2)
        log_norm = math.log(2) - (2 * torch.lgamma(c) - torch.lgamma(2 * c))  # log(2 / B)
        # b in [0, 1/4]: b = r^(3/c) / 4, log b formed without underflow (c may be small)
        log_b = 3 * torch.log(r) / c - math.log(4)
        log1m_b = torch.log1p(-torch.exp(log_b))
        t1 = math.pi * (0.5 - torch.exp(log_b))
        log_f1 = log_norm - math.log(math.pi) + (c - 1) * (log_b + log1m_b)
        log_p1 = log_norm - c * math.log(4) + torch.log(3 / c) + 2 * torch.log(r)
        log_p1 = log_p1 + (c - 1) * log1m_b
        # y = 1/2 - b in [0, 1/4]: y = v^3 / 4 (v = r), b (1 - b) = 1/4 - y^2
        y = r**3 / 4
        log_bb = torch.log1p(-4 * y * y) - math.log(4)
        log_f2 = log_norm - math.log(math.pi) + (c - 1) * log_bb
        log_p2 = log_norm + (c - 1) * log_bb + math.log(0.75) + 2 * torch.log(r)
        t = torch.cat([t1, math.pi * y])
        p = torch.cat([w * log_p1.exp(), w * log_p2.exp()])
        p = p / p.sum(0)  # (sums to 1 up to the rounding of log B for large c)
        log_f = torch.cat([log_f1, log_f2])
        dtype = self.concentration.dtype
        return t.to(dtype), p.to(dtype), log_f.to(dtype)
