"""Fixed-variance noise laws for the non-variational regularizers (thesis section 3).

Every noise is parametrized by one strength ``alpha > 0``, as in the thesis, and
this module is the single place where ``alpha`` is mapped to the parameters of
the library's distributions:

===================== ============================================================
name                  law (``v`` a unit vector, ``alpha > 0``)
===================== ============================================================
``"gaussian"``        Gaussian dropout: multiplicative ``N(1, alpha)``
``"projected"``       ``normalize(v + N(0, alpha I))``, Pyro's
                      ``ProjectedNormal(concentration=v / sqrt(alpha))`` (eq. 15-16)
``"tangent"``         ``normalize(v + N(0, alpha I) projected on the tangent space)``,
                      :class:`~pyro_dirmag.distributions.TangentProjectedNormal`
                      with ``scale = sqrt(alpha)`` (eq. 17-19)
``"rotation_normal"`` rotation in a random plane (eq. 20-23) by an angle
                      ``TN(0, sigma^2)`` on ``[-pi/2, pi/2]`` with ``sigma = sqrt(alpha)``
``"rotation_beta"``   rotation in a random plane by a stretched symmetric Beta
                      angle ``pi (B - 1/2)``, ``B ~ Beta(c, c)``, with ``c`` chosen so
                      that the angle variance equals ``alpha``:
                      ``pi^2 / (4 (2c + 1)) = alpha``, i.e.
                      ``c = (pi^2 / (4 alpha) - 1) / 2``; needs ``alpha < pi^2 / 4``
===================== ============================================================

Magnitude noises are multiplicative with mean one and variance ``alpha``:
``"normal"`` is ``N(1, alpha)`` (eq. 24-25) and ``"gamma"`` is
``Gamma(1 / alpha, 1 / alpha)`` (concentration, rate), which never flips a sign.

For small ``alpha`` both rotation laws have angle variance close to ``alpha``
(the truncation of ``TN`` only matters once ``sqrt(alpha)`` nears ``pi/2``), so a
grid over ``alpha`` means the same for both.

**References:**

[1] P. Kirichenko (2018) "Investigation of Bayesian Regularization Methods for Neural
    Networks" (BSc thesis, HSE; in Russian), sections 3.2-3.3, appendix D.
"""

import math
import numbers

import torch
from pyro.distributions import Gamma, Normal, ProjectedNormal

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    TangentNormalAngle,
    TangentProjectedNormal,
    TruncatedNormal,
)

__all__ = [
    "DIRECTION_NOISES",
    "MAGNITUDE_NOISES",
    "NOISES",
    "PLANE_ROTATION_NOISES",
    "ROTATION_NOISES",
    "angle_distribution",
    "check_alpha",
    "check_choice",
    "direction_distribution",
    "gaussian_dropout_distribution",
    "magnitude_distribution",
    "rotation_beta_concentration",
]

ROTATION_NOISES = ("rotation_normal", "rotation_beta")
#: direction noises that are plane rotations (docs/MATH.md section 4), so that a dense layer can
#: draw them per example with the one-matmul identity of docs/MATH.md section 5.
PLANE_ROTATION_NOISES = ("tangent",) + ROTATION_NOISES
DIRECTION_NOISES = ("projected", "tangent") + ROTATION_NOISES
NOISES = ("gaussian",) + DIRECTION_NOISES
MAGNITUDE_NOISES = ("normal", "gamma")

#: ``alpha`` must stay below this for ``"rotation_beta"``: the variance of ``pi (B - 1/2)``
#: with ``B ~ Beta(c, c)`` is ``pi^2 / (4 (2c + 1)) < pi^2 / 4``.
ROTATION_BETA_MAX_ALPHA = math.pi**2 / 4


