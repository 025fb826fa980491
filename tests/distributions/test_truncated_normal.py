"""Edge cases of :class:`TruncatedNormal`: exactness far in the tails, implicit gradients.

References: ``scipy.stats.truncnorm`` (accurate far into the tails at the chosen points)
and mpmath at 50 digits where scipy itself loses digits (moments, points near a bound).
"""

import functools
import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit, unif01_goodness_of_fit
from torch import broadcast_shapes

import pyro_dirmag.distributions.truncated_normal as tn_module
from pyro_dirmag.distributions import TruncatedNormal

INF = math.inf
LOC, SCALE = 1.5, 2.0
DTYPES = [torch.float32, torch.float64]
# Standardized bounds (alpha, beta): unbounded, central, one-sided, both in one tail,
# the mirror images, wide, narrow.
BOUNDS = [
    (-INF, INF),
    (-1.0, 2.0),
    (-INF, 0.5),
    (0.3, INF),
    (-1e-3, 2e-3),
    (-30.0, 30.0),
    (-5.0, 40.0),
    (8.0, INF),
    (8.0, 9.0),
    (20.0, INF),
    (20.0, 20.5),
    (40.0, INF),
    (40.0, 41.0),
    (-9.0, -8.0),
    (-INF, -40.0),
    (-41.0, -40.0),
]
BOUNDS_64 = [(1000.0, INF), (1000.0, 1000.01), (-INF, -1000.0), (-1001.0, -1000.0)]
QUANTILES = [1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999]
mp.mp.dps = 50


def _cases(dtype):
    return BOUNDS + (BOUNDS_64 if dtype == torch.float64 else [])


def _dist(alpha, beta, dtype, **kwargs):
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    return TruncatedNormal(
        t(LOC), t(SCALE), t(LOC + SCALE * alpha), t(LOC + SCALE * beta), **kwargs
    )


def _mp_mass(alpha, beta):
    """Phi(beta) - Phi(alpha) to 50 digits, mirrored to avoid 1 - 1."""
    if alpha > 0:
        return mp.ncdf(-alpha) - mp.ncdf(-beta)
    return mp.ncdf(beta) - mp.ncdf(alpha)


def _std_bounds(d):
    """The distribution's own (rounded) bounds, standardized exactly."""
    return [(mp.mpf(float(v)) - LOC) / SCALE for v in (d.low, d.high)]


def _mp_ref(alpha, beta, x):
    """log density and cdf at the float x (unstandardized); alpha, beta standardized."""
    alpha, beta = mp.mpf(alpha), mp.mpf(beta)
    z = (mp.mpf(float(x)) - LOC) / SCALE
    mass = _mp_mass(alpha, beta)
    log_prob = -z * z / 2 - mp.log(mp.sqrt(2 * mp.pi)) - mp.log(SCALE) - mp.log(mass)
    return float(log_prob), float(_mp_mass(alpha, z) / mass)


def _points(alpha, beta, dtype):
    """Evaluation points: quantiles of the law, rounded to dtype, inside the support."""
    x = scipy.stats.truncnorm(alpha, beta, loc=LOC, scale=SCALE).ppf(QUANTILES)
    x = torch.tensor(x, dtype=dtype)
    d = _dist(alpha, beta, dtype)
    return torch.maximum(torch.minimum(x, d.high), d.low)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_log_prob_cdf_vs_scipy_and_mpmath(dtype):
    # float64: 1e-9 relative everywhere, 1000 sd out included. float32: a few ulps of the
    # log density (values are O(1) to O(10)); cdf to 2e-5 relative (its condition number
    # near a bound 40 sd out is |x| p(x)/F(x) ~ 100).
    rtol = 1e-9 if dtype == torch.float64 else 2e-5
    for alpha, beta in _cases(dtype):
        d = _dist(alpha, beta, dtype)
        x = _points(alpha, beta, dtype)
        x64 = x.double().numpy()
        a, b = _std_bounds(d)
        ref = scipy.stats.truncnorm(float(a), float(b), loc=LOC, scale=SCALE)
        lp, cdf = d.log_prob(x).double().numpy(), d.cdf(x).double().numpy()
        mp_lp, mp_cdf = np.array([_mp_ref(a, b, xi) for xi in x64]).T
        case = f"bounds ({alpha}, {beta})"
        np.testing.assert_allclose(lp, mp_lp, rtol=rtol, atol=rtol, err_msg=case)
        np.testing.assert_allclose(cdf, mp_cdf, rtol=rtol, atol=1e-300, err_msg=case)
        if abs(alpha) < 1000 and abs(beta) < 1000:  # scipy's cdf loses ~1e-8 there
            np.testing.assert_allclose(lp, ref.logpdf(x64), rtol=rtol, atol=rtol, err_msg=case)
            np.testing.assert_allclose(cdf, ref.cdf(x64), rtol=rtol, err_msg=case)


