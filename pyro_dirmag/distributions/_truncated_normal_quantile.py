r"""
Quantiles of :class:`~pyro_dirmag.distributions.TruncatedNormal` and their implicit
reparameterization gradients [1]: ``dx/dtheta = -(dF(x; theta)/dtheta) / p(x)``.

The quantile is solved in the reflected standardized frame: directly
(:func:`~pyro_dirmag.distributions._normal_tails.ndtri_pair`) while the bound nearest
the mode is within ``_DEEP_TAIL`` standard deviations, else as the offset from that
bound (:func:`~pyro_dirmag.distributions._normal_tails.tail_offset`). Gradients take
the log-space Jacobians (:func:`icdf_backward`, the reference) or, for draws from laws
reaching within ``_FAST_REACH`` of their mode, four batch sums per law
(:func:`near_mode_backward`, the fast path).

**References:**

[1] M. Figurnov, S. Mohamed, A. Mnih (2018) "Implicit Reparameterization Gradients".
"""

import math

import torch

from .._autograd import first_order_only
from ._normal_tails import _DEEP_TAIL, _LOG_S_COEFFS, ndtri_exp, ndtri_pair, tail_offset
from ._truncated_normal_std import (
    _fast,
    _scalar,
    _select,
    _tracing,
    choose_paths,
    log_prob_std,
    standardize,
)


def _series_terms(kmin, dtype):
    """Fewest terms of the log S series whose error is negligible for all ``k >= kmin``."""
    u = 1.0 / kmin**2
    eps = torch.finfo(dtype).eps / 8
    for n in range(1, len(_LOG_S_COEFFS)):
        if 2 * (n + 1) * abs(_LOG_S_COEFFS[n]) * u ** (n + 2) < eps:
            return n
    return len(_LOG_S_COEFFS)


class _ImplicitICDF(torch.autograd.Function):
    """``x = F^{-1}(u; loc, scale, low, high)`` with implicit reparameterization gradients.

    ``dx/dtheta = -(dF(x; theta)/dtheta) / p(x)`` (Figurnov et al. 2018), which for the
    truncated normal with standardized ``alpha, beta, z`` reads::

        dx/dlow  = (1 - F) phi(alpha) / phi(z)        dx/dhigh = F phi(beta) / phi(z)
        dx/dloc  = 1 - dx/dlow - dx/dhigh             dx/dscale = z - alpha dx/dlow - beta dx/dhigh

    The ratios are formed in log space from ``log F``, ``log(1 - F)`` (known exactly from
    the uniform draw) and ``(z - alpha)(z + alpha)/2`` with ``z - alpha = (x - low)/scale``,
    so they stay finite where ``phi(z)`` underflows.
    """

    @staticmethod
    def forward(ctx, u, w, reflected, per_law, loc, scale, low, high):
        # per_law: the laws' (paths, detached standardization), cached by the distribution;
        # None under a jit trace, where they are computed here from the tensors so that
        # the trace stays live (non-tensor arguments of a Function are baked in).
        if per_law is None:
            params = (loc.detach(), scale.detach(), low.detach(), high.detach())
            paths = choose_paths(*params)
            p = standardize(*params, paths)
        else:
            paths, p = per_law
        # Draws (reflected=True) take the fast backward when the paths allow it (see
        # near_mode_backward); it needs the standardized root kept from the forward.
        ctx.near_mode = reflected and not ctx.needs_input_grad[0] and paths.rsample_backward
        x, offset, z = icdf_nograd(u, w, reflected, p, keep_std=ctx.near_mode)
        ctx.reflected = reflected
        # The per-law quantities (shaped like the compact parameters) for the backward.
        ctx.p = p
        ctx.save_for_backward(x, u, w, offset, z, loc, scale, low, high)
        ctx.mark_non_differentiable(offset)
        return x

    @staticmethod
    @first_order_only
    def backward(ctx, grad):
        x, u, w, offset, z, *params = ctx.saved_tensors
        need = ctx.needs_input_grad
        if ctx.near_mode:
            grad_u, grads = None, near_mode_backward(ctx.p, grad, z, u, w)
        else:
            grad_u, *grads = icdf_backward(
                ctx.p, grad, x, u, w, offset, ctx.reflected, need[0], need[4:]
            )
        grads = [
            g.sum_to_size(param.shape) if n else None
            for g, param, n in zip(grads, params, need[4:], strict=True)
        ]
        return (grad_u, None, None, None, *grads)


