r"""
The angle law of a direction uniform on a hemisphere.

If :math:`x` is uniform on the hemisphere of :math:`S^{n-1}` around a unit vector
:math:`v`, its geodesic angle :math:`\theta = \arccos(v \cdot x)` has the density

.. math::

    p_n(\theta) = \frac{\sin^{n-2}\theta}{Z_n}, \qquad \theta \in [0, \pi/2], \qquad
    Z_n = \int_0^{\pi/2} \sin^{n-2} t \, dt
        = \frac{\sqrt{\pi}\, \Gamma(\frac{n-1}{2})}{2\, \Gamma(\frac{n}{2})} .

As the prior of a :class:`~pyro_dirmag.distributions.PlaneRotation` angle (whose
tangent direction is uniform in prior and posterior alike), it makes the prior of the
rotated direction uniform on the hemisphere (docs/MATH.md, section 4), the
rotation-invariant, non-informative prior of a direction. The thesis's
:math:`\mathrm{Uniform}(0, \pi/2)` angle prior is the case :math:`n = 2`; in :math:`n`
dimensions it implies a direction density :math:`\propto 1/\sin^{n-2}\theta`, which
concentrates at :math:`v`. With :math:`p_n` the KL of a concentrated angle posterior grows
like :math:`(n - 2)\,\mathbb{E}[-\log\sin\theta]`: every coordinate of the group pays,
as with the per-weight KL of Bayesian Compression (Louizos et al. 2017).

Sampling: :math:`\cos\theta = |2B - 1|`, :math:`B \sim \mathrm{Beta}(\frac{n-1}{2},
\frac{n-1}{2})` (the coordinate of a uniform point of :math:`S^{n-1}` along :math:`v`).
"""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

__all__ = ["HemisphereAngle"]


class HemisphereAngle(TorchDistribution):
    r"""
    Law of the angle between a fixed unit vector :math:`v \in \mathbb{R}^n` and a
    direction uniform on the hemisphere around it: density
    :math:`\sin^{n-2}\theta / Z_n` on :math:`[0, \pi/2]` (module notes).

    :param int dim: The dimension :math:`n \ge 2` of the directions.
    :param torch.dtype dtype: dtype of samples (default: torch's default dtype).
    :param torch.device device: device of samples.
    """

    arg_constraints = {}
    support = constraints.interval(0.0, math.pi / 2)
    has_rsample = False

    def __init__(self, dim, *, dtype=None, device=None, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"Expected parameter dim ({dim!r}) to be an integer >= 2")
        self.dim = dim
        self._zero = torch.zeros((), dtype=dtype, device=device)
        super().__init__(torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HemisphereAngle, _instance)
        batch_shape = torch.Size(batch_shape)
        new.dim = self.dim
        self._zero.expand(self.batch_shape).expand(batch_shape)  # torch's expand rules
        new._zero = self._zero
        super(HemisphereAngle, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def log_normalizer(self):
        r""":math:`\log Z_n`."""
        n = self.dim
        return 0.5 * math.log(math.pi) + math.lgamma((n - 1) / 2) - math.lgamma(n / 2) - math.log(2)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        if self.dim == 2:  # uniform; 0 * log sin(0) would be NaN
            log_p = value * 0 - self.log_normalizer  # (a zero gradient, not none)
        else:
            log_p = (self.dim - 2) * torch.sin(value).log() - self.log_normalizer
        inside = (value >= 0) & (value <= math.pi / 2)
        return log_p.masked_fill(~inside, -math.inf).expand(shape)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        c = self._zero.new_tensor((self.dim - 1) / 2)
        with torch.no_grad():
            b = torch.distributions.Beta(c, c).sample(shape)
            return torch.acos((2 * b - 1).abs().clamp(max=1.0))