def _mp_icdf(a, b, u, z0):
    """Standardized quantile of the law on [a, b] at u (mpmath Newton from the guess z0)."""
    mass, z = _mp_mass(a, b), mp.mpf(z0)
    for _ in range(20):
        z -= (_mp_mass(a, z) / mass - u) / (mp.npdf(z) / mass)
    assert abs(_mp_mass(a, z) / mass - u) < 1e-30
    return z


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_icdf_vs_scipy(dtype):
    # Error measured in standard deviations of the truncated law plus a few ulps of x
    # (a float32 x 40 sd out carries 2e-4 sd of rounding by itself).
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    eps = torch.finfo(dtype).eps
    for alpha, beta in _cases(dtype):
        d = _dist(alpha, beta, dtype)
        u = torch.tensor(QUANTILES, dtype=dtype)
        x = d.icdf(u).double().numpy()
        a, b = _std_bounds(d)
        expected = scipy.stats.truncnorm(float(a), float(b), loc=LOC, scale=SCALE).ppf(
            u.double().numpy()
        )
        if abs(alpha) >= 1000 or abs(beta) >= 1000:
            # scipy's ppf is off by ~1e-6 sd there: solve F(x) = u with mpmath instead.
            z0 = (x - LOC) / SCALE
            z = [_mp_icdf(a, b, mp.mpf(float(ui)), zi) for ui, zi in zip(u, z0, strict=True)]
            expected = np.array([float(LOC + SCALE * zi) for zi in z])
        sd = math.sqrt(_mp_moments(alpha, beta)[1]) * SCALE
        err = np.abs(x - expected) - 4 * eps * np.abs(expected)
        assert err.max() <= tol * sd, f"bounds ({alpha}, {beta}): {err.max() / sd:.3g} sd"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_icdf_extreme_quantiles_vs_mpmath(dtype):
    # deep in the lower tail of the law (large exponent E = -log u for the tail solver)
    tiny = [1e-30, 1e-36] if dtype == torch.float32 else [1e-30, 1e-100, 1e-300]
    cases = [(-INF, INF), (-1.0, 2.0), (-INF, -8.0), (-INF, -20.0), (-20.5, -20.0)]
    cases += [(-INF, -40.0), (-41.0, -40.0)] + (BOUNDS_64 if dtype == torch.float64 else [])
    eps = torch.finfo(dtype).eps
    for alpha, beta in cases:
        d = _dist(alpha, beta, dtype)
        u = torch.tensor(tiny + [1e-12, 0.5], dtype=dtype)
        x = d.icdf(u).double().numpy()
        a, b = _std_bounds(d)
        z = [
            _mp_icdf(a, b, mp.mpf(float(ui)), (xi - LOC) / SCALE)
            for ui, xi in zip(u, x, strict=True)
        ]
        expected = np.array([float(LOC + SCALE * zi) for zi in z])
        sd = math.sqrt(_mp_moments(float(a), float(b))[1]) * SCALE
        err = np.abs(x - expected) - 4 * eps * np.abs(expected)
        assert err.max() <= 1e-9 * sd, f"bounds ({alpha}, {beta}): {err.max() / sd:.3g} sd"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_icdf_ends_are_the_bounds(dtype):
    # awkward loc/scale: loc + scale * alpha is not exact, the clamp keeps x in [low, high]
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    for low, high in [(-0.7, 1.3), (0.71, 1.9), (-1.9, -0.71), (40.3, 41.1), (-INF, 0.3)]:
        d = TruncatedNormal(t(0.1), t(0.3), t(low), t(high))
        ends = d.icdf(t([0.0, 1.0]))
        assert ends[0] == d.low and ends[1] == d.high
        x = d.icdf(t([1e-7, 1 - 1e-7]))
        assert ((x >= d.low) & (x <= d.high)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cdf_icdf_round_trip(dtype):
    for alpha, beta in _cases(dtype):
        d = _dist(alpha, beta, dtype)
        q = torch.tensor(QUANTILES, dtype=dtype)
        x = d.icdf(q)
        # Float64 reference of the cdf at the returned points: the round trip is then
        # limited only by the rounding of x = loc + scale z, i.e. by p(x) ulp(x).
        d64 = _dist(alpha, beta, torch.float64)
        u = d64.cdf(x.double())
        ulp = torch.finfo(dtype).eps * x.double().abs().clamp(min=LOC + SCALE)
        slack = 8 * ulp * d64.log_prob(x.double()).exp()
        assert ((u - q.double()).abs() <= 1e-12 + slack).all(), (alpha, beta)
        assert x.dtype == dtype and torch.isfinite(x).all()


@functools.lru_cache
def _mp_moments(alpha, beta):
    """Mean, variance and entropy of the standardized truncated normal (mpmath)."""
    a, b = mp.mpf(alpha), mp.mpf(beta)
    mass = _mp_mass(a, b)
    c = min(max(mp.mpf(0), a), b)  # integrate the offset from the mode, as in the class
    dens = lambda z: mp.npdf(z) / mass  # noqa: E731
    lo, hi = max(a, c - 60), min(b, c + 60)
    pts = [lo, c, hi] if lo < c < hi else [lo, hi]
    if abs(c) > 1:  # the mass sits within a few 1/|c| of the near bound
        edge = c + (-10 / c if c < 0 else -10 / c)
        pts = sorted(set(pts + [min(max(edge, lo), hi)]))
    mean = mp.quad(lambda z: (z - c) * dens(z), pts) + c
    var = mp.quad(lambda z: (z - mean) ** 2 * dens(z), pts)
    ent = mp.quad(lambda z: -dens(z) * mp.log(dens(z)), pts)
    return float(mean), float(var), float(ent)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_moments_vs_mpmath(dtype):
    # scipy's closed forms fail here (its variance 1000 sd out is negative and its
    # entropy NaN for infinite bounds), so the reference is mpmath quadrature at the
    # distribution's own (rounded) bounds.
    rtol = 1e-10 if dtype == torch.float64 else 2e-6
    eps = torch.finfo(dtype).eps
    for alpha, beta in _cases(dtype):
        d = _dist(alpha, beta, dtype)
        a, b = (float(v) for v in _std_bounds(d))
        mean, var, ent = _mp_moments(a, b)
        case = f"bounds ({alpha}, {beta})"
        mean, sd = LOC + SCALE * mean, math.sqrt(var) * SCALE
        assert abs(d.mean.item() - mean) <= rtol * sd + 2 * eps * abs(mean), case
        assert d.variance.item() == pytest.approx(SCALE**2 * var, rel=rtol), case
        assert d.entropy().item() == pytest.approx(ent + math.log(SCALE), rel=rtol, abs=rtol)
        if abs(alpha) < 30 and abs(beta) < 30:
            ref = scipy.stats.truncnorm(a, b, loc=LOC, scale=SCALE)
            assert d.variance.item() == pytest.approx(ref.var(), rel=max(rtol, 1e-8)), case
            assert d.mean.item() == pytest.approx(ref.mean(), rel=max(rtol, 1e-8)), case


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_samples_finite_and_inside_far_tails(dtype):
    cases = [(40.0, INF), (40.0, 41.0), (-INF, -40.0), (-40.5, -40.0), (-INF, INF), (39.0, 40.0)]
    if dtype == torch.float64:
        cases += [(1000.0, INF), (-1000.5, -1000.0), (1000.0, 1000.001)]
    for alpha, beta in cases:
        d = _dist(alpha, beta, dtype)
        x = d.rsample((100000,))
        assert x.dtype == dtype
        assert torch.isfinite(x).all(), (alpha, beta)
        assert ((x >= d.low) & (x <= d.high)).all(), (alpha, beta)


@pytest.mark.parametrize(
    "alpha, beta",
    [(-INF, INF), (-1.0, 2.0), (0.3, INF), (-INF, -3.0), (8.0, 9.0), (1000.0, INF)],
    ids=str,
)
def test_goodness_of_fit_float64(alpha, beta):
    d = _dist(alpha, beta, torch.float64)
    x = d.sample((20000,))
    assert auto_goodness_of_fit(x, d.log_prob(x).exp()) > 1e-3
    # the same samples through the cdf are uniform (probes the tails of the draw)
    assert unif01_goodness_of_fit(d.cdf(x)) > 1e-3


@pytest.mark.parametrize("alpha, beta", [(-1.0, 2.0), (-INF, 0.5), (40.0, INF)], ids=str)
def test_goodness_of_fit_float32(alpha, beta):
    # float32 draws 40 sd out take ~6000 distinct values, so test them through a
    # float64 cdf (binned) rather than with density gaps.
    d = _dist(alpha, beta, torch.float32)
    x = d.sample((20000,))
    assert unif01_goodness_of_fit(_dist(alpha, beta, torch.float64).cdf(x.double())) > 1e-3
    if alpha < 10:
        assert auto_goodness_of_fit(x, d.log_prob(x).exp()) > 1e-3


def test_goodness_of_fit_detects_wrong_law():
    # the tests above can fail: draws of a law with loc off by 0.05 sd are rejected
    # through the cdf, and off by 0.5 sd by the (weaker) density-gap test
    d = _dist(-1.0, 2.0, torch.float64)
    x = TruncatedNormal(d.loc + 0.05 * SCALE, d.scale, d.low, d.high).sample((20000,))
    assert unif01_goodness_of_fit(d.cdf(x)) < 1e-3
    x = TruncatedNormal(d.loc + 0.5 * SCALE, d.scale, d.low, d.high).sample((20000,))
    assert auto_goodness_of_fit(x, d.log_prob(x).exp()) < 1e-3


@pytest.mark.parametrize(
    "alpha, beta", [(-INF, INF), (-1.0, 2.0), (0.3, INF), (40.0, INF), (-1001.0, -1000.0)], ids=str
)
def test_density_normalized(alpha, beta):
    d = _dist(alpha, beta, torch.float64)
    a, b = (float(v) for v in _std_bounds(d))
    mode = min(max(0.0, a), b)  # the mass sits within a few sd of the law from here
    sd = math.sqrt(_mp_moments(a, b)[1])
    edges = sorted({min(max(mode + k * sd, a), b) for k in (-40, -10, -3, 0, 3, 10, 40)})
    # composite 64-point Gauss-Legendre on pieces a few sd wide (vectorized, exact to ~1e-15)
    nodes, weights = np.polynomial.legendre.leggauss(64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        z = torch.tensor(0.5 * (hi + lo) + 0.5 * (hi - lo) * nodes)
        total += (
            0.5
            * (hi - lo)
            * SCALE
            * float((d.log_prob(LOC + SCALE * z).exp() * torch.tensor(weights)).sum())
        )
    # (1000 sd out, rounding z -> x moves each node by ~1e-13 where p ~ 1e3)
    assert total == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize(
    "alpha, beta",
    [(-1.0, 2.0), (-INF, 0.5), (0.3, INF), (-INF, INF), (1.0, 3.0), (-4.0, -2.5)],
    ids=str,
)
def test_implicit_gradient_vs_finite_differences(alpha, beta):
    dtype = torch.float64
    params = [torch.tensor(v, dtype=dtype) for v in (LOC, SCALE, LOC + SCALE * alpha)]
    params.append(torch.tensor(LOC + SCALE * beta, dtype=dtype))
    params = [p.requires_grad_() for p in params]
    u = torch.tensor([0.02, 0.3, 0.5, 0.8, 0.97], dtype=dtype)
    x = TruncatedNormal(*params).icdf(u)
    h = 1e-6
    for i, p in enumerate(params):
        if math.isinf(p.item()):
            continue
        jac = torch.stack([torch.autograd.grad(xj, p, retain_graph=True)[0] for xj in x])
        plus = [q.detach() + h * (j == i) for j, q in enumerate(params)]
        minus = [q.detach() - h * (j == i) for j, q in enumerate(params)]
        fd = (TruncatedNormal(*plus).icdf(u) - TruncatedNormal(*minus).icdf(u)) / (2 * h)
        torch.testing.assert_close(jac, fd, rtol=1e-6, atol=1e-8)
    # and with respect to u: dx/du = 1/p(x)
    ur = u.clone().requires_grad_()
    xu = TruncatedNormal(*params).icdf(ur)
    (gu,) = torch.autograd.grad(xu.sum(), ur)
    torch.testing.assert_close(gu, torch.exp(-TruncatedNormal(*params).log_prob(xu.detach())))


def _mp_jacobian(alpha, beta, u, z0):
    """dx/d(loc, scale, low, high) at the u-quantile (loc 0, scale 1), mpmath."""
    a, b = mp.mpf(alpha), mp.mpf(beta)
    z = _mp_icdf(a, b, mp.mpf(u), z0)
    ratio = lambda t: mp.exp((z - t) * (z + t) / 2) if t not in (-mp.inf, mp.inf) else 0  # noqa: E731
    j_low, j_high = (1 - u) * ratio(a), u * ratio(b)
    j_scale = z - (a * j_low if j_low else 0) - (b * j_high if j_high else 0)
    return [float(1 - j_low - j_high), float(j_scale), float(j_low), float(j_high)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_implicit_gradient_far_tail(dtype):
    cases = [(8.0, 9.0), (40.0, INF), (-41.0, -40.0), (20.0, 20.5)]
    if dtype == torch.float64:
        cases += [(1000.0, INF), (-INF, -1000.0)]
    # float32: dx/dloc ~ 1/alpha^2 is formed from 1 - J_low; 40 sd out a float32 x
    # carries a relative error alpha^2 eps there.
    rtol = 1e-8 if dtype == torch.float64 else 3e-3
    for alpha, beta in cases:
        params = [torch.tensor(v, dtype=dtype, requires_grad=True) for v in (0.0, 1.0, alpha, beta)]
        u = [0.05, 0.5, 0.95]
        x = TruncatedNormal(*params).icdf(torch.tensor(u, dtype=dtype))
        for j, uj in enumerate(u):
            grads = torch.autograd.grad(x[j], params, retain_graph=True)
            expected = _mp_jacobian(alpha, beta, uj, x[j].item())
            for g, e in zip(grads, expected, strict=True):
                assert torch.isfinite(g)
                assert g.item() == pytest.approx(e, rel=rtol, abs=1e-300), (alpha, beta, uj)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rsample_gradients_finite_far_tail(dtype):
    for alpha, beta in [(40.0, INF), (-INF, -40.0), (40.0, 40.5), (-INF, INF), (0.0, INF)]:
        params = [torch.tensor(v, dtype=dtype, requires_grad=True) for v in (0.0, 1.0, alpha, beta)]
        x = TruncatedNormal(*params).rsample((5000,))
        grads = torch.autograd.grad(x.sum(), params)
        assert all(torch.isfinite(g) for g in grads), (alpha, beta)


@pytest.mark.parametrize("alpha, beta", [(-1.0, 2.0), (0.5, INF), (-INF, INF)], ids=str)
def test_expected_pathwise_gradient_of_loc_is_variance(alpha, beta):
    # d E[X]/d loc at fixed bounds = Cov(X, d log p/d loc) = Var(X)/scale^2.
    loc = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    d = TruncatedNormal(loc, 1.7, 0.3 + 1.7 * alpha, 0.3 + 1.7 * beta)
    x = d.rsample((200000,))
    (g,) = torch.autograd.grad(x.sum(), loc)
    expected = d.variance.item() / 1.7**2
    assert g.item() / x.numel() == pytest.approx(expected, rel=0.01)


def test_log_prob_gradient_finite():
    for alpha, beta in [(-INF, INF), (-INF, 0.0), (40.0, INF), (-1.0, 2.0), (-1000.0, -999.0)]:
        params = [
            torch.tensor(v, dtype=torch.float64, requires_grad=True)
            for v in (0.0, 1.0, alpha, beta)
        ]
        d = TruncatedNormal(*params)
        x = d.sample((10,))
        lp = d.log_prob(x).sum() + d.cdf(x).sum() + d.entropy() + d.mean + d.variance
        # cdf at and beyond the bounds (0 or 1) keeps finite gradients too
        ends = torch.stack([d.low, d.high, d.low - 1, d.high + 1]).detach()
        lp = lp + TruncatedNormal(*params, validate_args=False).cdf(ends).sum()
        grads = torch.autograd.grad(lp, params, allow_unused=True)
        assert all(g is None or torch.isfinite(g) for g in grads), (alpha, beta)


def test_validation_errors():
    with pytest.raises(ValueError, match="scale"):
        TruncatedNormal(0.0, 0.0, -1.0, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="scale"):
        TruncatedNormal(0.0, float("nan"), -1.0, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="low"):
        TruncatedNormal(0.0, 1.0, 1.0, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="low"):
        TruncatedNormal(0.0, 1.0, 2.0, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="low"):
        TruncatedNormal(0.0, 1.0, float("nan"), 1.0, validate_args=True)
    with pytest.raises(ValueError, match="high"):
        TruncatedNormal(0.0, 1.0, 0.0, float("nan"), validate_args=True)
    d = TruncatedNormal(0.0, 1.0, -1.0, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor(1.5))
    with pytest.raises(ValueError):
        d.icdf(torch.tensor(1.5))


def test_outside_support_without_validation():
    low, high = torch.tensor([-1.0, 40.0, -INF]), torch.tensor([1.0, INF, 0.0])
    d = TruncatedNormal(0.0, 1.0, low, high, validate_args=False)
    x = torch.tensor([[-2.0, 39.0, 0.5], [2.0, -INF, INF], [INF, 39.999, 1e30]])
    lp = d.log_prob(x)
    assert (lp == -INF).all()
    cdf = d.cdf(x)
    assert not cdf.isnan().any()
    assert cdf.tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]


def test_infinite_points_and_quantiles():
    d = TruncatedNormal(0.0, 1.0, -INF, INF)
    assert d.log_prob(torch.tensor([INF, -INF])).tolist() == [-INF, -INF]
    assert d.icdf(torch.tensor([0.0, 1.0])).tolist() == [-INF, INF]
    d = TruncatedNormal(0.0, 1.0, 40.0, INF)
    assert d.icdf(torch.tensor([0.0, 1.0])).tolist() == [40.0, INF]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mixed_batch_matches_elementwise(dtype):
    # deep-tail and ordinary elements in one batch take different paths, then merge
    low = torch.tensor([-1.0, 40.0, -INF, 8.0, -INF], dtype=dtype)
    high = torch.tensor([2.0, INF, -40.0, 9.0, INF], dtype=dtype)
    d = TruncatedNormal(torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype), low, high)
    u = torch.tensor([[0.1], [0.5], [0.999]], dtype=dtype).expand(3, 5)
    x = d.icdf(u)
    for i in range(5):
        xi = TruncatedNormal(0.0, 1.0, low[i], high[i]).icdf(u[:, i])
        # (the batch may take one more Newton step than the element alone)
        torch.testing.assert_close(x[:, i], xi, rtol=4 * torch.finfo(dtype).eps, atol=0)
    s = d.rsample((1000,))
    assert torch.isfinite(s).all() and ((s >= low) & (s <= high)).all()
    # and so do their gradients
    loc, scale = torch.zeros(5, dtype=dtype, requires_grad=True), torch.ones((), dtype=dtype)
    grads = torch.autograd.grad(TruncatedNormal(loc, scale, low, high).icdf(u).sum(), loc)[0]
    for i in range(5):
        li = torch.zeros((), dtype=dtype, requires_grad=True)
        xi = TruncatedNormal(li, scale, low[i], high[i]).icdf(u[:, i])
        gi = torch.autograd.grad(xi.sum(), li)[0]
        # (float32 tail Jacobians carry alpha^2 eps, see test_implicit_gradient_far_tail)
        rtol = 3e-3 if dtype == torch.float32 else 1e-8
        torch.testing.assert_close(grads[i], gi, rtol=rtol, atol=1e-7)


def test_jit_trace_stays_live():
    # data-dependent branches are skipped under tracing: a trace made in the deep tail
    # must still be right when the parameters move the interval out of it
    def quantiles(loc):
        d = TruncatedNormal(loc, torch.tensor(1.0), torch.tensor(40.0), torch.tensor(INF))
        return d.icdf(torch.tensor([0.3, 0.7]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python scalars
        traced = torch.jit.trace(quantiles, (torch.tensor(0.0),), check_trace=False)
    for loc in (0.0, 39.0, 45.0):
        torch.testing.assert_close(traced(torch.tensor(loc)), quantiles(torch.tensor(loc)))


def test_shapes_broadcasting_and_expand():
    loc = torch.zeros(3, 1)
    d = TruncatedNormal(loc, 1.0, torch.tensor([-1.0, 0.0]), INF)
    assert d.batch_shape == (3, 2)
    assert d.rsample((4,)).shape == (4, 3, 2)
    assert d.log_prob(torch.tensor(0.5)).shape == (3, 2)
    assert d.cdf(torch.ones(5, 1, 1)).shape == (5, 3, 2)
    assert d.icdf(torch.full((5, 1, 1), 0.5)).shape == (5, 3, 2)
    assert d.mean.shape == d.variance.shape == d.entropy().shape == (3, 2)
    e = d.expand((7, 3, 2))
    assert e.batch_shape == (7, 3, 2) and e.sample().shape == (7, 3, 2)
    torch.testing.assert_close(e.log_prob(torch.tensor(0.5))[0], d.log_prob(torch.tensor(0.5)))
    assert d.support.check(torch.tensor([0.5, 2.0])).all()
    assert not d.support.check(torch.tensor([-2.0, -0.5])).any()
    # gradients reach broadcast parameters with their own shapes
    loc = torch.zeros(3, 1, requires_grad=True)
    low = torch.tensor([-1.0, 0.0], requires_grad=True)
    x = TruncatedNormal(loc, 1.0, low, INF).rsample((4,))
    gl, glow = torch.autograd.grad(x.sum(), [loc, low])
    assert gl.shape == (3, 1) and glow.shape == (2,)


def _broadcast_law(d):
    """The law ``d`` with each parameter materialized at the full batch shape (distinct
    values, no stride-0 dimensions): the general path, the reference for the fast ones."""
    return TruncatedNormal(
        *(t.contiguous() for t in (d.loc, d.scale, d.low, d.high)), validate_args=False
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scalar_and_tensor_bounds_of_different_values(dtype):
    # Issue 13: a scalar low with a tensor high of distinct values (and (3, 1) loc, scale)
    # raised "a Tensor with 4 elements cannot be converted to Scalar" in sample, rsample
    # and icdf (a clamp took .item() of both bounds when one was a scalar).
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    loc = t([[0.0], [0.5], [-1.5]]).requires_grad_()
    scale = t([[1.0], [0.3], [2.0]])
    high = t([0.5, 1.0, 2.0, INF])
    d = TruncatedNormal(loc, scale, -1.0, high)
    ref = _broadcast_law(d)
    assert d.batch_shape == (3, 4)
    torch.manual_seed(0)
    x = d.rsample((50,))
    torch.manual_seed(0)
    x_ref = ref.rsample((50,))
    assert x.shape == (50, 3, 4) and d.support.check(x).all()
    torch.testing.assert_close(x, x_ref)
    assert d.sample((2,)).shape == (2, 3, 4)
    (grad,) = torch.autograd.grad(x.sum(), loc)
    assert grad.shape == (3, 1) and grad.isfinite().all()
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(d.cdf(x), ref.cdf(x))
    u = torch.rand(5, 3, 4, dtype=dtype)
    torch.testing.assert_close(d.icdf(u), ref.icdf(u))
    torch.testing.assert_close(d.entropy(), ref.entropy())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scalar_bounds_and_loc_with_batched_scale(dtype):
    # Issue 13: scalar loc, low, high and a (10,) scale: log_prob of a scalar value raised
    # "output with shape [] doesn't match the broadcast shape [10]" (an in-place division
    # of a scalar-shaped temporary by the batched scale).
    scale = torch.linspace(0.1, 3.0, 10, dtype=dtype)
    for low, high in [(-1.0, 1.0), (0.5, 2.0), (-3.0, -2.0)]:
        d = TruncatedNormal(0.0, scale, low, high)
        ref = _broadcast_law(d)
        for value in [torch.tensor(0.75 * low + 0.25 * high, dtype=dtype)]:
            for shape in [(), (10,), (4, 1)]:
                v = value.expand(shape)
                lp = d.log_prob(v)
                assert lp.shape == broadcast_shapes(shape, (10,))
                torch.testing.assert_close(lp, ref.log_prob(v))
                torch.testing.assert_close(d.cdf(v), ref.cdf(v))
        x = d.rsample((7,))
        assert x.shape == (7, 10) and d.support.check(x).all()


# ---------------------------------------------------------------- the angle posterior's regime
# TN(mu, sigma, 0, pi/2), as DirMagGuide draws it: one law per unit, expanded to one copy
# per example (the per-law work is done on the compact parameters).
HALF_PI = math.pi / 2
ANGLE_CASES = [(0.0, 0.05), (0.7, 0.3), (2.5, 0.2), (-0.4, 0.02), (1.0, 5.0), (-3.0, 0.05)]


def _angle_law(locs, scales, dtype, requires_grad=False):
    loc = torch.tensor(locs, dtype=dtype, requires_grad=requires_grad)
    scale = torch.tensor(scales, dtype=dtype, requires_grad=requires_grad)
    zero = torch.zeros((), dtype=dtype)
    return TruncatedNormal(loc, scale, zero, zero + HALF_PI), loc, scale


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_angle_posterior_expanded_samples_match_scipy(dtype):
    locs, scales = zip(*ANGLE_CASES, strict=True)
    d, _, _ = _angle_law(locs, scales, dtype)
    torch.manual_seed(0)
    x = d.expand((20000, len(locs))).rsample()
    assert ((x >= 0) & (x <= d.high)).all()
    for i, (loc, scale) in enumerate(ANGLE_CASES):
        ref = scipy.stats.truncnorm(-loc / scale, (HALF_PI - loc) / scale, loc, scale)
        assert scipy.stats.kstest(x[:, i].double().numpy(), ref.cdf).pvalue > 1e-3, (loc, scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_expanded_and_broadcast_parameters_match_sample_shape(dtype):
    # d.expand(...).rsample(), a law built on stride-0 (expanded) parameter tensors and
    # d.rsample(sample_shape) make the same draws and the same gradients
    locs, scales = zip(*ANGLE_CASES, strict=True)
    n, k = 50, len(locs)
    draws, grads = [], []
    for how in ("sample_shape", "expand", "strided"):
        d, loc, scale = _angle_law(locs, scales, dtype, requires_grad=True)
        torch.manual_seed(3)
        if how == "sample_shape":
            x = d.rsample((n,))
        elif how == "expand":
            x = d.expand((n, k)).rsample()
        else:
            zero = torch.zeros((), dtype=dtype)
            x = TruncatedNormal(loc.expand(n, k), scale.expand(n, k), zero, zero + HALF_PI)
            x = x.rsample()
        draws.append(x.detach())
        grads.append(
            torch.autograd.grad((x * torch.linspace(0, 1, n * k).view(n, k)).sum(), [loc, scale])
        )
    for x, g in zip(draws[1:], grads[1:], strict=True):
        torch.testing.assert_close(x, draws[0], rtol=0, atol=0)
        torch.testing.assert_close(g, grads[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_angle_posterior_pathwise_gradient_of_mean(dtype):
    # d/dtheta E[x] by Monte Carlo over pathwise gradients equals the gradient of `mean`
    cases = [(0.0, 0.05), (0.7, 0.3), (2.5, 0.2), (-0.4, 0.02)]
    locs, scales = zip(*cases, strict=True)
    d, loc, scale = _angle_law(locs, scales, dtype, requires_grad=True)
    torch.manual_seed(1)
    x = d.expand((200000, len(cases))).rsample()
    mc = torch.stack(torch.autograd.grad(x.double().mean(0).sum(), [loc, scale])).double()
    d64, loc64, scale64 = _angle_law(locs, scales, torch.float64, requires_grad=True)
    exact = torch.stack(torch.autograd.grad(d64.mean.sum(), [loc64, scale64]))
    for i in range(len(cases)):
        tol = 5e-3 + 0.02 * exact[:, i].abs().max().item()
        torch.testing.assert_close(mc[:, i], exact[:, i], rtol=0, atol=tol)


def _takes(t, node):
    """Whether the autograd graph of ``t`` holds a node named ``node`` (which path ran)."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ == node:
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_angle_posterior_entropy_closed_form_and_quadrature(dtype):
    # laws in the closed form's regime (indices 0, 1, 2, 6) and out of it, mixed: both
    # paths against scipy, and the closed form (fast path) against the quadrature
    # (reference, fast_paths(False)) in values and gradients
    locs = [0.0, 0.7, 2.5, -0.4, 1.0, -3.0, 1.6, 4.0]
    scales = [0.05, 0.3, 0.2, 0.02, 5.0, 0.05, 0.01, 0.1]
    closed = [0, 1, 2, 6]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    gtol = 1e-3 if dtype == torch.float32 else 1e-9
    for idx in (range(len(locs)), closed):
        d, loc, scale = _angle_law([locs[i] for i in idx], [scales[i] for i in idx], dtype, True)
        h = d.entropy()
        assert _takes(h, "_ClosedFormEntropyBackward") == (idx == closed)
        with tn_module.fast_paths(False):
            quad = d.entropy()
        assert not _takes(quad, "_ClosedFormEntropyBackward")
        torch.testing.assert_close(h, quad, rtol=0, atol=tol)
        for i, h_i in zip(idx, h.tolist(), strict=True):
            a, b = -locs[i] / scales[i], (HALF_PI - locs[i]) / scales[i]
            if a > 8 or b < -8:
                continue  # scipy's entropy loses all precision with both bounds in one tail
            ref = scipy.stats.truncnorm(a, b, locs[i], scales[i]).entropy()
            assert h_i == pytest.approx(ref, abs=10 * tol), (locs[i], scales[i])
        g = torch.autograd.grad(h.sum(), [loc, scale])
        g_quad = torch.autograd.grad(quad.sum(), [loc, scale])
        torch.testing.assert_close(g, g_quad, rtol=gtol, atol=gtol)
    assert d.expand((4, len(closed))).entropy().shape == (4, len(closed))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_near_mode_backward_matches_log_space_path(dtype):
    # Draws from laws reaching within _FAST_REACH of their mode take their gradients from
    # four batch sums; the same draws through the general log-space Jacobians (the
    # reference path, fast_paths(False)) must agree.
    gen = torch.Generator().manual_seed(3)
    units = 40
    loc = torch.linspace(-0.2, 1.9, units, dtype=dtype)  # straddling, and c up to ~3
    scale = torch.rand(units, generator=gen, dtype=dtype) * 0.3 + 0.07
    low = torch.zeros(units, dtype=dtype)
    high = torch.full((units,), HALF_PI, dtype=dtype)
    low[:5] = -INF  # one-sided laws too
    high[5:10] = INF
    weights = torch.randn(500, units, generator=gen, dtype=dtype)

    def grads(fast):
        params = [t.clone().requires_grad_() for t in (loc, scale, low, high)]
        torch.manual_seed(1)
        with tn_module.fast_paths(fast):
            x = TruncatedNormal(*params).expand((500, units)).rsample()
            (x * weights).sum().backward()
        # the scale of each sum: sum |weight| times the largest Jacobian (<= 1, or |z|)
        return x, [p.grad for p in params]

    x_fast, g_fast = grads(True)
    x_slow, g_slow = grads(False)
    assert torch.equal(x_fast, x_slow)
    size = weights.abs().sum(0) * 10
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for fast, slow in zip(g_fast, g_slow, strict=True):
        assert ((fast - slow).abs() / size).max() < tol


def test_near_mode_backward_is_taken_only_near_the_mode():
    # A batch with a law beyond _FAST_REACH of its mode (c = 6 > 5) takes the reference
    # Jacobians with the fast paths on: the gradients are those of fast_paths(False), to
    # the bit; a batch near the mode agrees with the reference to rounding.
    def grads(locs, fast):
        loc = torch.tensor(locs, requires_grad=True)
        d = TruncatedNormal(loc, torch.tensor(0.1), torch.tensor(0.0), torch.tensor(HALF_PI))
        torch.manual_seed(0)
        with tn_module.fast_paths(fast):
            x = d.expand((10, 2)).rsample()
            (x * torch.linspace(-1, 1, 20).view(10, 2)).sum().backward()
        return x, loc.grad

    for locs, exact in (([0.3, 0.5], False), ([0.3, -0.6], True)):
        (x_fast, g_fast), (x_ref, g_ref) = grads(locs, True), grads(locs, False)
        assert torch.equal(x_fast, x_ref)
        assert torch.isfinite(g_fast).all()
        if exact:
            assert torch.equal(g_fast, g_ref)
        else:
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_straddling_laws_match_general_path(dtype):
    # Finite scalar bounds around every mode take shortcuts in the standardization,
    # the entropy and the near-mode gradients; the general path must agree.
    locs = [0.0, 0.2, 0.7, 1.2, HALF_PI, 0.05]
    scales = [0.05, 0.3, 5.0, 1e-3, 0.02, 0.01]

    def run():
        d, loc, scale = _angle_law(locs, scales, dtype, requires_grad=True)
        torch.manual_seed(0)
        x = d.expand((300, len(locs))).rsample()
        values = torch.stack([x[:, 0], x[:, 1]], -1).repeat(1, 3)
        out = [x, d.entropy(), d.log_prob(values), d.cdf(values), d.mean]
        grads = torch.autograd.grad(sum(o.sum() for o in out[1:]) + (x * x).sum(), [loc, scale])
        return out, grads

    fast, fast_grads = run()
    with tn_module.fast_paths(False):
        slow, slow_grads = run()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert torch.equal(fast[0], slow[0])
    for a, b in zip(fast[1:] + list(fast_grads), slow[1:] + list(slow_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_sided_near_laws_match_general_path(dtype):
    # Modes just outside the bounds (c up to 4.5), mixed with straddling laws: the
    # erfc-difference standardization must agree with the general log-space one.
    locs = [-0.1, 1.7, -0.0005, 0.4, 1.8, -0.02]
    scales = [0.05, 0.1, 0.3, 0.2, 0.4, 1.0]

    def run():
        d, loc, scale = _angle_law(locs, scales, dtype, requires_grad=True)
        torch.manual_seed(0)
        x = d.expand((300, len(locs))).rsample()
        values = x.detach()[:7]
        out = [x, d.entropy(), d.log_prob(values), d.cdf(values), d.mean, d.icdf(values * 0 + 0.3)]
        grads = torch.autograd.grad(sum(o.sum() for o in out[1:]) + (x * x).sum(), [loc, scale])
        return out, grads

    fast, fast_grads = run()
    with tn_module.fast_paths(False):
        slow, slow_grads = run()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in zip(fast + list(fast_grads), slow + list(slow_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_closed_form_entropy_matches_quadrature(dtype):
    # one-sided and straddling laws within the closed form's regime, finite bounds: the
    # one-node closed form with hand-written gradients (fast path) against autograd
    # through the quadrature (reference)
    locs = [-0.1, 1.7, -0.0005, 0.4, 1.8, -0.02, -0.5]
    scales = [0.05, 0.1, 0.3, 0.2, 0.4, 1.0, 0.2]
    d, loc, scale = _angle_law(locs, scales, dtype, requires_grad=True)
    fast = d.entropy()
    with tn_module.fast_paths(False):
        slow = d.entropy()
    assert _takes(fast, "_ClosedFormEntropyBackward")
    assert not _takes(slow, "_ClosedFormEntropyBackward")
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-14 if dtype == torch.float64 else 1e-6)
    w = torch.linspace(-1.0, 2.0, len(locs), dtype=dtype)
    g_fast = torch.autograd.grad((fast * w).sum(), [loc, scale])
    g_slow = torch.autograd.grad((slow * w).sum(), [loc, scale])
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(g_fast, g_slow, rtol=tol, atol=tol)


def test_closed_form_entropy_gradcheck():
    # all four parameters, float64, against finite differences, through the public class
    args = [
        torch.tensor([-0.1, 0.3, 1.8], dtype=torch.float64, requires_grad=True),
        torch.tensor([0.05, 0.4, 0.3], dtype=torch.float64, requires_grad=True),
        torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        torch.tensor(HALF_PI, dtype=torch.float64, requires_grad=True),
    ]

    def entropy(*params):
        return TruncatedNormal(*params).entropy()

    assert _takes(entropy(*args), "_ClosedFormEntropyBackward")
    assert torch.autograd.gradcheck(entropy, tuple(args))


def test_near_mode_backward_keeps_precision_far_from_the_mode():
    # A float32 draw 5.3 sd out (cdf 1 - 3e-8): e = phi(0)/phi(z) ~ 1e6 multiplies the tiny
    # 1 - F, which must come exactly from the draw, not as a difference of sums.
    def grads(fast):
        params = [torch.tensor(v).requires_grad_() for v in (0.0, 1.0, -1.0, 6.0)]
        w = torch.tensor([3e-8, 0.5, 1e-3])
        with tn_module.fast_paths(fast):
            # the rsample path at chosen uniforms (per-law quantities computed inside)
            x = tn_module._ImplicitICDF.apply(1 - w, w, True, None, *params)
            x.sum().backward()
        return x, [p.grad for p in params]

    x_fast, g_fast = grads(True)
    x_slow, g_slow = grads(False)
    assert torch.equal(x_fast, x_slow) and x_fast[0] > 5
    for fast, slow in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)


def test_cdf_gradient_finite_two_ulps_inside_a_narrow_interval():
    # Found by the property suite: in float32, at a value two ulps above low of an
    # interval 1e-6 wide, log1mexp's unused branch log1p(-exp(d)) met exp(d) == 1 and
    # torch.where turned its infinite derivative into a NaN gradient.
    params = [torch.tensor(v, requires_grad=True) for v in (0.0, 1.0, -0.5, -0.499999)]
    d = TruncatedNormal(*params)
    x = torch.nextafter(torch.nextafter(d.low, d.high), d.high).detach()
    grads = torch.autograd.grad(d.cdf(x), params)
    assert all(g.isfinite() for g in grads), grads


def test_fast_paths_switch_nests_and_restores():
    # The public switch of the fast paths: off inside the block (nested blocks too),
    # restored after it, even when the block raises; values agree either way. Which path
    # ran is seen in the entropy's graph; the same law (its paths cached) follows the
    # switch.
    d = TruncatedNormal(torch.tensor([0.3, 0.5], requires_grad=True), 0.1, 0.0, HALF_PI)

    def fast():
        return _takes(d.entropy(), "_ClosedFormEntropyBackward")

    h_fast = d.entropy()
    assert fast()
    with tn_module.fast_paths(False):
        with tn_module.fast_paths(True):
            assert fast()
        assert not fast()
        h_ref = d.entropy()
    assert fast()
    with pytest.raises(RuntimeError), tn_module.fast_paths(False):
        raise RuntimeError
    assert fast()
    torch.testing.assert_close(h_fast, h_ref, rtol=0, atol=1e-5)


class _CountCalls(torch.overrides.TorchFunctionMode):
    """Counts the torch functions called in the block."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("bounds", [(0.0, HALF_PI), (-INF, 1.0), (40.0, INF)], ids=str)
def test_per_law_quantities_computed_once(bounds):
    # sampling, icdf and no-grad densities reuse the laws' standardization and paths
    # (shared by expanded copies): later calls do less work than the first
    loc = torch.tensor([0.3, 0.5], requires_grad=True)
    d = TruncatedNormal(loc, torch.tensor([0.1, 0.2]), *bounds)
    e = d.expand((5, 2))
    with _CountCalls() as first:
        e.rsample((3,))
    with _CountCalls() as again:
        e.rsample((3,))
    with _CountCalls() as other_copy:
        d.rsample((7,))
    assert again.calls < first.calls and other_copy.calls == again.calls
    x = d.icdf(torch.tensor([0.3, 0.6])).detach()
    d = TruncatedNormal(loc, torch.tensor([0.1, 0.2]), *bounds)
    with torch.no_grad(), _CountCalls() as first:
        d.log_prob(x)
    with torch.no_grad(), _CountCalls() as again:
        d.expand((5, 2)).log_prob(x)
    assert again.calls < first.calls


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_per_law_quantities_follow_in_place_updates(dtype):
    # a law kept across optimizer steps (its parameters updated in place) must give what
    # a law built from the new values gives: the cache is keyed by the parameters'
    # versions (a plain lazy_property would keep the first step's values)
    loc = torch.tensor([0.3, 0.5], dtype=dtype, requires_grad=True)
    scale = torch.tensor([0.1, 0.2], dtype=dtype, requires_grad=True)
    zero = torch.zeros((), dtype=dtype)
    d = TruncatedNormal(loc, scale, zero, zero + HALF_PI)
    e = d.expand((4, 2))
    u = torch.tensor([0.2, 0.9], dtype=dtype)
    for _ in range(3):
        fresh = TruncatedNormal(loc.detach().clone(), scale.detach().clone(), zero, zero + HALF_PI)
        x = fresh.icdf(u)
        for law in (d, e):
            assert torch.equal(law.icdf(u).detach(), fresh.icdf(u).expand(law.batch_shape))
            torch.manual_seed(0)
            draw = law.rsample()
            torch.manual_seed(0)
            assert torch.equal(draw.detach(), fresh.expand(law.batch_shape).rsample())
            with torch.no_grad():
                assert torch.equal(law.log_prob(x), fresh.log_prob(x).expand(law.batch_shape))
                assert torch.equal(law.cdf(x), fresh.cdf(x).expand(law.batch_shape))
            assert torch.equal(law.entropy().detach(), fresh.entropy().expand(law.batch_shape))
        with torch.no_grad():  # an optimizer step, including the closed form's regime edge
            loc.add_(1.0)
            scale.mul_(3.0)


@pytest.mark.parametrize("bounds", [(0.0, HALF_PI), (-INF, 1.0), (6.0, INF)], ids=str)
def test_gradients_of_a_law_used_again(bounds):
    # The cache holds no autograd graph: backward twice through the same law, and second
    # derivatives of log_prob after the cache was filled under no_grad, give what a fresh
    # law gives.
    def make():
        p = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.4, 0.3)]
        return p, TruncatedNormal(*p, *bounds)

    (loc, scale), d = make()
    x = d.icdf(torch.tensor([0.2, 0.7], dtype=torch.float64)).detach()
    with torch.no_grad():
        d.log_prob(x), d.entropy(), d.rsample(), d.mean  # fill the cache without a graph
    grads = []
    for _ in range(2):
        torch.manual_seed(0)
        loss = d.log_prob(x).sum() + d.rsample((3,)).sum() + d.entropy() + d.variance
        grads.append(torch.autograd.grad(loss, [loc, scale]))
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    (g,) = torch.autograd.grad(d.log_prob(x).sum(), [loc], create_graph=True)
    second = torch.autograd.grad(g, [loc, scale])
    (loc2, scale2), fresh = make()
    torch.manual_seed(0)
    loss = fresh.log_prob(x).sum() + fresh.rsample((3,)).sum() + fresh.entropy() + fresh.variance
    assert all(
        torch.equal(a, b)
        for a, b in zip(grads[0], torch.autograd.grad(loss, [loc2, scale2]), strict=True)
    )
    (g2,) = torch.autograd.grad(fresh.log_prob(x).sum(), [loc2], create_graph=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(second, torch.autograd.grad(g2, [loc2, scale2]), strict=True)
    )
    assert all(t.isfinite().all() for t in second)
