r"""
Standardization of :class:`~pyro_dirmag.distributions.TruncatedNormal`: the per-law
quantities (standardized bounds, log normalizer, reflection masks) that every operation
starts from, the switch between the reference paths and the fast paths
(:func:`~pyro_dirmag.distributions.truncated_normal.fast_paths`), and the one function
that chooses a batch's fast paths (:func:`choose_paths`).

Every law is reflected into the left tail (``x -> -x`` when ``alpha > 0``); with ``c``
the point of ``[alpha, beta]`` nearest 0, ``log Z = s + log phi(c)`` where ``s`` comes from
:func:`~pyro_dirmag.distributions._normal_tails.log_ndtr_diff` (the reference,
:func:`_std_reference`), or, for finite scalar bounds reaching near every mode, from
differences of ``erf``/``erfc`` (the fast path, :func:`_std_near_mode`).

Besides the fast paths, some steps skip work whose result is known: a ``torch.where``
whose mask is uniform over the batch evaluates one side (:func:`_select`), one-element
parameters enter kernels as Python numbers (:func:`_scalar`). These give the same values
and are not paths; they are off with the fast paths, so that ``fast_paths(False)`` runs
the plain reference.
"""

import contextlib
import math
from types import SimpleNamespace
from typing import NamedTuple

import torch

from .._shapes import broadcast_size
from ._normal_tails import log_ndtr_diff
from ._support import all_within

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_SQRT1_2 = math.sqrt(0.5)
# The one-sided fast path of the standardization takes laws reaching within this many
# standard deviations of their mode.
_FAST_REACH = 5.0

_FAST_PATHS = [True]


@contextlib.contextmanager
def fast_paths(enabled):
    """
    Within the block, :class:`TruncatedNormal` takes its fast paths (``enabled=True``,
    the default) or only its reference paths (``enabled=False``).

    Each operation has one reference path, valid for every law, and at most one fast
    path, taken for batches of laws that qualify (finite scalar bounds reaching near
    the mode for the standardization, the entropy and the sampling gradients) and
    checked on the data. Both give the same values to rounding (tested); the switch
    exists to test them against each other and to measure what the fast paths save.
    Fast paths are off under a ``torch.jit`` trace, whose graph cannot depend on the data.

    :param bool enabled: whether fast paths are taken.
    """
    previous = _FAST_PATHS[0]
    _FAST_PATHS[0] = bool(enabled)
    try:
        yield
    finally:
        _FAST_PATHS[0] = previous


def _fast():
    """Whether fast paths may be taken (see :func:`fast_paths`); which ones a batch takes,
    :func:`choose_paths` decides."""
    return _FAST_PATHS[0] and not torch.jit.is_tracing()


def _tracing():
    return torch.jit.is_tracing()


def _scalar(t):
    """A one-element parameter as a Python number: scalar kernels are faster on CPU."""
    return t.item() if t.numel() == 1 and _fast() else t


def _compact(t):
    """``t`` without its stride-0 (broadcast) dimensions, kept with size 1 so that it still
    broadcasts to ``t.shape``: per-law quantities are then computed once per law."""
    if not torch.is_tensor(t) or _tracing() or 0 not in t.stride():
        return t
    index = tuple(
        slice(0, 1) if stride == 0 and size > 1 else slice(None)
        for size, stride in zip(t.shape, t.stride(), strict=True)
    )
    return t[index]


def _select(mask, if_true, if_false, pair=False):
    """``torch.where(mask, if_true(), if_false())``, evaluating one side when ``mask`` is
    uniform (typically a scalar batch): the backward pass then skips dead branches."""
    if _fast():
        if bool(mask.all()):
            return if_true()
        if not bool(mask.any()):
            return if_false()
    a, b = if_true(), if_false()
    if pair:
        return tuple(torch.where(mask, ai, bi) for ai, bi in zip(a, b, strict=True))
    return torch.where(mask, a, b)


