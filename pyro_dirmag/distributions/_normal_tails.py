"""Numerics of the standard normal far in its tails, for :class:`TruncatedNormal`.

Notation: ``Phi`` and ``phi`` are the standard normal cdf and pdf, and
``L(y) = log erfcx(-y / sqrt(2))`` for ``y <= 0``, so that

.. math:: \\log\\Phi(y) = L(y) - \\log 2 - y^2 / 2,\\qquad
          \\log\\Phi(y) - \\log\\phi(y) = L(y) + \\tfrac12\\log(\\pi/2).

Writing the Gaussian factor out exactly lets differences such as
``log Phi(x) - log Phi(y)`` be formed as ``(y - x)(y + x)/2 + L(x) - L(y)``, where
``y - x`` is an interval width the caller computes from the unstandardized bounds
(one rounding) and no term cancels, even 1000 standard deviations out.
"""

import math

import numpy as np
import torch

from .._rare import rare_indices

_LOG_2 = math.log(2.0)
_SQRT1_2 = math.sqrt(0.5)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_PI_2 = 0.5 * math.log(math.pi / 2)
_LOG_HALF = -_LOG_2
# 12-point Gauss-Legendre rule on [0, 1].
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(12)
_GL_NODES, _GL_WEIGHTS = 0.5 * (_GL_NODES + 1), 0.5 * _GL_WEIGHTS

# Coefficients c_n of log S(u) = sum_n c_n u^n, where S(t) = t R(t), R the Mills ratio and
# u = 1/t^2: the logarithm of the asymptotic series S = 1 - u + 3u^2 - 15u^3 + ...
# Truncated after u^8 its error is 1.4e-8 at t = 7 and 1.2e-16 at t = 20, with a derivative
# of 3.6e-8 and 1e-16 (checked against mpmath); in the offset solved for below that makes
# relative errors of 5e-9 and 5e-18, hence the thresholds _DEEP_TAIL.
_LOG_S_COEFFS = (
    -1.0,
    5.0 / 2,
    -37.0 / 3,
    353.0 / 4,
    -4081.0 / 5,
    55205.0 / 6,
    -854197.0 / 7,
    14876033.0 / 8,
)
# Standardized distance to the near bound from which samples are found by Newton's method on
# the exact tail equation (below, the plain inverse cdf in linear space does not underflow).
_DEEP_TAIL = {torch.float16: 7.0, torch.bfloat16: 7.0, torch.float32: 7.0, torch.float64: 20.0}