def _axpy(x, a, b):
    """``x * a + b`` in one pass when ``a`` and ``b`` are tensors (per-law values)."""
    if torch.is_tensor(a) and torch.is_tensor(b):
        return torch.addcmul(b, x, a)
    return torch.mul(x, a).add_(b)


@torch.no_grad()
def icdf_nograd(u, w, reflected, p, keep_std=False):
    """Quantile at cdf ``u`` (``w = 1 - u``), found in the reflected standardized frame.

    There ``v`` is the mass between ``lo`` and the quantile; ``reflected`` says that
    ``(u, w)`` already are ``(v, 1 - v)`` (sampling) rather than cdf values.
    Returns ``(x, offset, z)``; ``z``, the standardized root in the reflected frame, is
    kept (else ``None``) when ``keep_std`` and no law is in the deep tail.
    """
    # offset: standardized distance of deep-tail quantiles to their near bound, exact
    # to rounding (x - low carries the rounding of x); used by the gradients.
    offset = u.new_empty(())
    z = None
    if p.straddling:  # nothing reflected, no bound beyond the mode: no deep tail
        x, z = _icdf_direct(p, p.alpha, p.beta, u, w, keep_std)
    else:
        flip, k0 = p.flip, _DEEP_TAIL.get(u.dtype, 20.0)
        lo = torch.where(flip, -p.beta, p.alpha)
        hi = torch.where(flip, -p.alpha, p.beta)
        v, vw = (u, w) if reflected else (torch.where(flip, w, u), torch.where(flip, u, w))
        deep = hi <= -k0
        if _fast() and not deep.any():
            x, z = _icdf_direct(p, lo, hi, v, vw, keep_std)
        elif _fast() and deep.all():
            x, offset = _icdf_deep(p, hi, v, vw, deep, k0)
        else:
            x, offset = _icdf_deep(p, hi, v, vw, deep, k0)
            x = torch.where(deep, x, _icdf_direct(p, lo, hi, v, vw)[0])
    # A safety net: rounding could step an ulp outside [low, high] (not seen in tests).
    if p.low.numel() == 1 and p.high.numel() == 1 and not _tracing():
        # (scalar bounds: the scalar kernel is the faster one)
        return x.clamp_(p.low.item(), p.high.item()), offset, z
    return x.clamp_(p.low, p.high), offset, z


def _icdf_direct(p, lo, hi, v, vw, keep_std=False):
    # Phi(z) = Phi(lo) + v Z and Phi(-z) = Phi(-hi) + (1 - v) Z: sums of positive
    # terms, accurate in linear space while the smaller is not tiny.
    # (torch.special.ndtr is 1 + erf and underflows to 0 below -8.3: use log_ndtr.)
    z_norm = _scalar(torch.exp(p.log_z))
    phi_lo = torch.exp(torch.special.log_ndtr(lo))
    phi_hi = torch.exp(torch.special.log_ndtr(-hi))
    pp = _axpy(v, z_norm, _scalar(phi_lo))
    qq = _axpy(vw, z_norm, _scalar(phi_hi))
    tiny = 64 * torch.finfo(pp.dtype).tiny
    small = 1e-10 if pp.dtype == torch.float64 else 1e-4
    rmin = None
    if not _tracing() and pp.numel():
        # min(pp, qq) without a pass over the draws where the per-law floors (pp >= Phi(lo),
        # qq >= Phi(-hi): sums of nonnegative terms) settle the branches taken.
        rmin = min(float(phi_lo.min()), float(phi_hi.min()))
        if rmin < small:
            rmin = min(float(pp.min()), float(qq.min()))
    # pp and qq are needed after the solve only by the log-space redo below.
    overwrite = rmin is not None and rmin >= tiny
    z, rmin = ndtri_pair(pp, qq, small, rmin, overwrite)
    if rmin < tiny:
        # Quantiles below the smallest normal number (icdf only): redo in log space.
        use_p = pp <= qq
        rare = torch.minimum(pp, qq) < tiny
        idx = rare.nonzero(as_tuple=True)
        use_p, shape = use_p[idx], rare.shape
        log_z = p.log_z.expand(shape)[idx]
        log_r = torch.where(
            use_p,
            torch.logaddexp(torch.special.log_ndtr(lo.expand(shape)[idx]), v[idx].log() + log_z),
            torch.logaddexp(torch.special.log_ndtr(-hi.expand(shape)[idx]), vw[idx].log() + log_z),
        )
        zr = ndtri_exp(log_r)
        z[idx] = torch.where(use_p, zr, -zr)
    step = p.scale if p.straddling else torch.where(p.flip, -p.scale, p.scale)
    step, base = _scalar(step), _scalar(p.loc)
    if keep_std:
        # (x may be z itself for a standard law: its clamp then applies to both alike)
        if not torch.is_tensor(step) and step == 1.0:
            x = z if not torch.is_tensor(base) and base == 0.0 else z + base
        else:
            x = torch.mul(z, step).add_(base)
        return x, z
    # (a unit scale or zero shift of a scalar law is an identity: spare the pass)
    if torch.is_tensor(step) or step != 1.0:
        z.mul_(step)
    if torch.is_tensor(base) or base != 0.0:
        z.add_(base)
    return z, None


