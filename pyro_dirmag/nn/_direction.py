r"""
Sampling helpers for the direction noise of the DirMag layers.

The direction of unit :math:`j` is :math:`\cos(\epsilon_j) u_j + \sin(\epsilon_j) \phi_j`
with :math:`\phi_j` uniform on the unit sphere of the tangent space at :math:`u_j`
(docs/MATH.md section 4). Three ways of drawing :math:`\phi` are provided:

* :func:`~pyro_dirmag.distributions._sphere.tangent_uniform`: explicit draws (the
  package's one sampler of tangent directions, shared with the sphere laws), used for
  the thesis's "shared" form (one :math:`\Phi` per mini-batch) and for per-example
  convolution kernels;
* :func:`tangent_projection`: the exact law of the scalar :math:`t = \phi_j \cdot x / \|x_\perp\|`
  for a dense layer (docs/MATH.md section 5), so that every example gets its own
  :math:`\phi` at the cost of a few elementwise operations;
* :func:`tangent_term`: :math:`\phi_{ij} \cdot x_i = \|x_{i\perp j}\|\, t_{ij}` from
  those draws, the one-matmul identity of the noisy layers (the dense DirMag layers
  evaluate it inside :func:`~pyro_dirmag.nn._rotated_output.rotated_output`).

The law of :math:`t`: in the :math:`(n-1)`-dimensional tangent space, :math:`\phi`
is :math:`z / \|z\|` with :math:`z` standard normal, so its coordinate along the fixed
unit vector :math:`x_\perp / \|x_\perp\|` is

.. math::

    t = \frac{z_1}{\sqrt{z_1^2 + C}}, \qquad z_1 \sim \mathcal{N}(0, 1),\quad
    C \sim \chi^2_{n-2} ,

equivalently :math:`t = 2B - 1` with :math:`B \sim \mathrm{Beta}((n-2)/2, (n-2)/2)`, i.e.
the density :math:`\propto (1 - t^2)^k` on :math:`[-1, 1]` with :math:`k = (n - 4)/2`.
A random variate costs as much as several elementwise passes, so for :math:`k \ge 1`
(:math:`n \ge 6`) :math:`t` is drawn by rejection from
:math:`\mathcal{N}(0, 1/(2k))`: :math:`(1-t^2)^k \le e^{-k t^2}` makes the proposal an
envelope with ratio :math:`\exp(k(\log(1 - t^2) + t^2)) \le 1`, accepted with
probability :math:`\mathrm{B}(1/2, k + 1)\sqrt{k/\pi} \approx 1 - 3/(8k)` (99.9% for
:math:`n = 784`, 75% at :math:`k = 1`); rejected draws are redrawn, never truncated.
Since rejections are that rare, large batches thin the acceptance test (one uniform
per proposal) to the candidates of a Bernoulli process whose rate bounds the rejection
probability of all but the farthest proposals, which are tested one by one
(:func:`_thinned_rejections`): at ``n = 784``, about 1.1 variates and three passes a
draw instead of two variates and ten passes, with the same law.
Smaller :math:`n` use :math:`C = 2\,\Gamma((n-2)/2)` drawn with
the Marsaglia-Tsang method (cheaper than ``torch._standard_gamma`` per draw; timings in
``benchmarks/bench_noise_kernels.py``).
"""

import math

import torch

from .._rare import rare_indices
from ..distributions._sphere import tangent_uniform

# Proposals of the tangent draw get their acceptance test by thinning from this many on,
# when every proposal's rejection probability is at most _THIN_MAX (else the full test).
_THIN_MIN = 1 << 15
_THIN_MAX = 0.3
# Beyond this many proposal standard deviations the test is made one proposal at a time.
_TAIL_Z = 3.5

#: Lower bound on :math:`\|x_\perp\|^2` in the per-example direction term of dense layers
#: (:func:`tangent_term`, :func:`~pyro_dirmag.nn._rotated_output.rotated_output`), both
#: families. :math:`\|x\|^2 - (u \cdot x)^2` is only known up to rounding (about
#: ``eps * ||x||^2``) and the square root's gradient :math:`1 / (2 \sqrt{\cdot})` blows up
#: near 0: below the floor the term is the constant :math:`10^{-6}\, t` with no gradient,
#: above it the gradient stays below :math:`5 \cdot 10^{5}`.
PERP_FLOOR = 1e-12

__all__ = [
    "PERP_FLOOR",
    "bernoulli_positions",
    "gamma_marsaglia_tsang",
    "squared_norms",
    "tangent_projection",
    "tangent_term",
    "tangent_uniform",
]