def log1mexp(x):
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends (Maechler 2012).

    Each branch is evaluated at a stand-in where it is not taken, so that its derivative
    there is finite: ``log1p(-exp(x))`` has an infinite one where ``exp(x)`` rounds to 1,
    and ``torch.where`` would turn it into NaN (0 * inf) in the gradient.
    """
    near = x > _LOG_HALF
    return torch.where(
        near,
        torch.log(-torch.expm1(torch.where(near, x, _LOG_HALF))),
        torch.log1p(-torch.exp(torch.where(near, _LOG_HALF, x))),
    )


def log_erfcx_neg(y):
    """``L(y) = log erfcx(-y / sqrt(2))``; finite for finite ``y <= 0``."""
    return torch.log(torch.special.erfcx(-_SQRT1_2 * y))


def log_ndtr_diff(x, y, width):
    """Stable ``log(Phi(y) - Phi(x))`` for ``x <= y``, either possibly infinite.

    Returns ``(s, c, d, left)`` with ``log(Phi(y) - Phi(x)) = s + log phi(c)``, where ``c``
    is the point of ``[x, y]`` nearest to 0; ``left`` marks intervals on one side of 0
    (mirrored into the left tail when ``x > 0``) and there
    ``d = log Phi(x') - log Phi(y') <= 0`` for the mirrored ends ``x' < y' <= 0``.
    ``width`` is ``y - x`` as the caller can best compute it (``inf`` if unbounded).
    """
    right = x > 0
    # Phi(y) - Phi(x) = Phi(-x) - Phi(-y): mirror right-tail intervals into the left tail.
    xl = torch.where(right, -y, x)
    yl = torch.where(right, -x, y)
    left = yl <= 0
    c = torch.where(right, x, torch.where(left, y, 0.0))
    if not torch.jit.is_tracing() and not left.any():
        # Every interval straddles 0 (a common case, e.g. angle posteriors near their
        # mode): skip the one-sided branches; d is unused there (-inf as below).
        s = torch.log(0.5 * (torch.erf(_SQRT1_2 * y) + torch.erf(-_SQRT1_2 * x))) + _LOG_SQRT_2PI
        return s, c, torch.full_like(s, -math.inf), left
    finite = left & (xl > -math.inf)
    # Safe stand-ins where a branch is not taken keep gradients free of inf * 0.
    ys = torch.where(left, yl, -1.0)
    xs = torch.where(finite, xl, ys - 1.0)
    ws = torch.where(finite, width, 1.0)
    ly = log_erfcx_neg(ys)
    # log Phi(x) - log Phi(y) = (y - x)(y + x)/2 + L(x) - L(y): every term <= 0.
    d = torch.where(finite, 0.5 * ws * (xs + ys) + log_erfcx_neg(xs) - ly, -math.inf)
    s_left = ly + _HALF_LOG_PI_2 + log1mexp(d)
    # Narrow intervals: L(x) - L(y) cancels. There Phi(y) - Phi(x) = phi(y) I with
    # I = int_0^w exp(y s - s^2/2) ds, an integrand within exp(-1) of 1: Gauss-Legendre.
    narrow = finite & (ws * (ws - ys) <= 1)
    wn = torch.where(narrow, ws, 0.5).unsqueeze(-1)
    nodes = torch.as_tensor(_GL_NODES, dtype=wn.dtype, device=wn.device)
    weights = torch.as_tensor(_GL_WEIGHTS, dtype=wn.dtype, device=wn.device)
    sn = wn * nodes
    log_i = torch.log((wn * weights * torch.exp(sn * (ys.unsqueeze(-1) - 0.5 * sn))).sum(-1))
    s_left = torch.where(narrow, log_i, s_left)
    d = torch.where(narrow, log1mexp(torch.clamp(log_i - ly - _HALF_LOG_PI_2, max=0.0)), d)
    # Straddling 0: Phi(y) - Phi(x) = (erf(y/sqrt2) + erf(-x/sqrt2))/2, a sum of two
    # nonnegative terms, exact even for narrow intervals.
    xm = torch.where(left, -1.0, x)
    ym = torch.where(left, 1.0, y)
    mass = 0.5 * (torch.erf(_SQRT1_2 * ym) + torch.erf(-_SQRT1_2 * xm))
    s = torch.where(left, s_left, torch.log(mass) + _LOG_SQRT_2PI)
    return s, c, d, left


def _log_s(u, terms):
    """``log S`` and ``u dlogS/du`` at ``u = 1/t^2``, series truncated after ``u^terms``."""
    coeffs = _LOG_S_COEFFS[:terms]
    val = torch.mul(u, coeffs[-1])
    der = torch.mul(u, terms * coeffs[-1])
    for n in range(terms - 1, 0, -1):
        val.add_(coeffs[n - 1]).mul_(u)
        der.add_(n * coeffs[n - 1]).mul_(u)
    return val, der


def tail_offset(k, e, iterations, terms=8):
    """Solve ``log Phi(-k) - log Phi(-k - delta) = e`` for ``delta >= 0`` (``k >= 7``).

    With ``t = k + delta`` the left side is
    ``h(delta) = k delta + delta^2/2 + log1p(delta/k) + log S(k) - log S(t)`` exactly, and
    ``h'(delta) = t + q(t)``, ``q(t) = (1 + 2 u dlogS/du)/t = (1 - 2u + O(u^2))/t`` (the
    normal hazard at ``t``). Start from the root of ``(k + q(k)) delta + delta^2/2 = e``,
    whose relative error is about ``delta / (2 k^3)``, and take Newton steps with the
    two-term ``q``: each squares the error and adds a factor ``10/t^6`` (the derivative's
    error), which for ``k >= 7`` is below 1e-4. ``k`` may be batch-shaped, ``e``
    sample-shaped; the loop runs in place (sampling speed is bound by memory traffic).
    """
    k = torch.as_tensor(k, dtype=e.dtype)
    uk = k.reciprocal().square()
    log_sk, dk = _log_s(uk, terms)
    kappa = k + (1 + 2 * dk) / k
    inv_k = k.reciprocal()
    if k.numel() == 1 and not torch.jit.is_tracing():  # Python scalars: faster
        k, log_sk, kappa, inv_k = k.item(), log_sk.item(), kappa.item(), inv_k.item()
    # delta = 2 e / (kappa + sqrt(kappa^2 + 2 e)), the stable root of the quadratic.
    delta = torch.mul(e, 2).add_(kappa**2).sqrt_().add_(kappa)
    delta = torch.div(e, delta, out=delta).mul_(2)
    t, ut, h, tmp = (torch.empty_like(delta) for _ in range(4))
    for _ in range(iterations):
        torch.add(delta, k, out=t)
        torch.reciprocal(t, out=ut).square_()
        # log S(t) by Horner, into tmp
        coeffs = _LOG_S_COEFFS[:terms]
        torch.mul(ut, coeffs[-1], out=tmp)
        for n in range(terms - 1, 0, -1):
            tmp.add_(coeffs[n - 1]).mul_(ut)
        # h - e = delta (k + delta/2) + log1p(delta/k) + log S(k) - log S(t) - e
        torch.mul(delta, inv_k, out=h).log1p_().sub_(tmp).add_(log_sk).sub_(e)
        torch.mul(delta, 0.5, out=tmp).add_(k)
        h.addcmul_(delta, tmp)
        # h' = t + (1 - 2u)/t
        ut.mul_(-2).add_(1).div_(t).add_(t)
        delta.sub_(h.div_(ut))
    return delta.clamp_(min=0.0)


def ndtri_pair(p, q, small, rmin=None, overwrite=False):
    """``z`` with ``Phi(z) = p`` (so ``Phi(-z) = q``), for ``p + q = 1`` both accurate.

    The root is found on the smaller side, ``z0 <= 0`` with ``Phi(z0) = r = min(p, q)``,
    then signed like ``p - q``. The guess ``-|sqrt(2) erfinv(p - q)|`` (``p - q = 2p - 1``
    formed without rounding error) is good while ``r >= small``; below, the asymptotic
    root ``-sqrt(s - log s)``, ``s = -2 log r - log(2 pi)``, is. Newton steps on
    ``Phi(z) = r`` with ``Phi(z) = erfc(-z/sqrt2)/2`` then square the error (factor
    ``|z|/2``): 1 (float32) or 2 (float64) from the first guess, one more from the second.
    Returns ``(z, rmin)``; values with ``r`` below ~64 times the smallest normal number
    are inaccurate (the caller redoes them in log space when ``rmin`` says so).
    ``rmin``, if given, stands in for ``min(r)`` (a lower bound of it is enough) and spares
    a reduction; ``overwrite`` lets ``p`` and ``q`` serve as scratch buffers (sampling
    speed is bound by memory traffic).
    ``torch.special.ndtri`` gives the same values 5x slower on CPU.
    """
    double = p.dtype == torch.float64
    tracing = torch.jit.is_tracing()
    t = torch.sub(p, q)
    r = torch.minimum(p, q, out=p) if overwrite else torch.minimum(p, q)
    if rmin is None:
        rmin = float(r.min()) if r.numel() and not tracing else 0.0
    z = torch.erfinv(t, out=q) if overwrite else torch.erfinv(t)
    z.abs_().mul_(-math.sqrt(2.0))
    steps = 2 if double else 1
    if rmin < small:
        idx = None if tracing else rare_indices(r, small, above=False)
        if tracing or (idx is not None and idx[0].numel() > r.numel() // 8):
            z = torch.where(r < small, _asymptotic_root(r), z)
            steps += 1
        elif idx is not None:  # a few: solve them apart, sparing the bulk a Newton step
            rs = r[idx]
            z[idx] = _newton_phi(_asymptotic_root(rs), rs, steps + 1)
    _newton_phi(z, r, steps, consume_r=overwrite)
    return torch.copysign(z, t, out=z), rmin


def _asymptotic_root(r):
    s = torch.log(r).mul_(-2).sub_(2 * _LOG_SQRT_2PI).clamp_(min=1.0)
    return s.sub_(torch.log(s)).sqrt_().neg_()


def _newton_phi(z, r, steps, consume_r=False):
    """Newton steps in place on ``Phi(z) = r``, for ``z <= 0``; ``consume_r``: ``r`` may
    serve as scratch once no longer needed."""
    f = torch.empty_like(z)
    e = None
    zero = z.new_zeros(())
    for i in range(steps):
        # z -= (Phi(z) - r) / phi(z) = (erfc(-z/sqrt2) - 2r) exp(z^2/2) sqrt(pi/2)
        torch.mul(z, -_SQRT1_2, out=f)
        torch.special.erfc(f, out=f)
        f.sub_(r, alpha=2)
        if e is None:
            e = r if consume_r and i == steps - 1 else torch.empty_like(z)
        # z^2/2 in one pass ((z/2) z: the halving is exact)
        torch.addcmul(zero, z, z, value=0.5, out=e).exp_()
        z.sub_(f.mul_(e), alpha=math.sqrt(math.pi / 2))
    return z


def ndtri_exp(y):
    """Inverse of ``log_ndtr`` on ``y <= log(1/2)`` (returns ``z <= 0``).

    ``ndtri(exp(y))`` where ``exp(y)`` is a normal number, else Newton's method on
    ``log Phi(z) = L(z) - log 2 - z^2/2`` from the asymptotic root
    ``z = -sqrt(s - log s)``, ``s = -2 y - log(2 pi)``.
    """
    finfo = torch.finfo(y.dtype)
    low = y < math.log(finfo.tiny) + 1.0
    z = torch.special.ndtri(torch.exp(torch.where(low, _LOG_HALF, y)))
    if torch.jit.is_tracing() or low.any():
        ys = torch.where(low, y, -1e3)
        s = -2 * ys - 2 * _LOG_SQRT_2PI
        zt = -torch.sqrt(s - torch.log(s))
        for _ in range(6):
            f = log_erfcx_neg(zt) - _LOG_2 - 0.5 * zt * zt - ys
            # d/dz log Phi(z) = phi(z)/Phi(z) = sqrt(2/pi) / erfcx(-z/sqrt2)
            zt = zt - f * torch.special.erfcx(-_SQRT1_2 * zt) / math.sqrt(2 / math.pi)
        z = torch.where(low, zt, z)
    return torch.where(y == -math.inf, -math.inf, z)