def _icdf_deep(p, hi, v, vw, deep, k0):
    # Both bounds beyond k0 on one side. With rho = Phi(z)/Phi(hi) in [e^d, 1], solve
    # log Phi(hi) - log Phi(hi - delta) = -log rho for the offset delta >= 0 from the
    # near bound; rho = e^d + v (1 - e^d). Forming rho in linear space costs an
    # absolute error eps in -log rho, i.e. eps/k in delta: below an ulp of the bound.
    k = torch.where(deep, -hi, k0)
    d = torch.where(deep, p.d, -math.inf)
    e = torch.mul(v, _scalar(-torch.expm1(d))).add_(_scalar(torch.exp(d))).log_().neg_()
    kmin = k0 if _tracing() else float(k.min())
    iters = (1 if kmin >= 20 else 2) + (v.dtype == torch.float64)
    delta = tail_offset(_scalar(k), e, iters, _series_terms(kmin, v.dtype))
    if _tracing() or (e == math.inf).any():  # icdf(0) of a one-sided tail
        delta = torch.where(e == math.inf, math.inf, delta)
    if _tracing() or (deep & (p.width < math.inf)).any():
        delta = torch.minimum(delta, torch.where(deep, p.width, math.inf))
    base = _scalar(torch.where(p.flip, p.low_f, p.high_f))
    step = _scalar(torch.where(p.flip, p.scale, -p.scale))
    return torch.mul(delta, step).add_(base), delta


def near_mode_backward(p, grad, z, v, w):
    r"""Parameter gradients of draws from laws reaching within ``_FAST_REACH`` of
    their mode, summed onto the law's shape: four batch sums per law.

    ``z`` is the standardized root in the reflected frame, ``v`` its cdf there and
    ``w = 1 - v`` (both exact, from the uniform draw). The Jacobians of
    ``_icdf_backward`` factor as :math:`J_\mathrm{low} = (1 - F)\, a\, e` and
    :math:`J_\mathrm{high} = F\, b\, e` with the per-draw
    :math:`e = \phi(c)/\phi(z) = \exp((z^2 - c^2)/2)` and the per-law
    :math:`a = \phi(\alpha)/\phi(c)`, :math:`b = \phi(\beta)/\phi(c)`, ``c`` the point of
    the interval nearest 0, so only :math:`\sum g`, :math:`\sum g z`, :math:`\sum g e v`
    and :math:`\sum g e w` are taken over the draws (``F`` is ``v`` or ``w`` per law,
    and ``z`` changes sign, with the reflection). ``e`` cannot overflow: sampled ``z``
    lie within ``-log(u_min)/|c|`` (or 9 when ``c = 0``) of ``c``; where ``e`` is large
    the factor ``v`` or ``w`` beside it is small and exact, so each product keeps its
    relative precision. ``1 - J_low - J_high`` is formed by subtraction of the sums,
    which costs at most ``c^2 <= 25`` ulps relative to the Jacobians' own size, the
    price of skipping the log-space path.
    """
    shape = p.c.shape
    c2 = p.c * p.c
    e = (z * z).mul_(0.5) if p.straddling else torch.addcmul(-0.5 * c2, z, z, value=0.5)
    ge = e.exp_().mul_(grad)
    sum_ev = (ge * v).sum_to_size(shape)
    sum_ew = ge.mul_(w).sum_to_size(shape)
    sum_1 = grad.sum_to_size(shape)
    sum_z = (grad * z).sum_to_size(shape)
    if p.straddling:  # nothing reflected
        sum_f, sum_1mf = sum_ev, sum_ew
    else:
        # back to the original frame: F = 1 - v and z -> -z where the law was reflected
        sum_f = torch.where(p.flip, sum_ew, sum_ev)
        sum_1mf = torch.where(p.flip, sum_ev, sum_ew)
        sum_z = torch.where(p.flip, -sum_z, sum_z)
    if p.finite:
        alpha_f, beta_f = p.alpha, p.beta
        a = torch.exp(0.5 * (c2 - alpha_f * alpha_f))
        b = torch.exp(0.5 * (c2 - beta_f * beta_f))
    else:
        alpha_f = torch.where(p.low_inf, 0.0, p.alpha)
        beta_f = torch.where(p.high_inf, 0.0, p.beta)
        a = torch.where(p.low_inf, 0.0, torch.exp(0.5 * (c2 - alpha_f * alpha_f)))
        b = torch.where(p.high_inf, 0.0, torch.exp(0.5 * (c2 - beta_f * beta_f)))
    g_low = a * sum_1mf
    g_high = b * sum_f
    g_loc = sum_1 - g_low - g_high
    g_scale = sum_z - alpha_f * g_low - beta_f * g_high
    return g_loc, g_scale, g_low, g_high


