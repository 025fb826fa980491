r"""
KL divergences of the package's distributions, registered with
:func:`torch.distributions.kl.register_kl` so that
``torch.distributions.kl_divergence`` (and Pyro's ``TraceMeanField_ELBO``) find them.

**Log-uniform magnitude priors.** For :math:`q = \mathcal{N}(m, \sigma^2)` and the
improper prior :math:`p(x) \propto 1/|x|` the KL is infinite up to a constant;
Molchanov et al. [1] fit its finite part as a function of
:math:`\alpha = \sigma^2 / m^2` alone:

.. math::

    \mathrm{KL}(q \| p) \approx k_1 - k_1\, \mathrm{sigmoid}(k_2 + k_3 \log\alpha)
        + \tfrac12 \log(1 + 1/\alpha), \qquad
    k_1 = 0.63576,\ k_2 = 1.87320,\ k_3 = 1.48695 .

This is the sign-corrected form of thesis eq. (37), which prints the negative KL. It
is nonnegative, decreases monotonically to 0 as :math:`\alpha \to \infty`, and
equals the exact :math:`E_q[\log q(x) + \log|x|]` minus a constant (about 2.055)
within about 0.01 for :math:`\log\alpha \in [-6, 6]`.

**Plane rotations.** Two :class:`~pyro_dirmag.distributions.PlaneRotation` laws with
the same ``loc`` are images of their angles under the same map, so their KL is the
KL of the laws of :math:`|\epsilon|`, which equals the KL of the angle laws when both
live on :math:`[0, \pi]` or both are symmetric about 0.

**Hemisphere angle priors.** For a truncated-normal angle posterior :math:`q` on
:math:`[a, b] \subseteq [0, \pi/2]` and the prior :math:`p_n(\theta) = \sin^{n-2}\theta / Z_n`
(:class:`~pyro_dirmag.distributions.HemisphereAngle`),

.. math::

    \mathrm{KL}(q \| p_n) = -H(q) - (n - 2)\,\mathbb{E}_q[\log\sin\theta] + \log Z_n,

with :math:`H(q)` exact and :math:`\mathbb{E}_q[\log\sin\theta]` by a quadrature graded
toward :math:`\theta = 0`, where :math:`\log\sin` is singular and :math:`q` may put its
mass (``_truncated_normal_moments.expectation_graded_at_low``). The Monte Carlo term it
replaces, :math:`(n - 2)\log\sin\theta` at a drawn angle, has variance growing with
:math:`n` and is infinite at a draw of exactly 0.

**Per-example copies.** A DirMag layer declares one copy of each latent per example
of the data plate (:class:`~pyro_dirmag.distributions._per_example_copies.PerExampleCopies`).
Every copy has the law of the base, so the KL of two such expansions is computed once
on the bases and broadcast, which keeps the KL's cost independent of the batch size.
It is registered for this package's class only: Pyro's own ``ExpandedDistribution``
keeps Pyro's behaviour (tested), where ``TraceMeanField_ELBO`` falls back to a Monte
Carlo estimate of the same expectation.

**References:**

[1] D. Molchanov, A. Ashukha, D. Vetrov (2017) "Variational Dropout Sparsifies Deep
    Neural Networks"
[2] P. Kirichenko (2018) "Investigation of Bayesian Regularization Methods for Neural
    Networks" (BSc thesis, HSE; in Russian), eq. 37 (sign corrected here)
"""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Beta, Normal, Uniform, kl_divergence
from torch.distributions.kl import register_kl

from .._autograd import first_order_only
from .._shapes import broadcast_size
from ._per_example_copies import PerExampleCopies
from ._truncated_normal_moments import expectation_graded_at_low
from .hemisphere_angle import HemisphereAngle
from .log_uniform import LogUniform, SymmetricLogUniform
from .plane_rotation import PlaneRotation, _support_bounds
from .stretched_symmetric_beta import StretchedSymmetricBeta
from .tangent_projected_normal import TangentNormalAngle
from .truncated_normal import TruncatedNormal

_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695


def _molchanov_kl(loc, scale):
    """Molchanov's approximate KL(N(m, s^2) || log-uniform), as one autograd node."""
    return _MolchanovKL.apply(*torch.broadcast_tensors(loc, scale))


