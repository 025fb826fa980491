import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import Distribution

from .._shapes import broadcast_size, shape_mismatch
from ._sphere import (
    gauss_legendre,
    geodesic_angle,
    log_sphere_area,
    rotate_to_random_tangent,
)
from .stretched_symmetric_beta import StretchedSymmetricBeta

_EMPTY = torch.Size()

_QUADRATURE_POINTS = 512
_ANGLE_TOL = 1e-6  # slack for pi rounded to float32 in an angle law's bounds


def _support_bounds(support, like):
    """Lower and upper bounds of a univariate support (``-inf``/``inf`` if unbounded)."""
    low = getattr(support, "lower_bound", -math.inf)
    high = getattr(support, "upper_bound", math.inf)
    low = torch.as_tensor(low, dtype=like.dtype, device=like.device)
    high = torch.as_tensor(high, dtype=like.dtype, device=like.device)
    return low, high


def _sphere_shapes(loc, **batch_shapes):
    """``(batch_shape, event_shape)`` of a law on the sphere with mean direction(s) of
    shape ``loc`` and other parameters of the named batch shapes."""
    loc = torch.Size(loc)
    if len(loc) < 1:
        raise ValueError(f"Expected parameter loc to have shape batch + (n,), but found {loc}")
    try:
        return broadcast_size(loc[:-1], *batch_shapes.values()), loc[-1:]
    except ValueError:
        raise shape_mismatch(loc=loc[:-1], **batch_shapes) from None