def _sub_div(a, b, scale):
    """``(a - b) / scale`` for any broadcast shapes, dividing in place (one temporary,
    not two) when ``a - b`` already has the shape of the result."""
    d = torch.sub(a, b)
    if (
        scale.shape == d.shape
        or (scale.numel() == 1 and scale.dim() <= d.dim())
        or broadcast_size(d.shape, scale.shape) == d.shape
    ):
        return d.div_(scale)
    return d / scale


def _finite_scalars(low, high):
    """Whether both bounds are finite one-element tensors (the fast paths' condition)."""
    if not _fast() or low.numel() != 1 or high.numel() != 1:
        return False
    return math.isfinite(low.detach().item()) and math.isfinite(high.detach().item())


def _straddling_mass(alpha, beta):
    """``Phi(beta) - Phi(alpha)`` for ``alpha <= 0 <= beta``, as a sum of two nonnegative
    terms (the operations of ``log_ndtr_diff``'s straddling branch, for identical values)."""
    return 0.5 * (torch.erf(_SQRT1_2 * beta) + torch.erf(-_SQRT1_2 * alpha))


class Paths(NamedTuple):
    """Which fast paths a batch of laws takes (see :func:`choose_paths`)."""

    #: standardization by ``erf``/``erfc`` differences (:func:`_std_near_mode`) instead
    #: of the log-space reference (:func:`_std_reference`)
    std: bool
    #: entropy in closed form (``_ClosedFormEntropy``) instead of the quadrature
    entropy: bool
    #: ``rsample``'s gradients from four batch sums per law (``near_mode_backward``)
    #: instead of the log-space Jacobians (``icdf_backward``)
    rsample_backward: bool
    #: every interval straddles its mode (``c = 0``): operations skip the reflection
    #: and the one-sided terms, which there are identities (not a path: same values)
    straddling: bool


REFERENCE = Paths(std=False, entropy=False, rsample_backward=False, straddling=False)


@torch.no_grad()
def choose_paths(loc, scale, low, high):
    """The one place that chooses the fast paths of a batch of laws, given its (compact)
    parameters: :data:`REFERENCE` when :func:`fast_paths` is off or under a trace.

    With ``c`` the point of ``[alpha, beta]`` nearest the mode and ``w = beta - alpha``:

    * ``std`` and ``entropy``: finite scalar bounds, and every law with ``|c| <= 5`` and
      ``w >= 1`` (where neither the ``erfc`` difference nor the closed-form entropy
      cancels), or straddling its mode (``c = 0``: ``std`` only, any width);
    * ``rsample_backward``: every law with ``|c| <= 5`` (any bounds).

    One host synchronization for the batch: the quantities are computed once per law
    and cached by :class:`~pyro_dirmag.distributions.TruncatedNormal`.
    """
    if not _fast():
        return REFERENCE
    alpha, beta = (low - loc) / scale, (high - loc) / scale
    near_c = torch.maximum(alpha, -beta).clamp(min=0.0)  # |c|
    near = near_c <= _FAST_REACH
    wide = (high - low) / scale >= 1.0
    straddling = near_c == 0
    flags = torch.stack(
        [(straddling | (near & wide)).all(), (near & wide).all(), near.all(), straddling.all()]
    ).tolist()
    finite = _finite_scalars(low, high)
    return Paths(
        std=finite and flags[0],
        entropy=finite and flags[1],
        rsample_backward=flags[2],
        straddling=finite and flags[3],
    )


def standardize(loc, scale, low, high, paths):
    """The per-law quantities of the (compact) parameters ``loc, scale, low, high``: the
    fast path :func:`_std_near_mode` if ``paths.std``, else the reference
    :func:`_std_reference`."""
    if paths.std:
        return _std_near_mode(loc, scale, low, high, paths.straddling)
    return _std_reference(loc, scale, low, high)