def icdf_backward(p, grad, x, u, w, offset, reflected, need_u, need=(True,) * 4):
    """Gradients w.r.t. ``u`` and the parameters (``None`` where ``need`` is false),
    with ``p`` the forward's ``_std(detach=True)``."""
    if reflected:
        u, w = _select(p.flip, lambda: w, lambda: u), _select(p.flip, lambda: u, lambda: w)
    scale = p.scale
    alpha_f = torch.where(p.low_inf, 0.0, p.alpha)
    beta_f = torch.where(p.high_inf, 0.0, p.beta)
    omega_a = (x - p.low_f) / scale
    omega_b = (p.high_f - x) / scale
    if offset.dim():
        # deep tail: take the solver's offset, consistent with u, not the rounded x
        deep = torch.where(p.flip, -p.alpha, p.beta) <= -_DEEP_TAIL.get(x.dtype, 20.0)
        omega_a = torch.where(deep & p.flip, offset, omega_a)
        omega_b = torch.where(deep & ~p.flip, offset, omega_b)
    # log J_low = log(1 - F) + (z - alpha)(z + alpha)/2, with z - alpha = omega_a;
    # log J_high = log F + (z - beta)(z + beta)/2, with z - beta = -omega_b.
    log_ja = torch.log(w).addcmul_(omega_a, 0.5 * omega_a + alpha_f)
    log_jb = torch.log(u).addcmul_(omega_b, 0.5 * omega_b - beta_f)
    j_low = _select(p.low_inf, lambda: torch.zeros_like(x), lambda: torch.exp(log_ja))
    j_high = _select(p.high_inf, lambda: torch.zeros_like(x), lambda: torch.exp(log_jb))

    # In a tail the Jacobian of the near bound is ~1: form 1 - J by expm1 and write
    # z about that bound, so dx/dloc and dx/dscale keep their relative precision.
    def near_low():  # alpha > 0: z = alpha + omega_a
        one_m = -torch.expm1(log_ja)
        return one_m - j_high, omega_a + alpha_f * one_m - beta_f * j_high

    def near_high():  # beta <= 0: z = beta - omega_b
        one_m = _select(p.high_inf, lambda: 1.0, lambda: -torch.expm1(log_jb))
        return one_m - j_low, beta_f * one_m - omega_b - alpha_f * j_low

    def straddle():
        z = (x - p.loc) / scale
        return 1 - j_low - j_high, z - alpha_f * j_low - beta_f * j_high

    def other():
        return _select(~p.flip & p.left, near_high, straddle, pair=True)

    j_loc, j_scale = _select(p.flip, near_low, other, pair=True)
    grad_u = grad * torch.exp(-log_prob_std(p, x)) if need_u else None
    grads = [
        grad * j if n else None for j, n in zip((j_loc, j_scale, j_low, j_high), need, strict=True)
    ]
    return grad_u, *grads