def check_choice(value, allowed, what):
    """Return ``value`` if it is one of ``allowed``, else raise a ``ValueError`` listing them."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed values: {', '.join(allowed)}")
    return value


def check_alpha(alpha, name="alpha"):
    """Return ``alpha`` as a float after checking that it is a finite number ``> 0``."""
    if isinstance(alpha, torch.Tensor) and alpha.numel() == 1:
        alpha = alpha.item()
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {alpha!r}")
    return float(alpha)


def rotation_beta_concentration(alpha):
    """Concentration ``c`` of ``Beta(c, c)`` whose stretched angle ``pi (B - 1/2)`` has variance
    ``alpha``: ``c = (pi^2 / (4 alpha) - 1) / 2``, defined for ``0 < alpha < pi^2 / 4``."""
    alpha = check_alpha(alpha)
    if alpha >= ROTATION_BETA_MAX_ALPHA:
        raise ValueError(
            f"alpha for 'rotation_beta' must be < pi^2/4 = {ROTATION_BETA_MAX_ALPHA:.4f} "
            f"(the largest variance of a stretched symmetric Beta angle), got {alpha!r}"
        )
    return (math.pi**2 / (4 * alpha) - 1) / 2


def angle_distribution(noise, alpha, dim=None, *, dtype=None, device=None):
    """The law of the rotation angle ``epsilon`` of a noise that is a plane rotation.

    ``"rotation_normal"`` and ``"rotation_beta"`` have angles on ``[-pi/2, pi/2]``;
    ``"tangent"`` is the plane rotation by ``arctan(sqrt(alpha) r)``, ``r ~ chi(dim - 1)``
    (:class:`~pyro_dirmag.distributions.TangentNormalAngle`, docs/MATH.md section 4), which
    depends on the dimension ``dim`` of the sphere's ambient space.

    :param str noise: one of :data:`PLANE_ROTATION_NOISES`.
    :param float alpha: noise strength (see the module docstring for the mapping).
    :param int dim: ambient dimension ``n >= 2``; required for ``"tangent"``.
    :returns: a scalar (batch shape ``()``) distribution with ``rsample``.
    """
    check_choice(noise, PLANE_ROTATION_NOISES, "plane-rotation noise")
    alpha = check_alpha(alpha)
    kwargs = {"dtype": dtype or torch.get_default_dtype(), "device": device}
    if noise == "rotation_normal":
        half_pi = math.pi / 2
        return TruncatedNormal(
            torch.zeros((), **kwargs),
            torch.tensor(math.sqrt(alpha), **kwargs),
            torch.tensor(-half_pi, **kwargs),
            torch.tensor(half_pi, **kwargs),
        )
    if noise == "rotation_beta":
        return StretchedSymmetricBeta(torch.tensor(rotation_beta_concentration(alpha), **kwargs))
    if dim is None or dim < 2:
        raise ValueError(f"the 'tangent' angle law needs the dimension dim >= 2, got {dim!r}")
    return TangentNormalAngle(torch.tensor(math.sqrt(alpha), **kwargs), dim - 1)


def direction_distribution(noise, loc, alpha):
    """The law of the perturbed unit vector for a direction noise around ``loc``.

    :param str noise: one of :data:`DIRECTION_NOISES`.
    :param torch.Tensor loc: unit vectors, shape ``batch_shape + (n,)`` with ``n >= 2``.
    :param float alpha: noise strength.
    :returns: a distribution on the unit sphere with event shape ``(n,)``, batch shape
        ``loc.shape[:-1]`` and ``rsample``. Rotation angles are independent per batch element.
    """
    check_choice(noise, DIRECTION_NOISES, "direction noise")
    alpha = check_alpha(alpha)
    if loc.dim() < 1 or loc.shape[-1] < 2:
        raise ValueError(
            f"direction noise needs vectors of dimension n >= 2, got shape {tuple(loc.shape)}"
        )
    if noise == "projected":
        return ProjectedNormal(loc / math.sqrt(alpha), validate_args=False)
    if noise == "tangent":
        return TangentProjectedNormal(loc, loc.new_tensor(math.sqrt(alpha)), validate_args=False)
    angle = angle_distribution(noise, alpha, dtype=loc.dtype, device=loc.device)
    return PlaneRotation(loc, angle.expand(loc.shape[:-1]), validate_args=False)


def magnitude_distribution(noise, alpha, *, dtype=None, device=None):
    """Multiplicative magnitude noise with mean 1 and variance ``alpha`` (batch shape ``()``).

    :param str noise: ``"normal"`` (``N(1, alpha)``) or ``"gamma"`` (``Gamma(1/alpha, 1/alpha)``).
    :param float alpha: noise variance.
    """
    check_choice(noise, MAGNITUDE_NOISES, "magnitude noise")
    alpha = check_alpha(alpha)
    kwargs = {"dtype": dtype or torch.get_default_dtype(), "device": device}
    if noise == "normal":
        return Normal(torch.ones((), **kwargs), torch.tensor(math.sqrt(alpha), **kwargs))
    rate = torch.tensor(1 / alpha, **kwargs)
    return Gamma(rate, rate)


def gaussian_dropout_distribution(alpha, *, dtype=None, device=None):
    """Gaussian dropout noise ``N(1, alpha)`` (Srivastava et al. 2014; thesis section 2.2)."""
    return magnitude_distribution("normal", alpha, dtype=dtype, device=device)
