"""Private helpers shared by the distributions on the unit sphere."""

import functools
import math

import numpy as np
import torch
from pyro.ops.tensor_utils import safe_normalize


def log_sphere_area(k):
    r"""
    Log area of the unit :math:`k`-sphere :math:`S^k \subset \mathbb{R}^{k+1}`,

    .. math:: A_k = \frac{2 \pi^{(k+1)/2}}{\Gamma((k+1)/2)},

    so that :math:`A_0 = 2` (two points), :math:`A_1 = 2\pi`, :math:`A_2 = 4\pi`.

    :param int k: Dimension of the sphere, ``k >= 0``.
    :rtype: float
    """
    return math.log(2.0) + 0.5 * (k + 1) * math.log(math.pi) - math.lgamma(0.5 * (k + 1))


def geodesic_angle(loc, value):
    r"""
    Stable geodesic angle :math:`\theta = \arccos(\mathrm{loc} \cdot x)` in :math:`[0, \pi]`.

    ``arccos`` of a rounded dot product loses half the digits near 0 and
    :math:`\pi` (its derivative is infinite there); instead we split ``value``
    into its component along ``loc`` and the orthogonal remainder and take
    ``atan2`` of their lengths, which is accurate everywhere.

    :returns: a tuple ``(theta, cos_part, sin_part)`` where ``cos_part = loc . x``
        and ``sin_part = ||x - (loc . x) loc|| >= 0``.
    """
    cos_part = (loc * value).sum(-1)
    sin_part = torch.linalg.vector_norm(value - cos_part.unsqueeze(-1) * loc, dim=-1)
    return torch.atan2(sin_part, cos_part), cos_part, sin_part


def tangent_project(loc, z):
    """Project ``z`` onto the tangent space of the unit sphere at ``loc``."""
    return z - (z * loc).sum(-1, keepdim=True) * loc


@functools.lru_cache(maxsize=16)
def _leggauss(num_points):
    return np.polynomial.legendre.leggauss(num_points)


def gauss_legendre(low, high, num_points):
    """
    Gauss-Legendre nodes and weights on ``[low, high]`` (tensors of any batch
    shape); the returned tensors have shape ``(num_points,) + low.shape``.
    """
    x, w = _leggauss(num_points)
    x = torch.as_tensor(x, dtype=low.dtype, device=low.device)
    w = torch.as_tensor(w, dtype=low.dtype, device=low.device)
    x = x.reshape((-1,) + (1,) * low.dim())
    w = w.reshape((-1,) + (1,) * low.dim())
    half = 0.5 * (high - low)
    return low + half * (x + 1), half * w


# From this dimension on, a standard normal z is nearly parallel to a unit vector v with
# negligible probability, and one projection r^2 = |z|^2 - (z.v)^2 is exact to rounding;
# below it, the tangent part is projected twice ("twice is enough").
_FUSED_MIN_DIM = 16


