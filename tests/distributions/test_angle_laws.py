import math

import mpmath
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from pyro.distributions import ProjectedNormal
from pyro.distributions.testing.gof import auto_goodness_of_fit

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    TangentProjectedNormal,
    TruncatedNormal,
)
from pyro_dirmag.distributions._sphere import (
    geodesic_angle,
    log_sphere_area,
    projected_normal_log_prob,
)

TEST_FAILURE_RATE = 1e-3
DTYPES = [torch.float32, torch.float64]


def random_unit(n, dtype=torch.float64, batch=()):
    x = torch.randn(batch + (n,), dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------- StretchedSymmetricBeta


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("c", [0.5, 1.0, 3.0, 40.0])
def test_stretched_beta_vs_scipy(c, dtype):
    d = StretchedSymmetricBeta(torch.tensor(c, dtype=dtype))
    ref = scipy.stats.beta(c, c, loc=-math.pi / 2, scale=math.pi)
    x = torch.linspace(-1.5, 1.5, 31, dtype=dtype)
    lp = d.log_prob(x)
    assert lp.dtype == dtype
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(lp.double().numpy(), ref.logpdf(x.double().numpy()), rtol=rtol)
    assert d.entropy().item() == pytest.approx(ref.entropy(), rel=rtol)
    assert d.variance.item() == pytest.approx(ref.var(), rel=rtol)
    assert d.mean.item() == 0.0


@pytest.mark.parametrize("c", [0.5, 3.0])
def test_stretched_beta_gof_and_support(c):
    d = StretchedSymmetricBeta(torch.tensor(c, dtype=torch.float64))
    x = d.sample((5000,))
    assert d.support.check(x).all()
    assert auto_goodness_of_fit(x, d.log_prob(x).exp()) > TEST_FAILURE_RATE


def test_stretched_beta_edges_and_validation():
    d = StretchedSymmetricBeta(torch.tensor([0.5, 1.0, 2.0]), validate_args=False)
    edge = torch.full((3,), math.pi / 2)  # float32 pi/2 exceeds the real pi/2
    lp = d.log_prob(edge)
    assert lp[0] == math.inf and lp[1] == pytest.approx(-math.log(math.pi)) and lp[2] == -math.inf
    assert d.log_prob(torch.full((3,), 2.0)).eq(-math.inf).all()
    with pytest.raises(ValueError, match="concentration"):
        StretchedSymmetricBeta(torch.tensor(-1.0), validate_args=True)
    with pytest.raises(ValueError):
        StretchedSymmetricBeta(torch.tensor(1.0), validate_args=True).log_prob(torch.tensor(2.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stretched_beta_samples_strictly_inside(dtype):
    # Issue 14: Beta draws within an ulp of 0 or 1 rounded onto +-pi/2 (4 infinite log
    # densities in 50000 float32 draws at c = 0.5, seed 123).
    half_pi = torch.tensor(math.pi / 2, dtype=dtype)
    for c in [0.5, 0.05]:
        torch.manual_seed(123)
        d = StretchedSymmetricBeta(torch.tensor(c, dtype=dtype))
        x = d.sample((50000,))
        assert (x.abs() < half_pi).all()
        assert d.log_prob(x).isfinite().all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stretched_beta_log_prob_near_the_ends_vs_mpmath(dtype):
    # Within a few ulps of +-pi/2 the density changes by orders of magnitude per ulp:
    # log_prob must use pi/2 - |x| exactly (scipy's (x + pi/2)/pi does not).
    mpmath.mp.dps = 50
    half_pi = torch.tensor(math.pi / 2, dtype=dtype)
    x = half_pi.clone()
    points = []
    for _ in range(4):
        x = torch.nextafter(x, torch.zeros_like(x))
        points += [x.item(), -x.item()]
    points = torch.tensor(points + [1.0, -1.5, 1.5707], dtype=dtype)
    for c in [0.1, 0.5, 3.0]:
        d = StretchedSymmetricBeta(torch.tensor(c, dtype=dtype))
        lp = d.log_prob(points)
        for value, actual in zip(points.tolist(), lp.tolist(), strict=True):
            cc = mpmath.mpf(c)
            u = (mpmath.pi / 2 - abs(mpmath.mpf(value))) / mpmath.pi
            expected = (cc - 1) * (mpmath.log(u) + mpmath.log(1 - u)) - mpmath.log(
                mpmath.beta(cc, cc) * mpmath.pi
            )
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            assert actual == pytest.approx(float(expected), rel=tol, abs=tol), (c, value)


def test_stretched_beta_rsample_gradient():
    # d/dc E[eps^2] = d/dc pi^2 / (4 (2c + 1)) from reparametrized samples.
    c = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    mc = torch.autograd.grad(StretchedSymmetricBeta(c).rsample((400000,)).square().mean(), c)[0]
    exact = -(math.pi**2) * 2 / (4 * (2 * 2.0 + 1) ** 2)
    assert mc.item() == pytest.approx(exact, rel=0.03)


# ---------------------------------------------------------------- TangentProjectedNormal


@pytest.mark.parametrize("n", [2, 3, 10, 784])
@pytest.mark.parametrize("scale", [0.05, 0.5, 3.0])
def test_tangent_projected_normal_normalized(n, scale):
    d = TangentProjectedNormal(random_unit(n), torch.tensor(scale, dtype=torch.float64))
    e = torch.randn(n, dtype=torch.float64)
    e = e - (e @ d.loc) * d.loc
    e = e / e.norm()

    def integrand(theta):
        x = math.cos(theta) * d.loc + math.sin(theta) * e
        lp = d.log_prob(x).item() + log_sphere_area(n - 2)
        return math.exp(lp + (n - 2) * math.log(math.sin(theta))) if n > 2 else math.exp(lp)

    peak = min(math.atan(scale * math.sqrt(n)), 1.5)
    value, _ = scipy.integrate.quad(integrand, 0, math.pi, points=[peak, math.pi / 2], limit=200)
    assert value == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 50, 784])
def test_tangent_projected_normal_angle_gof(n):
    # Direct sampling normalize(loc + scale z_t) against the angle law arctan(scale chi_{n-1}).
    d = TangentProjectedNormal(random_unit(n), torch.tensor(0.2, dtype=torch.float64))
    theta, _, _ = geodesic_angle(d.loc, d.rsample((5000,)))
    assert auto_goodness_of_fit(theta, d.angle_log_prob(theta).exp()) > TEST_FAILURE_RATE
    # and the angle law's own sampler
    eps = d.angle.sample((5000,))
    assert auto_goodness_of_fit(eps, d.angle.log_prob(eps).exp()) > TEST_FAILURE_RATE


@pytest.mark.parametrize("n", [2, 3])
def test_tangent_projected_normal_full_gof(n):
    d = TangentProjectedNormal(random_unit(n), torch.tensor(0.4, dtype=torch.float64))
    x = d.sample((20000,))
    assert auto_goodness_of_fit(x, d.log_prob(x).exp(), dim=n - 1) > TEST_FAILURE_RATE


@pytest.mark.parametrize("n", [2, 3, 30])
def test_tangent_projected_normal_closed_form_matches_plane_rotation(n):
    d = TangentProjectedNormal(random_unit(n, batch=(4,)), torch.rand(4, dtype=torch.float64) + 0.1)
    x = d.sample((50,))
    np.testing.assert_allclose(d.log_prob(x), PlaneRotation.log_prob(d, x), rtol=1e-9)
    # finite at loc, -inf on the far hemisphere
    at_loc = d.log_prob(d.loc)
    expected = -0.5 * (n - 1) * torch.log(2 * math.pi * d.scale**2)
    np.testing.assert_allclose(at_loc, expected, rtol=1e-12)
    assert d.log_prob(-d.loc).eq(-math.inf).all()


@pytest.mark.parametrize("n", [2, 5, 784])
@pytest.mark.parametrize("scale", [0.01, 0.3, 2.0])
def test_tangent_projected_normal_entropy(n, scale):
    d = TangentProjectedNormal(random_unit(n), torch.tensor(scale, dtype=torch.float64))
    x = d.sample((100000 if n < 100 else 10000,))
    lp = d.log_prob(x)
    tol = 4 * lp.std().item() / math.sqrt(len(lp)) + 1e-6
    assert d.entropy().item() == pytest.approx(-lp.mean().item(), abs=tol)
    if n < 100:  # the generic quadrature needs an angle law that is not too narrow
        assert PlaneRotation.entropy(d).item() == pytest.approx(d.entropy().item(), abs=1e-4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tangent_projected_normal_shapes_and_grad(dtype):
    raw = torch.randn(3, 1, 6, dtype=dtype, requires_grad=True)
    scale = torch.full((4,), 0.3, dtype=dtype, requires_grad=True)
    d = TangentProjectedNormal(raw / raw.norm(dim=-1, keepdim=True), scale)
    assert d.batch_shape == (3, 4) and d.event_shape == (6,)
    x = d.rsample((2,))
    assert x.shape == (2, 3, 4, 6) and x.dtype == dtype and d.support.check(x).all()
    lp = d.log_prob(x)
    assert lp.shape == (2, 3, 4) and lp.isfinite().all()
    x.sum().backward()
    assert raw.grad.isfinite().all() and scale.grad.isfinite().all() and scale.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="scale"):
        TangentProjectedNormal(raw.detach() / raw.detach().norm(dim=-1, keepdim=True), -scale)


# ---------------------------------------------------------------- TruncatedNormal as angle law


@pytest.mark.parametrize("n", [2, 3, 20])
@pytest.mark.parametrize("bounds", [(0.0, -math.pi / 2, math.pi / 2), (0.4, 0.0, math.pi / 2)])
def test_truncated_normal_angle_law(n, bounds):
    mu, a, b = bounds
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    d = PlaneRotation(random_unit(n), TruncatedNormal(t(mu), t(0.3), t(a), t(b)))
    theta, _, _ = geodesic_angle(d.loc, d.sample((5000,)))
    assert auto_goodness_of_fit(theta, d.angle_log_prob(theta).exp()) > TEST_FAILURE_RATE
    grid = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    assert torch.trapezoid(d.angle_log_prob(grid).exp(), grid).item() == pytest.approx(1, abs=1e-4)
    # |eps| of the symmetric law: twice the folded density
    if a < 0:
        np.testing.assert_allclose(
            d.angle_log_prob(grid[1:5000]), d.angle.log_prob(grid[1:5000]) + math.log(2)
        )


@pytest.mark.parametrize("n", [6, 50])  # the exact and the fused sampler
def test_tangent_projected_normal_rsample_gradient(n):
    # d/dscale E[x . v] from reparametrized samples vs the quadrature mean
    loc = random_unit(n)
    scale = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    exact = torch.autograd.grad(TangentProjectedNormal(loc, scale).mean @ loc, scale)[0]
    x = TangentProjectedNormal(loc, scale).rsample((200000,))
    mc = torch.autograd.grad((x @ loc).mean(), scale)[0]
    assert mc.item() == pytest.approx(exact.item(), rel=0.02)


# ---------------------------------------------------------------- projected normal, any n


@pytest.mark.parametrize("n", [2, 3, 4])
def test_projected_normal_log_prob_matches_pyro(n):
    mu = 3 * torch.randn(2000, n, dtype=torch.float64)
    x = random_unit(n, batch=(2000,))
    keep = (mu * x).sum(-1) > -1  # Pyro's closed forms cancel for t << 0
    ours = projected_normal_log_prob(mu, x)
    np.testing.assert_allclose(ours[keep], ProjectedNormal(mu).log_prob(x)[keep], atol=1e-10)


@pytest.mark.parametrize("n, t", [(50, -30.0), (50, -1.0), (784, 0.0), (784, 300.0)])
def test_projected_normal_log_prob_matches_mpmath(n, t):
    mu = torch.zeros(n, dtype=torch.float64)
    mu[0], mu[1] = t, 2.0
    x = torch.zeros(n, dtype=torch.float64)
    x[0] = 1.0
    k = n - 1
    peak = (t + math.sqrt(t * t + 4 * k)) / 2
    with mpmath.workdps(40):
        m = mpmath.quad(
            lambda r: r**k * mpmath.npdf(r - t), [0, peak / 2, peak, 2 * peak, mpmath.inf]
        )
        expected = float(-0.5 * k * mpmath.log(2 * mpmath.pi) - 2.0 + mpmath.log(m))
    assert projected_normal_log_prob(mu, x).item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("n", [5, 30])
def test_projected_normal_log_prob_normalized_and_gof(n):
    mu = 2.0 * random_unit(n)
    loc = mu / mu.norm()
    e = random_unit(n)
    e = (e - (e @ loc) * loc) / (e - (e @ loc) * loc).norm()

    def log_angle_density(theta):  # density of the geodesic angle to mu / |mu|
        x = theta.cos().unsqueeze(-1) * loc + theta.sin().unsqueeze(-1) * e
        lp = projected_normal_log_prob(mu.expand(x.shape), x)
        return lp + log_sphere_area(n - 2) + (n - 2) * theta.sin().log()

    grid = torch.linspace(0, math.pi, 20001, dtype=torch.float64)[1:-1]
    assert torch.trapezoid(log_angle_density(grid).exp(), grid).item() == pytest.approx(1, abs=1e-6)
    theta, _, _ = geodesic_angle(loc, ProjectedNormal(mu).sample((5000,)))
    assert auto_goodness_of_fit(theta, log_angle_density(theta).exp()) > TEST_FAILURE_RATE


def test_projected_normal_log_prob_float32_and_grad():
    mu = (10 * torch.randn(4, 784)).requires_grad_()
    x = ProjectedNormal(mu.detach()).sample()
    lp = projected_normal_log_prob(mu, x)
    assert lp.dtype == torch.float32 and lp.isfinite().all()
    lp64 = projected_normal_log_prob(mu.detach().double(), x.double())
    np.testing.assert_allclose(lp.detach().double(), lp64, rtol=1e-4)
    lp.sum().backward()
    assert mu.grad.isfinite().all()