def gamma_marsaglia_tsang(concentration, shape, dtype=torch.float32, device=None):
    r"""
    Draws :math:`\Gamma(a, 1)` variates, :math:`a` a Python float, exactly.

    Marsaglia and Tsang (2000): with :math:`d = a - 1/3`, :math:`c = 1/\sqrt{9d}`,
    :math:`z \sim \mathcal{N}(0,1)`, :math:`v = (1 + cz)^3`, accept :math:`dv` when
    :math:`v > 0` and :math:`\log U < z^2/2 + d - dv + d \log v`. For :math:`a < 1`
    the boost :math:`\Gamma(a) = \Gamma(a+1) U^{1/a}` is used.

    :param float concentration: shape parameter :math:`a > 0`.
    :param torch.Size shape: shape of the returned tensor.
    :rtype: torch.Tensor
    """
    if not concentration > 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    boost = concentration < 1
    a = concentration + 1 if boost else concentration
    out = _marsaglia_tsang(a - 1.0 / 3.0, torch.Size(shape), dtype, device)
    if boost:
        u = torch.rand(shape, dtype=dtype, device=device)
        out = out * u.pow(1.0 / concentration)
    return out


def _marsaglia_tsang(d, shape, dtype, device):
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn(shape, dtype=dtype, device=device)
    v = (z * c + 1).pow_(3)
    ok = v > 0
    log_v = torch.where(ok, v, 1.0).log_()
    u = torch.rand(shape, dtype=dtype, device=device).log_()
    # accept iff log U < z^2/2 + d - d v + d log v
    ok &= u < (z * z).mul_(0.5).add_(log_v.sub_(v).add_(1).mul_(d))
    out = v.mul_(d)
    if not ok.all():
        # Redraw the (rare) rejected proposals; each redraw is again exact.
        bad = (~ok).nonzero(as_tuple=True)
        out[bad] = _marsaglia_tsang(d, bad[0].shape, dtype, device)
    return out


def tangent_projection(dim, shape, dtype=torch.float32, device=None):
    r"""
    Draws :math:`t = \phi \cdot e` for :math:`\phi` uniform on the unit sphere of the
    tangent space at a unit vector :math:`u \in \mathbb{R}^{n}` and :math:`e` a fixed unit
    vector orthogonal to :math:`u` (the law does not depend on :math:`u, e`).

    :param int dim: the ambient dimension :math:`n \ge 2`.
    :param torch.Size shape: shape of the returned tensor of independent draws.
    :rtype: torch.Tensor
    """
    if dim < 2:
        raise ValueError(f"direction noise needs at least 2 input features, got {dim}")
    if dim == 2:
        # The tangent "sphere" is the two points +-e.
        return torch.randint(0, 2, shape, device=device).to(dtype) * 2 - 1
    shape = torch.Size(shape)
    if dim >= 6:
        return _symmetric_power(0.5 * (dim - 4), shape, dtype, device)
    z = torch.randn(shape, dtype=dtype, device=device)
    chi2 = 2 * gamma_marsaglia_tsang(0.5 * (dim - 2), shape, dtype=dtype, device=device)
    return z * torch.rsqrt(z * z + chi2)


def _symmetric_power(k, shape, dtype, device):
    """Exact draws of the density proportional to ``(1 - t^2)^k`` on ``[-1, 1]``,
    ``k >= 1``, by rejection from ``N(0, 1/(2k))`` (see the module notes)."""
    t = torch.randn(shape, dtype=dtype, device=device).mul_(1.0 / math.sqrt(2.0 * k))
    if t.numel() == 0:
        return t
    bad = _rejections(t.view(-1), k, shape[-1] if len(shape) else 1)
    if bad is not None:
        t.view(-1)[bad] = _symmetric_power(k, bad.shape, dtype, device)
    return t


def _rejection_probability(k, t2):
    """``1 - exp(k (log(1 - t^2) + t^2))`` for a Python float ``t^2`` (1 at ``|t| >= 1``)."""
    if t2 >= 1.0:
        return 1.0
    return -math.expm1(k * (math.log1p(-t2) + t2))


def _rejection_probabilities(t, k):
    """:func:`_rejection_probability` of every value of ``t``, in float64."""
    t2 = t.double().square_().clamp_max_(1.0)
    return torch.log1p(t2.neg()).add_(t2).mul_(k).expm1_().neg_()


def _rejections(t, k, row):
    """Positions in the flat ``t`` of the proposals that the acceptance test of
    :func:`_symmetric_power` rejects, or ``None``; thinned for large tensors (see
    :func:`_thinned_rejections`, which screens rows of ``row`` values)."""
    if t.numel() >= _THIN_MIN:
        cut = _TAIL_Z / math.sqrt(2.0 * k)
        bound = _rejection_probability(k, cut * cut)
        if bound <= _THIN_MAX:
            bad = _thinned_rejections(t, k, cut, bound, row)
            return bad if bad.numel() else None
    # log acceptance ratio k (log(1 - t^2) + t^2) <= 0; |t| >= 1 gives -inf (rejected)
    t2 = (t * t).clamp_max_(1.0)
    log_ratio = torch.log1p(t2.neg()).add_(t2).mul_(k)
    # margin > 0 <=> log U > log ratio: rejected
    margin = torch.rand_like(t).log_().sub_(log_ratio)
    bad = rare_indices(margin.view(-1, row), 0.0)
    return None if bad is None else bad[0] * row + bad[1]


