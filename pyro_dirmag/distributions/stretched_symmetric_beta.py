import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import Beta

_EMPTY = torch.Size()


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
        return math.pi * (self._beta.rsample(sample_shape) - 0.5)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        inside = self.support.check(value)
        # Clamp only guards rounding at +-pi/2 (float32 pi/2 exceeds the real pi/2).
        u = (value / math.pi + 0.5).clamp(0.0, 1.0)
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