class PlaneRotation(TorchDistribution):
    r"""
    Rotation of a mean direction by a random angle in a random plane: a
    distribution on the unit sphere :math:`S^{n-1}` (thesis section 3.2.3).

    A sample is drawn as

    .. math::

        \phi \sim \mathrm{Uniform}\{u \in \mathbb{R}^n : u \cdot v = 0, \|u\| = 1\},
        \quad \epsilon \sim \text{angle}, \quad
        x = \cos(\epsilon)\, v + \sin(\epsilon)\, \phi,

    where :math:`v` is ``loc`` and :math:`\phi` is uniform on the unit sphere of the
    tangent space at :math:`v` (for :math:`n = 2`: one of the two unit tangents).
    The angle law is any univariate distribution with support in
    :math:`[-\pi, \pi]`, e.g. :class:`StretchedSymmetricBeta`,
    ``TruncatedNormal(0, sigma, -pi/2, pi/2)``, ``TruncatedNormal(mu, sigma, 0, pi/2)``
    or ``Uniform(0, pi/2)``. The density is exact in every dimension: with the
    geodesic angle :math:`\theta = \arccos(v \cdot x)` and :math:`f` the density of
    :math:`|\epsilon|`, :math:`f(t) = f_\epsilon(t) + f_\epsilon(-t)`,

    .. math::

        p(x) = \frac{f(\theta)}{A_{n-2} \sin(\theta)^{n-2}}, \qquad
        A_k = \frac{2 \pi^{(k+1)/2}}{\Gamma((k+1)/2)}.

    Samples are reparametrized in ``loc`` and, when the angle law has ``rsample``,
    in the angle law's parameters. Use it as a latent site under ``poutine.reparam``
    with :class:`~pyro_dirmag.infer.reparam.PlaneRotationReparam` when an
    autoguide must handle it::

        def model():
            angle = TruncatedNormal(0.0, 0.3, -math.pi / 2, math.pi / 2)
            w = pyro.sample("w", PlaneRotation(loc, angle))
            ...

    Two plane rotations with the same ``loc`` have the KL divergence of their angle
    laws (registered in :mod:`pyro_dirmag.distributions.kl`).

    .. note:: For :math:`n \ge 3` and :math:`f(0) > 0` the density has an integrable
        singularity at :math:`x = v`: ``log_prob`` returns ``+inf`` there. Where
        :math:`f(0) = 0` (e.g. :class:`TangentProjectedNormal`) the value at exactly
        :math:`x = v` is a limit :math:`0/0` that a subclass must supply; this class
        returns ``-inf`` there.

    .. note:: :meth:`entropy` and :attr:`mean` use a 512-point Gauss-Legendre rule
        over the angle: for a :class:`StretchedSymmetricBeta` angle in variables that
        take away its endpoint singularities (any ``concentration``, see
        :meth:`StretchedSymmetricBeta.abs_quadrature`); in the quantile when the angle
        law has ``icdf`` (e.g. ``TruncatedNormal``, ``Uniform``: accurate however narrow
        the law); else in the angle itself, accurate unless the law is concentrated on
        an interval much narrower than ~1/100 of its support.

    **References:**

    [1] P. Kirichenko (2018) "Investigation of Bayesian Regularization Methods for
        Neural Networks" (BSc thesis, HSE; in Russian), sections 3.2.3 and 4, eq. 20-23, 46
    [2] T. Salimans, D. P. Kingma (2016) "Weight Normalization: A Simple
        Reparameterization to Accelerate Training of Deep Neural Networks"

    :param torch.Tensor loc: Unit mean direction(s) :math:`v`, shape ``batch + (n,)``
        with ``n >= 2``.
    :param torch.distributions.Distribution angle: Univariate law of
        :math:`\epsilon` with support in :math:`[-\pi, \pi]`; its batch shape
        broadcasts with ``loc.shape[:-1]``.
    """

    arg_constraints = {"loc": constraints.sphere}
    support = constraints.sphere

    def __init__(self, loc, angle, *, validate_args=None):
        if not isinstance(loc, torch.Tensor) or loc.dim() < 1 or loc.size(-1) < 2:
            raise ValueError(
                "Expected parameter loc to be a tensor of shape batch + (n,) with n >= 2, "
                f"but found shape {tuple(getattr(loc, 'shape', ()))}"
            )
        if not isinstance(angle, Distribution) or angle.event_shape != torch.Size():
            raise ValueError(
                "Expected parameter angle to be a univariate distribution (event_shape ()), "
                f"but found {angle!r}"
            )
        try:
            batch_shape = broadcast_size(loc.shape[:-1], angle.batch_shape)
        except ValueError:
            raise shape_mismatch(loc=loc.shape[:-1], angle=angle.batch_shape) from None
        event_shape = loc.shape[-1:]
        self.loc = loc.expand(batch_shape + event_shape)
        self.angle = angle if angle.batch_shape == batch_shape else angle.expand(batch_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)
        if self._validate_args:
            low, high = _support_bounds(self.angle.support, self.loc)
            if not ((low >= -math.pi - _ANGLE_TOL).all() and (high <= math.pi + _ANGLE_TOL).all()):
                raise ValueError(
                    "Expected parameter angle to have its support inside [-pi, pi], "
                    f"but found support {self.angle.support!r}"
                )

    @classmethod
    def infer_shapes(cls, loc, angle=()):
        """
        Batch and event shapes of ``PlaneRotation(loc, angle)`` from the argument shapes.

        :param tuple loc: shape of ``loc``, ``batch + (n,)``.
        :param tuple angle: the **batch shape** of the angle law (a distribution has
            no tensor shape; default ``()``).
        :returns: ``(broadcast(loc[:-1], angle), loc[-1:])``.
        :rtype: tuple
        """
        return _sphere_shapes(loc, angle=angle)

    @property
    def has_rsample(self):
        override = self.__dict__.get("_has_rsample")
        return self.angle.has_rsample if override is None else override

    @has_rsample.setter
    def has_rsample(self, value):  # for Pyro's Distribution.has_rsample_()
        self._has_rsample = value

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PlaneRotation, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.angle = self.angle.expand(batch_shape)
        super(PlaneRotation, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        if "_has_rsample" in self.__dict__:
            new._has_rsample = self._has_rsample
        return new

    def _rotate(self, eps, sample_shape):
        shape = self._extended_shape(sample_shape)
        return rotate_to_random_tangent(self.loc, eps.cos(), eps.sin(), shape)

    def rsample(self, sample_shape=_EMPTY):
        if not self.angle.has_rsample:
            raise NotImplementedError(
                f"PlaneRotation.rsample needs an angle law with rsample, got {self.angle!r}"
            )
        sample_shape = torch.Size(sample_shape)
        return self._rotate(self.angle.rsample(sample_shape), sample_shape)

    def sample(self, sample_shape=_EMPTY):
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            return self._rotate(self.angle.sample(sample_shape), sample_shape)

    def angle_log_prob(self, theta):
        r"""
        Log density of the geodesic angle :math:`\theta = \arccos(v \cdot x)` on
        :math:`[0, \pi]`, i.e. of :math:`|\epsilon|`:
        :math:`\log(f_\epsilon(\theta) + f_\epsilon(-\theta))` computed in log space
        (``-inf`` outside :math:`[0, \pi]`, never NaN). At :math:`\theta = 0` it is
        the right limit, so a law on :math:`[0, b]` is not counted twice.

        :param torch.Tensor theta: Angles, shape broadcasting with ``batch_shape``.
        """
        low, high = _support_bounds(self.angle.support, theta)
        # An interior point of the support where masked entries are evaluated, so that
        # neither values nor gradients of the masked branch can be NaN.
        safe = 0.5 * (low.clamp(min=-math.pi) + high.clamp(max=math.pi))
        zero = theta == 0
        in_range = (theta >= 0) & (theta <= math.pi)
        ok_plus = in_range & (theta >= low) & (theta <= high) & (~zero | (high > 0))
        ok_minus = in_range & (-theta >= low) & (-theta <= high) & (~zero | (low < 0))
        neg_inf = theta.new_tensor(-math.inf)
        lp_plus = self.angle.log_prob(torch.where(ok_plus, theta, safe))
        lp_minus = self.angle.log_prob(torch.where(ok_minus, -theta, safe))
        lp_plus = torch.where(ok_plus, lp_plus, neg_inf)
        lp_minus = torch.where(ok_minus, lp_minus, neg_inf)
        # logaddexp's gradient is NaN at an infinite term (exp(inf - inf)); a singular
        # density (Beta(c < 1) at +-pi/2) is +inf there, and so is the sum
        inf_plus, inf_minus = lp_plus == math.inf, lp_minus == math.inf
        either = inf_plus | inf_minus
        lse = torch.logaddexp(torch.where(either, 0.0, lp_plus), torch.where(either, 0.0, lp_minus))
        return torch.where(inf_plus, lp_plus, torch.where(inf_minus, lp_minus, lse))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        n = self.event_shape[-1]
        theta, cos_part, sin_part = geodesic_angle(self.loc, value)
        log_f = self.angle_log_prob(theta)
        result = log_f - log_sphere_area(n - 2)
        if n > 2:
            # log sin(theta) from the two components, exact near 0 and pi.
            log_sin = sin_part.log() - torch.hypot(sin_part, cos_part).log()
            result = result - (n - 2) * log_sin
            # f(theta) = 0 wins over the 1/sin singularity (else -inf + inf = NaN).
            result = torch.where(log_f == -math.inf, log_f, result)
        return torch.where(self.support.check(value), result, value.new_tensor(-math.inf))

    def _angle_quadrature(self, num_points=_QUADRATURE_POINTS):
        r"""
        Nodes ``t`` (shape ``(m,) + batch_shape``), probability weights ``p`` and log
        densities of :math:`|\epsilon|`, such that :math:`E[g(|\epsilon|)] \approx
        \sum_i p_i g(t_i)`.

        A :class:`StretchedSymmetricBeta` angle gives its own rule
        (:meth:`StretchedSymmetricBeta.abs_quadrature`). Else, if the angle law has an
        ``icdf``, Gauss-Legendre nodes in the quantile
        :math:`u \in (0, 1)` (``t = |icdf(u)|``, ``p`` = the weights): accurate however
        narrow the law. Otherwise Gauss-Legendre nodes in ``t`` over the support of
        :math:`|\epsilon|`, split at the kink :math:`\min(-low, high)` of :math:`f`
        when the law straddles 0, with ``p = w f(t)``.
        """
        if isinstance(self.angle, StretchedSymmetricBeta):
            # its own rule, substituted to handle the singular density of c < 1
            shape = (num_points,) + self.batch_shape
            return tuple(q.expand(shape) for q in self.angle.abs_quadrature(num_points))
        zero = self.loc.new_zeros(self.batch_shape)
        try:
            u, w = gauss_legendre(zero, zero + 1, num_points)
            t = self.angle.icdf(u).abs()
        except NotImplementedError:
            pass
        else:
            return t, w, self.angle_log_prob(t)
        low, high = _support_bounds(self.angle.support, self.loc)
        low = low.clamp(min=-math.pi).expand(self.batch_shape)
        high = high.clamp(max=math.pi).expand(self.batch_shape)
        one_sided_pos = low >= 0
        one_sided_neg = high <= 0
        straddle_kink = torch.minimum(-low, high)
        straddle_end = torch.maximum(-low, high)
        a1 = torch.where(one_sided_pos, low, torch.where(one_sided_neg, -high, zero))
        b1 = torch.where(one_sided_pos, high, torch.where(one_sided_neg, -low, straddle_kink))
        b2 = torch.where(one_sided_pos | one_sided_neg, b1, straddle_end)
        t1, w1 = gauss_legendre(a1, b1, num_points)
        t2, w2 = gauss_legendre(b1, b2, num_points)
        # A zero-width piece would put its nodes on an endpoint, where f may be
        # infinite (Beta with c < 1): move them inside the first piece (weight 0).
        t2 = torch.where(w2 == 0, 0.5 * (a1 + b1), t2)
        t = torch.cat([t1, t2])
        log_f = self.angle_log_prob(t)
        return t, torch.cat([w1, w2]) * log_f.exp(), log_f

    @property
    def mean(self):
        r"""
        :math:`E[x] = E[\cos \epsilon]\, v` (the tangent part averages to zero),
        by quadrature over the angle.
        """
        t, p, _ = self._angle_quadrature()
        return (p * t.cos()).sum(0).unsqueeze(-1) * self.loc

    def entropy(self):
        r"""
        :math:`H(x) = H(|\epsilon|) + E[\log(A_{n-2} \sin(|\epsilon|)^{n-2})]`,
        by quadrature over the angle.
        """
        n = self.event_shape[-1]
        t, p, log_f = self._angle_quadrature()
        integrand = -log_f + log_sphere_area(n - 2)
        if n > 2:
            integrand = integrand + (n - 2) * t.sin().log()
        integrand = torch.where(p > 0, p * integrand, torch.zeros_like(p))
        return integrand.sum(0)