def _thinned_rejections(t, k, cut, bound, row):
    r"""Positions of the rejected proposals among the flat ``t``, where ``bound`` is the
    rejection probability :math:`q(t) = 1 - (1 - t^2)^k e^{k t^2}` at ``|t| = cut``.

    The acceptance test needs one uniform per proposal, as costly as the proposal itself,
    yet rejects one in a thousand at ``n = 784``. It is thinned instead. ``q`` grows with
    ``|t|``, so on the bulk ``|t| <= cut`` it is at most ``bound``: a Bernoulli process of
    rate ``bound`` over the positions (geometric gaps: about ``bound`` variates per
    proposal) picks candidates independently of ``t``, and a bulk candidate is rejected
    when ``bound U < q(t)``, ``U`` uniform, i.e. with probability
    ``bound * q(t) / bound = q(t)``. The few proposals beyond ``cut`` (``_TAIL_Z``
    proposal standard deviations), found by screening rows of ``row`` values, take the
    full test. Each proposal is thus rejected with probability ``q(t)``, independently of
    the others, exactly as by the full test; ``q`` is evaluated in float64, on the
    candidates only.
    """
    pos = bernoulli_positions(t.numel(), bound, device=t.device)
    cand = t[pos]
    u = torch.rand(pos.shape, dtype=torch.float64, device=t.device).mul_(bound)
    # rejected bulk candidates (tail candidates are left to the full test below)
    hit = (u < _rejection_probabilities(cand, k)) & (cand.abs() <= cut)
    tail = rare_indices(t.view(-1, row), cut, two_sided=True)
    if tail is None:
        return pos[hit]
    tail = tail[0] * row + tail[1]
    u = torch.rand(tail.shape, dtype=torch.float64, device=t.device)
    return torch.cat((pos[hit], tail[u < _rejection_probabilities(t[tail], k)]))


def bernoulli_positions(n, rate, device=None):
    """
    The positions in ``range(n)`` kept by independent Bernoulli(``rate``) trials, sorted,
    drawn through geometric gaps: about ``n * rate`` random variates instead of ``n``.

    :param int n: number of trials.
    :param float rate: success probability, in ``[0, 1)``.
    :rtype: torch.Tensor (int64)
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    chunks = []
    start = 0  # the next position to try; the process is memoryless
    log_fail = math.log1p(-rate)
    while rate > 0 and start < n:
        mean = (n - start) * rate
        count = int(mean + 6.0 * math.sqrt(mean) + 16)
        # failures before a success: floor(log V / log(1 - rate)), V = 1 - U in (0, 1]
        u = torch.rand(count, dtype=torch.float64, device=device)
        gaps = torch.log1p(u.neg_()).div_(log_fail).floor_().to(torch.int64).add_(1)
        pos = gaps.cumsum_(0).add_(start - 1)
        last = int(pos[-1])
        if last >= n:
            chunks.append(pos[: int(torch.searchsorted(pos, n))])
            break
        chunks.append(pos)
        start = last + 1
    if not chunks:
        return torch.zeros(0, dtype=torch.int64, device=device)
    return torch.cat(chunks) if len(chunks) > 1 else chunks[0]


def squared_norms(x):
    """``|x|^2`` over the last dimension, kept: one pass over ``x`` without a squared copy
    of it (``x.square().sum(-1)`` makes one); no gradient at 0 rows."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square()


def tangent_term(x, ux, floor=PERP_FLOOR):
    r"""
    Draws :math:`\phi_{ij} \cdot x_i` for :math:`\phi_{ij}` uniform on the unit sphere of
    the tangent space at :math:`u_j`, independently per example :math:`i` and unit
    :math:`j`, without forming :math:`\phi` (docs/MATH.md section 5):

    .. math::

        \phi_{ij} \cdot x_i = \sqrt{\|x_i\|^2 - (u_j \cdot x_i)^2}\; t_{ij},

    with :math:`t_{ij}` from :func:`tangent_projection`.

    :param torch.Tensor x: inputs, shape ``(..., n)``.
    :param torch.Tensor ux: the projections :math:`u_j \cdot x_i`, shape ``(..., units)``.
    :param float floor: lower bound on :math:`\|x_\perp\|^2` (default :data:`PERP_FLOOR`).
        It is non-negative only up to rounding, and the square root has no gradient where
        :math:`x` is parallel to :math:`u_j`; the clamp also stops the gradient there.
    :returns: shape ``(..., units)``.
    """
    perp = (squared_norms(x) - ux.square()).clamp_min(floor).sqrt()
    return perp * tangent_projection(x.shape[-1], ux.shape, dtype=ux.dtype, device=ux.device)