def _std_reference(loc, scale, low, high):
    """Standardization of every law, in log space
    (:func:`~pyro_dirmag.distributions._normal_tails.log_ndtr_diff`)."""
    low_inf, high_inf = low == -math.inf, high == math.inf
    low_f = torch.where(low_inf, 0.0, low)
    high_f = torch.where(high_inf, 0.0, high)
    alpha = torch.where(low_inf, -math.inf, (low_f - loc) / scale)
    beta = torch.where(high_inf, math.inf, (high_f - loc) / scale)
    width = torch.where(low_inf | high_inf, math.inf, (high_f - low_f) / scale)
    s, c, d, left = log_ndtr_diff(alpha, beta, width)
    return SimpleNamespace(
        loc=loc, scale=scale, low=low, high=high, low_f=low_f, high_f=high_f,
        low_inf=low_inf, high_inf=high_inf, alpha=alpha, beta=beta, width=width,
        flip=alpha > 0, left=left, s=s, c=c, d=d,
        log_z=s - 0.5 * c * c - 0.5 * math.log(2 * math.pi), straddling=False,
        finite=False,
    )  # fmt: skip


def _std_near_mode(loc, scale, low, high, straddling):
    """Standardization of laws with finite scalar bounds, each straddling its mode or at
    least one standard deviation wide and reaching within ``_FAST_REACH`` of it (the
    caller, :func:`choose_paths`, checks).

    Mirrored to the left of 0, ``Z = (erfc(-y/sqrt2) - erfc(-x/sqrt2))/2`` for the
    one-sided laws: with ``|c| <= 5`` nothing underflows, and a width of one standard
    deviation keeps the second term below ``e^-1/2`` of the first, so the difference
    loses under 2 bits (the general path's erfcx series is for the deep tails).
    Straddling laws take ``Phi(beta) - Phi(alpha)`` as a sum of two nonnegative terms,
    exact however narrow. When every law straddles (``straddling``), the reflection and
    the one-sided terms are identities and are skipped (a third of the operations:
    they dominate small batches).
    """
    alpha = _sub_div(low, loc, scale)
    beta = _sub_div(high, loc, scale)
    width = (high - low) / scale
    no = torch.zeros((), dtype=torch.bool, device=loc.device)
    if straddling:
        log_mass = torch.log(_straddling_mass(alpha, beta))
        c = torch.zeros_like(log_mass)
        right = left = c > 0
    else:
        right = alpha > 0
        c = torch.where(right, alpha, torch.clamp(beta, max=0.0))
        xl = torch.where(right, -beta, alpha)
        yl = torch.where(right, -alpha, beta)
        left = yl <= 0
        one_sided = 0.5 * (torch.erfc(-_SQRT1_2 * yl) - torch.erfc(-_SQRT1_2 * xl))
        log_mass = torch.log(torch.where(left, one_sided, _straddling_mass(alpha, beta)))
    if straddling:
        # log Z formed as the reference forms it (its straddling branch), to the bit
        s = log_mass + _LOG_SQRT_2PI
        log_mass = s - _LOG_SQRT_2PI
    else:
        s = log_mass + 0.5 * c * c + _LOG_SQRT_2PI
    return SimpleNamespace(
        loc=loc, scale=scale, low=low, high=high, low_f=low, high_f=high,
        low_inf=no, high_inf=no, alpha=alpha, beta=beta, width=width,
        flip=right, left=left, s=s, c=c, d=torch.full_like(s, -math.inf),
        log_z=log_mass, straddling=straddling, finite=True,
    )  # fmt: skip


def log_prob_std(p, value, inside=None):
    # log p = [log phi(z) - log phi(c)] - [log Z - log phi(c)] - log scale, with the
    # first bracket -(z - c)(z + c)/2 and z - c measured from the near bound exactly.
    # Per-law quantities are formed on the compact parameters: two passes over the
    # values fewer than selecting per value, and no mask when every value is inside.
    if p.straddling:  # c = 0 and the base is the mode: the same values, two passes fewer
        zc = _sub_div(value, p.loc, p.scale)
        lp = torch.addcmul(-(p.s + torch.log(p.scale)), zc, zc, value=-0.5)
    else:
        base = torch.where(p.flip, p.low_f, torch.where(p.left, p.high_f, p.loc))
        zc = _sub_div(value, base, p.scale)
        lp = torch.addcmul(-(p.s + torch.log(p.scale)), zc, zc + 2 * p.c, value=-0.5)
    if inside or (inside is None and all_within(value, p.low, p.high)):
        return lp
    return torch.where((value < p.low) | (value > p.high), -math.inf, lp)