class _MolchanovKL(torch.autograd.Function):
    r"""
    :math:`k_1 - k_1 \sigma(k_2 + k_3 \log\alpha) + \tfrac12 \log(1 + 1/\alpha)` with
    :math:`\log\alpha = 2(\log s - \log|m|)`, never through :math:`\alpha` itself so that
    tiny scales do not underflow; :math:`m = 0` gives :math:`\log\alpha = +\infty` and a KL
    of 0 with a zero (not NaN) gradient. With :math:`q = \sigma(k_2 + k_3 \log\alpha)`,

    .. math::

        \frac{\partial\,\mathrm{KL}}{\partial \log\alpha}
        = -k_1 k_3\, q (1 - q) - \tfrac12 \sigma(-\log\alpha),\qquad
        \frac{\partial \log\alpha}{\partial s} = \frac{2}{s},\quad
        \frac{\partial \log\alpha}{\partial m} = -\frac{2}{m}

    (one node where autograd takes some fifteen per layer and step).
    """

    @staticmethod
    def forward(ctx, loc, scale):
        zero = loc == 0
        log_abs_loc = torch.where(zero, 1.0, loc).abs().log().masked_fill_(zero, -math.inf)
        log_alpha = (scale.log() - log_abs_loc).mul_(2)
        q = torch.sigmoid(_K2 + _K3 * log_alpha)
        # 0.5 log(1 + 1/alpha) = 0.5 softplus(-log alpha), exact for large |log alpha|.
        kl = _K1 - _K1 * q + 0.5 * F.softplus(-log_alpha)
        ctx.save_for_backward(loc, scale, zero, log_alpha, q)
        return kl

    @staticmethod
    @first_order_only
    def backward(ctx, grad):
        loc, scale, zero, log_alpha, q = ctx.saved_tensors
        d_log_alpha = (-_K1 * _K3) * q * (1 - q) - 0.5 * torch.sigmoid(-log_alpha)
        g = grad * d_log_alpha * 2
        grad_loc = grad_scale = None
        if ctx.needs_input_grad[0]:
            grad_loc = (-g / torch.where(zero, 1.0, loc)).masked_fill_(zero, 0.0)
        if ctx.needs_input_grad[1]:
            grad_scale = g / scale
        return grad_loc, grad_scale


@register_kl(Normal, LogUniform)
def _kl_normal_loguniform(p, q):
    """Molchanov et al. (2017) approximation, elementwise over the batch."""
    kl = _molchanov_kl(p.loc, p.scale)
    return kl.expand(broadcast_size(kl.shape, q.batch_shape))


@register_kl(Normal, SymmetricLogUniform)
def _kl_normal_symmetricloguniform(p, q):
    r"""
    The Molchanov et al. approximation plus :math:`\log(2\log(b/a))`, the proper
    law's log normalizer. It is the same approximation, not the exact KL: the exact
    one is infinite, since the normal puts mass outside :math:`a \le |x| \le b`.
    """
    return _molchanov_kl(p.loc, p.scale) + (2 * (q.high.log() - q.low.log())).log()


def _kl_to_uniform(p, p_low, p_high, q):
    r"""KL(p || Uniform(low, high)) = -H(p) + log(high - low) if supp p is inside."""
    inside = (p_low >= q.low) & (p_high <= q.high)
    kl = -p.entropy() + (q.high - q.low).log()
    return torch.where(inside, kl, torch.full_like(kl, math.inf))


@register_kl(TruncatedNormal, Uniform)
def _kl_truncatednormal_uniform(p, q):
    """Exact: ``-entropy(p) + log(high - low)``, ``+inf`` unless ``[a, b]`` lies in it."""
    return _kl_to_uniform(p, p.low, p.high, q)


def _log_sin(x):
    return torch.sin(x).log()