def _dot(x, y):
    """Batched dot product over the last dim, without an elementwise temporary."""
    return (x.unsqueeze(-2) @ y.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def _tangent_gaussian(loc, shape):
    r"""``z ~ N(0, I)`` of ``shape``, ``v = loc`` broadcast to it, ``z . v`` and
    ``1 / r`` with ``r^2 = |z|^2 - (z . v)^2`` (for ``n >= _FUSED_MIN_DIM``), so that
    :math:`\phi = (z - (z\cdot v) v)/r`."""
    z = torch.randn(shape, dtype=loc.dtype, device=loc.device)
    zv = (z * loc).sum(-1)  # (elementwise: faster than a batched matmul on CPU)
    r2 = torch.linalg.vector_norm(z, dim=-1).square() - zv.square()
    return z, loc.expand(shape), zv, r2.clamp(min=1e-30).rsqrt()


def tangent_uniform(loc, sample_shape=()):
    r"""
    Draws :math:`\phi` uniform on the unit :math:`(n-2)`-sphere of the tangent space at
    each unit vector ``loc`` (for :math:`n = 2`: one of the two unit tangents, with equal
    odds). The one sampler of uniform tangent directions in the package.

    A standard normal :math:`z` projected onto the tangent space, :math:`z - (z \cdot v) v`,
    is an isotropic normal vector of that :math:`(n-1)`-dimensional space, so its direction
    is uniform. For :math:`n \ge 16` it is normalized by
    :math:`r^2 = \|z\|^2 - (z \cdot v)^2`, the form
    :func:`rotate_to_random_tangent` fuses; for smaller :math:`n`, where :math:`z` nearly
    parallel to :math:`v` is not rare, the projection is applied twice and then
    normalized, so that draws lie on the tangent sphere to rounding. The map is
    differentiable in ``loc``.

    :param torch.Tensor loc: unit vectors, shape ``(..., n)``.
    :param torch.Size sample_shape: leading shape of independent draws.
    :returns: tensor of shape ``sample_shape + loc.shape``.
    """
    shape = torch.Size(sample_shape) + loc.shape
    if shape[-1] >= _FUSED_MIN_DIM:
        z, loc, zv, inv_r = _tangent_gaussian(loc, shape)
        return (z - zv.unsqueeze(-1) * loc) * inv_r.unsqueeze(-1)
    z = torch.randn(shape, dtype=loc.dtype, device=loc.device)
    # One projection leaves an O(eps / |z_t|) component along loc when z is nearly
    # parallel to it (common for n = 2); a second pass makes it negligible.
    phi = safe_normalize(tangent_project(loc, z))
    return safe_normalize(tangent_project(loc, phi))


def rotate_to_random_tangent(loc, cos_eps, sin_eps, shape):
    r"""
    :math:`x = \cos(\epsilon)\, v + \sin(\epsilon)\, \phi`, :math:`\phi` uniform on
    the unit tangent sphere at :math:`v` = ``loc`` (:func:`tangent_uniform`), for
    ``cos_eps``/``sin_eps`` of shape ``shape[:-1]``.

    For :math:`n \ge 16`, with :func:`tangent_uniform`'s
    :math:`\phi = (z - (z \cdot v) v) / r`,
    :math:`x = (\cos\epsilon - \sin\epsilon\, (z \cdot v)/r)\, v + (\sin\epsilon / r)\, z`:
    two reductions and one fused pass instead of materializing :math:`\phi`.
    """
    if shape[-1] < _FUSED_MIN_DIM:
        phi = tangent_uniform(loc.expand(shape))
        return cos_eps.unsqueeze(-1) * loc + sin_eps.unsqueeze(-1) * phi
    z, loc, zv, inv_r = _tangent_gaussian(loc, shape)
    b = sin_eps * inv_r
    a = cos_eps - b * zv
    return torch.addcmul(a.unsqueeze(-1) * loc, b.unsqueeze(-1), z)


def projected_normal_log_prob(concentration, value, num_points=96, num_widths=12.0):
    r"""
    Log density of Pyro's ``ProjectedNormal(concentration)`` (the law of
    :math:`Y / \|Y\|`, :math:`Y \sim \mathcal{N}(\mu, I_n)`) in any dimension
    :math:`n \ge 2`; Pyro itself stops at :math:`n = 4`. With :math:`t = \mu \cdot x`,

    .. math::

        \log p(x) = -\tfrac{n-1}{2} \log(2\pi) - \tfrac12 (\|\mu\|^2 - t^2)
            + \log M_{n-1}(t), \qquad
        M_k(t) = \int_0^\infty r^k \varphi(r - t)\, dr .

    The integrand is log-concave with its peak at :math:`r^* = (t + \sqrt{t^2 + 4k})/2`
    and curvature width :math:`w = 1/\sqrt{1 + k / r^{*2}}`, so a Gauss-Legendre rule on
    :math:`[\max(0, r^* - 12 w), r^* + 12 w]`, summed in log space, is accurate for any
    :math:`n` and :math:`t` and differentiable in :math:`\mu`. (The three-term recursion
    :math:`M_k = t M_{k-1} + (k-1) M_{k-2}` cancels catastrophically for :math:`t < 0`.)

    :param torch.Tensor concentration: :math:`\mu`, shape ``batch + (n,)``.
    :param torch.Tensor value: Unit vectors :math:`x`, broadcasting with it.
    """
    n = concentration.size(-1)
    k = n - 1
    t = _dot(concentration, value)
    perp2 = (concentration.square().sum(-1) - t.square()).clamp(min=0)
    peak = 0.5 * (t + (t.square() + 4 * k).sqrt())
    width = (1 + k / peak.square()).rsqrt()
    low = (peak - num_widths * width).clamp(min=0)
    high = peak + num_widths * width
    r, w = gauss_legendre(low, high, num_points)
    log_integrand = k * r.log() - 0.5 * (r - t).square() - 0.5 * math.log(2 * math.pi)
    log_m = torch.logsumexp(w.log() + log_integrand, dim=0)
    return -0.5 * k * math.log(2 * math.pi) - 0.5 * perp2 + log_m