@register_kl(TruncatedNormal, HemisphereAngle)
def _kl_truncatednormal_hemisphereangle(p, q):
    """``-entropy(p) - (n - 2) E_p[log sin] + log Z_n`` (module notes), ``+inf`` unless
    ``[a, b]`` lies in ``[0, pi/2]``."""
    kl = -p.entropy() + q.log_normalizer
    if q.dim > 2:
        kl = kl - (q.dim - 2) * p._full(expectation_graded_at_low(p._std(), _log_sin))
    inside = (p.low >= 0) & (p.high <= math.pi / 2)
    kl = torch.where(inside, kl, torch.full_like(kl, math.inf))
    return kl.expand(broadcast_size(kl.shape, q.batch_shape))


@register_kl(StretchedSymmetricBeta, Uniform)
def _kl_stretchedsymmetricbeta_uniform(p, q):
    """Exact: ``-entropy(p) + log(high - low)``, ``+inf`` unless ``[-pi/2, pi/2]`` lies in it."""
    return _kl_to_uniform(p, -math.pi / 2, math.pi / 2, q)


@register_kl(StretchedSymmetricBeta, StretchedSymmetricBeta)
def _kl_stretchedsymmetricbeta_stretchedsymmetricbeta(p, q):
    """Invariant under the common affine map: the KL of the two Beta laws."""
    return kl_divergence(
        Beta(p.concentration, p.concentration), Beta(q.concentration, q.concentration)
    )


@register_kl(TangentNormalAngle, TangentNormalAngle)
def _kl_tangentnormalangle_tangentnormalangle(p, q):
    r"""
    Invariant under :math:`t \mapsto \tan(t)`: the KL of two scaled
    :math:`\chi_k`, :math:`k \log(\sigma_q/\sigma_p) + \frac{k}{2}(\sigma_p^2/\sigma_q^2 - 1)`.
    """
    if p.df != q.df:
        raise NotImplementedError("KL between TangentNormalAngle laws of different df")
    k = p.df
    ratio2 = (p.scale / q.scale).square()
    return 0.5 * k * (ratio2 - 1 - ratio2.log())


def _is_symmetric(d):
    """Whether the univariate law ``d`` is known to be symmetric about 0 (all batch entries)."""
    if isinstance(d, StretchedSymmetricBeta):
        return True
    if isinstance(d, Uniform):
        return bool((d.low == -d.high).all())
    if isinstance(d, TruncatedNormal):
        return bool(((d.loc == 0) & (d.low == -d.high)).all())
    if isinstance(d, Normal):
        return bool((d.loc == 0).all())
    return False


def _is_nonnegative(d, like):
    low, high = _support_bounds(d.support, like)
    return bool(((low >= 0) & (high <= math.pi + 1e-6)).all())


@register_kl(PlaneRotation, PlaneRotation)
def _kl_planerotation_planerotation(p, q):
    r"""
    KL of the angle laws, exact when both have support in :math:`[0, \pi]` or both
    are symmetric about 0 and ``p.loc`` equals ``q.loc``; any other case raises
    :class:`NotImplementedError`.
    """
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL between spheres of different dimensions: {p.event_shape} and {q.event_shape}"
        )
    if not (p.loc is q.loc or torch.equal(*torch.broadcast_tensors(p.loc, q.loc))):
        raise NotImplementedError(
            "KL(PlaneRotation || PlaneRotation) is implemented only for equal loc"
        )
    both_nonneg = _is_nonnegative(p.angle, p.loc) and _is_nonnegative(q.angle, q.loc)
    both_symmetric = _is_symmetric(p.angle) and _is_symmetric(q.angle)
    if not (both_nonneg or both_symmetric):
        raise NotImplementedError(
            "KL(PlaneRotation || PlaneRotation) needs both angle laws supported in [0, pi] "
            f"or both symmetric about 0; got {p.angle!r} and {q.angle!r}"
        )
    return kl_divergence(p.angle, q.angle)


@register_kl(PerExampleCopies, PerExampleCopies)
def _kl_perexamplecopies_perexamplecopies(p, q):
    """KL of the base laws, broadcast to the expanded batch shape."""
    held = p.take_held_kl(q)
    if held is not None:
        return held
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL between distributions of event shapes {tuple(p.event_shape)} and "
            f"{tuple(q.event_shape)}"
        )
    kl = kl_divergence(p.base_dist, q.base_dist)
    return kl.expand(broadcast_size(p.batch_shape, q.batch_shape))
