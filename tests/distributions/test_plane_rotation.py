import math

import mpmath as mp
import pyro.distributions
import pytest
import scipy.integrate
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit
from torch.distributions import Uniform

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    TangentNormalAngle,
    TruncatedNormal,
)
from pyro_dirmag.distributions._sphere import geodesic_angle, log_sphere_area

TEST_FAILURE_RATE = 1e-3
DTYPES = [torch.float32, torch.float64]


def unit(n, dtype=torch.float64, index=0):
    x = torch.zeros(n, dtype=dtype)
    x[index] = 1.0
    return x


def random_unit(n, dtype=torch.float64, batch=()):
    x = torch.randn(batch + (n,), dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def on_great_circle(loc, theta):
    """Points at geodesic angle theta from loc, in a fixed plane through loc."""
    n = loc.size(-1)
    e = torch.randn(n, dtype=loc.dtype, generator=torch.Generator().manual_seed(1))
    e = e - (e @ loc) * loc
    e = e / e.norm()
    return theta.cos().unsqueeze(-1) * loc + theta.sin().unsqueeze(-1) * e


def angle_laws(dtype=torch.float64):
    t = lambda x: torch.tensor(x, dtype=dtype)  # noqa: E731
    return {
        "beta3": StretchedSymmetricBeta(t(3.0)),
        "beta0.5": StretchedSymmetricBeta(t(0.5)),
        "uniform_half": Uniform(t(0.0), t(math.pi / 2)),
        "uniform_full": Uniform(t(0.0), t(math.pi)),
    }


def sphere_integral(d, num_points=4001):
    """A_{n-2} int_0^pi p(x(theta)) sin(theta)^{n-2} dtheta by scipy quadrature."""
    n = d.event_shape[-1]

    def integrand(theta):
        th = torch.tensor([theta], dtype=torch.float64)
        lp = d.log_prob(on_great_circle(d.loc, th))
        if n > 2:
            lp = lp + (n - 2) * math.log(math.sin(theta))
        return math.exp(lp.item() + log_sphere_area(n - 2))

    value, _ = scipy.integrate.quad(integrand, 0, math.pi, limit=200, points=[math.pi / 2])
    return value


@pytest.mark.parametrize("n", [2, 3, 7, 784])
@pytest.mark.parametrize("law", ["beta3", "beta0.5", "uniform_half", "uniform_full"])
def test_normalized_by_quadrature(n, law):
    d = PlaneRotation(random_unit(n), angle_laws()[law])
    assert sphere_integral(d) == pytest.approx(1.0, abs=2e-3 if law == "beta0.5" else 1e-6)


@pytest.mark.parametrize("n", [3, 5])
def test_importance_sampling_hemisphere_area(n):
    # E_p[1{x . v > 0} / p(x)] is the area of the hemisphere: checks the values of
    # the density against the geometry (not through the angle formula).
    loc = random_unit(n)
    d = PlaneRotation(loc, Uniform(torch.tensor(0.0, dtype=torch.float64), math.pi / 2))
    x = d.sample((200000,))
    est = (-d.log_prob(x)).exp().mean().item()
    assert est == pytest.approx(0.5 * math.exp(log_sphere_area(n - 1)), rel=0.01)


@pytest.mark.parametrize("n", [3, 5])
def test_importance_sampling_from_uniform_sphere(n):
    # E_uniform[p(x) / u(x)] = 1 for a law with bounded density (f(0) = 0).
    angle = Uniform(torch.tensor(0.3, dtype=torch.float64), 1.4)
    d = PlaneRotation(random_unit(n), angle)
    x = random_unit(n, batch=(400000,))
    est = (d.log_prob(x) + log_sphere_area(n - 1)).exp().mean().item()
    assert est == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("n", [2, 3, 50, 784])
@pytest.mark.parametrize("law", ["beta3", "beta0.5", "uniform_half", "uniform_full"])
def test_angle_gof(n, law):
    d = PlaneRotation(random_unit(n), angle_laws()[law])
    theta, _, _ = geodesic_angle(d.loc, d.sample((5000,)))
    probs = d.angle_log_prob(theta).exp()
    assert auto_goodness_of_fit(theta, probs) > TEST_FAILURE_RATE


def test_angle_gof_detects_wrong_law():
    d = PlaneRotation(random_unit(3), angle_laws()["beta3"])
    wrong = PlaneRotation(d.loc, StretchedSymmetricBeta(torch.tensor(6.0, dtype=torch.float64)))
    theta, _, _ = geodesic_angle(d.loc, d.sample((5000,)))
    assert auto_goodness_of_fit(theta, wrong.angle_log_prob(theta).exp()) < TEST_FAILURE_RATE


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlaneRotation(random_unit(2), StretchedSymmetricBeta(torch.tensor(3.0).double())),
        lambda: PlaneRotation(random_unit(2), TangentNormalAngle(torch.tensor(0.5).double(), 1)),
        lambda: PlaneRotation(random_unit(3), TangentNormalAngle(torch.tensor(0.4).double(), 2)),
        lambda: PlaneRotation(random_unit(3), Uniform(torch.tensor(0.4).double(), 2.0)),
    ],
    ids=["n2_beta", "n2_tangent_angle", "n3_tangent_angle", "n3_uniform_band"],
)
def test_full_density_gof(make):
    d = make()
    n = d.event_shape[-1]
    x = d.sample((20000,))
    probs = d.log_prob(x).exp()
    assert auto_goodness_of_fit(x, probs, dim=n - 1) > TEST_FAILURE_RATE


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [2, 3, 784])
def test_log_prob_at_loc_and_antipode(n, dtype):
    loc = unit(n, dtype)  # exact, so that theta is exactly 0 and pi below
    laws = angle_laws(dtype)
    sym = PlaneRotation(loc, laws["beta3"])
    full = PlaneRotation(loc, laws["uniform_full"])
    lp_sym = sym.log_prob(torch.stack([loc, -loc]))
    lp_full = full.log_prob(torch.stack([loc, -loc]))
    assert not lp_sym.isnan().any() and not lp_full.isnan().any()
    if n == 2:
        # density f(0) / A_0 = 2 f_eps(0) / 2 = f_eps(0) of the stretched Beta(3, 3).
        assert lp_sym[0].item() == pytest.approx(math.log(30 * 0.5**4 / math.pi), rel=1e-5)
        assert lp_full[0].item() == pytest.approx(math.log(1 / (2 * math.pi)), rel=1e-5)
    else:
        assert lp_sym[0].item() == math.inf  # integrable singularity at loc
        assert lp_full[0].item() == math.inf
    assert lp_sym[1].item() == -math.inf  # angle pi is outside [-pi/2, pi/2]
    # torch's Uniform excludes its upper bound, so angle pi has density 0 here.
    assert lp_full[1].item() == -math.inf
    # near loc and -loc (rounded, so theta is tiny but not 0): large or -inf, not NaN
    near = torch.stack([random_unit(n, dtype), loc]) * 1e-3 + torch.stack([loc, -loc])
    near = near / near.norm(dim=-1, keepdim=True)
    assert not full.log_prob(near).isnan().any()


def test_angle_log_prob_right_limit_at_zero():
    # A law on [0, b] must not be counted twice at theta = 0, a symmetric law must.
    d = PlaneRotation(unit(3), Uniform(torch.tensor(0.0).double(), math.pi / 2))
    s = PlaneRotation(unit(3), Uniform(torch.tensor(-1.0).double(), 1.0))
    zero = torch.tensor(0.0).double()
    assert d.angle_log_prob(zero).item() == pytest.approx(math.log(2 / math.pi))
    assert s.angle_log_prob(zero).item() == pytest.approx(0.0)
    assert d.angle_log_prob(torch.tensor([-0.1, 1.7, 4.0]).double()).eq(-math.inf).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [2, 3, 784])
def test_dtype_shapes_and_finite(n, dtype):
    loc = random_unit(n, dtype, batch=(4,))
    d = PlaneRotation(loc, StretchedSymmetricBeta(torch.full((3, 1), 5.0, dtype=dtype)))
    assert d.batch_shape == (3, 4) and d.event_shape == (n,)
    x = d.rsample((2,))
    assert x.dtype == dtype and x.shape == (2, 3, 4, n)
    assert d.support.check(x).all()
    lp = d.log_prob(x)
    assert lp.dtype == dtype and lp.shape == (2, 3, 4) and lp.isfinite().all()
    assert d.entropy().shape == (3, 4) and d.entropy().isfinite().all()


def test_log_prob_float32_matches_float64():
    loc = random_unit(784)
    d64 = PlaneRotation(loc, StretchedSymmetricBeta(torch.tensor(20.0).double()))
    d32 = PlaneRotation(loc.float(), StretchedSymmetricBeta(torch.tensor(20.0)))
    x = d64.sample((100,))
    assert torch.allclose(d32.log_prob(x.float()).double(), d64.log_prob(x), rtol=1e-4)


def test_validation_errors():
    good = random_unit(3)
    with pytest.raises(ValueError, match="loc"):
        PlaneRotation(2 * good, StretchedSymmetricBeta(torch.tensor(2.0).double()))
    with pytest.raises(ValueError, match="angle"):
        PlaneRotation(good, Uniform(torch.tensor(0.0).double(), 4.0))
    with pytest.raises(ValueError, match="angle"):
        PlaneRotation(good, pyro.distributions.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pytest.raises(ValueError, match="loc"):
        PlaneRotation(torch.ones(1), StretchedSymmetricBeta(torch.tensor(2.0)))
    d = PlaneRotation(good, StretchedSymmetricBeta(torch.tensor(2.0).double()))
    with pytest.raises(ValueError):
        d.log_prob(2 * good)
    quiet = PlaneRotation(
        good, StretchedSymmetricBeta(torch.tensor(2.0).double()), validate_args=False
    )
    assert quiet.log_prob(2 * good).item() == -math.inf


@pytest.mark.parametrize("n", [5, 50])  # the exact and the fused sampler
def test_rsample_gradients_match_quadrature(n):
    # E[x] = E[cos eps] v: the reparametrized Monte Carlo gradient of E[a . x] must
    # equal the gradient of the quadrature mean, w.r.t. the angle law's parameter
    # and the (unnormalized) direction.
    raw = torch.randn(n, dtype=torch.float64, requires_grad=True)
    conc = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    a = torch.randn(n, dtype=torch.float64)

    def dist():
        return PlaneRotation(raw / raw.norm(), StretchedSymmetricBeta(conc))

    exact = torch.autograd.grad(dist().mean @ a, [raw, conc])
    mc = torch.autograd.grad((dist().rsample((200000,)) @ a).mean(), [raw, conc])
    for e, m in zip(exact, mc, strict=True):
        assert torch.allclose(e, m, atol=0.01), (e, m)


def test_entropy_matches_monte_carlo():
    for n, law in [(2, "beta3"), (3, "uniform_half"), (10, "beta0.5")]:
        d = PlaneRotation(random_unit(n), angle_laws()[law])
        x = d.sample((200000,))
        assert d.entropy().item() == pytest.approx(-d.log_prob(x).mean().item(), abs=0.02)


def test_expand_and_sample_without_rsample():
    d = PlaneRotation(random_unit(3).float(), torch.distributions.Uniform(0.0, 1.0))
    e = d.expand([2, 5])
    assert e.batch_shape == (2, 5) and e.sample().shape == (2, 5, 3)
    assert e.angle.batch_shape == (2, 5)
    von_mises = torch.distributions.VonMises(torch.tensor(0.0), torch.tensor(5.0))
    non_reparam = PlaneRotation(random_unit(3).float(), von_mises, validate_args=False)
    assert not non_reparam.has_rsample
    with pytest.raises(NotImplementedError):
        non_reparam.rsample()


def test_gof_detects_density_off_by_20_percent():
    d = PlaneRotation(random_unit(3), angle_laws()["beta3"])
    theta, _, _ = geodesic_angle(d.loc, d.sample((5000,)))
    assert auto_goodness_of_fit(theta, 1.2 * d.angle_log_prob(theta).exp()) < TEST_FAILURE_RATE


@pytest.mark.parametrize("n", [3, 784])
@pytest.mark.parametrize("bounds", [(0.0, -math.pi / 2, math.pi / 2), (0.3, 0.0, math.pi / 2)])
def test_entropy_and_mean_narrow_truncated_normal(n, bounds):
    # a narrow angle law: the quadrature runs in the quantile (TruncatedNormal.icdf)
    mu, a, b = bounds
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    d = PlaneRotation(random_unit(n), TruncatedNormal(t(mu), t(0.002), t(a), t(b)))
    x = d.sample((20000,))
    lp = d.log_prob(x)
    tol = 4 * lp.std().item() / math.sqrt(len(lp))
    assert d.entropy().item() == pytest.approx(-lp.mean().item(), abs=tol)
    cos = x @ d.loc
    assert (d.mean @ d.loc).item() == pytest.approx(
        cos.mean().item(), abs=4 * cos.std().item() / 141
    )


@pytest.mark.parametrize("n", [2, 5, 16, 50])
def test_rotation_and_layers_share_one_tangent_sampler(n):
    # PlaneRotation's rotation by pi/2, the DirMag layers' explicit draws and
    # tangent_uniform are the same draw of phi from the same seed (one sampler).
    from pyro_dirmag.distributions._sphere import rotate_to_random_tangent, tangent_uniform
    from pyro_dirmag.nn import DirMagLinear

    loc = torch.nn.functional.normalize(torch.randn(3, n, dtype=torch.float64), dim=-1)
    torch.manual_seed(5)
    phi = tangent_uniform(loc, (4,))
    assert phi.shape == (4, 3, n)
    torch.testing.assert_close((phi * loc).sum(-1), torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(phi.norm(dim=-1), torch.ones(4, 3, dtype=torch.float64))
    torch.manual_seed(5)
    ones, zeros = torch.ones(4, 3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)
    rotated = rotate_to_random_tangent(loc, zeros, ones, (4, 3, n))
    torch.testing.assert_close(rotated, phi)
    layer = DirMagLinear(n, 3).double()
    torch.manual_seed(6)
    phi = tangent_uniform(loc)
    torch.manual_seed(6)
    torch.testing.assert_close(layer._tangent(loc), phi)


def _mp_beta_angle_reference(c, n):
    """Entropy and mean cosine of PlaneRotation with a StretchedSymmetricBeta(c) angle in
    S^{n-1}, from mpmath (30 digits): ``H = H(|eps|) + log A_{n-2} + (n - 2) E[log sin|eps|]``
    with the closed-form Beta entropy, ``H(|eps|) = H(Beta(c, c)) + log(pi / 2)``, and
    tanh-sinh quadrature in ``b = 1/2 - |eps|/pi`` (where ``sin|eps| = cos(pi b)``)."""
    with mp.workdps(30):
        c = mp.mpf(c)
        log_beta = 2 * mp.loggamma(c) - mp.loggamma(2 * c)
        h_beta = log_beta - 2 * (c - 1) * mp.digamma(c) + (2 * c - 2) * mp.digamma(2 * c)

        def density(b):  # of b on [0, 1/2]
            return 2 * mp.exp((c - 1) * mp.log(b * (1 - b)) - log_beta)

        pts = [0, mp.mpf(1) / 4, mp.mpf(1) / 2]
        log_sin = mp.quad(lambda b: density(b) * mp.log(mp.cos(mp.pi * b)), pts)
        mean_cos = mp.quad(lambda b: density(b) * mp.sin(mp.pi * b), pts)
        k = n - 2
        log_area = mp.log(2 * mp.pi ** ((k + 1) / mp.mpf(2)) / mp.gamma((k + 1) / mp.mpf(2)))
        h = h_beta + mp.log(mp.pi / 2) + log_area + k * log_sin
        return float(h), float(mean_cos)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [2, 3, 784])
@pytest.mark.parametrize("c", [0.02, 0.1, 0.3, 1.0, 3.0, 50.0, 1e4])
def test_entropy_and_mean_beta_angle_vs_mpmath(c, n, dtype):
    # Beta(c < 1) has integrable singularities at +-pi/2 (for c = 0.02 a quarter of the
    # mass lies within 1e-30 of them), and log sin|eps| one at 0 for n > 2
    loc = unit(n, dtype)
    d = PlaneRotation(loc, StretchedSymmetricBeta(torch.tensor(c, dtype=dtype)))
    h_ref, mean_ref = _mp_beta_angle_reference(c, n)
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    assert d.entropy().item() == pytest.approx(h_ref, rel=rtol, abs=rtol)
    torch.testing.assert_close(
        d.mean, mean_ref * loc, rtol=0, atol=1e-14 if dtype == torch.float64 else 1e-6
    )


@pytest.mark.parametrize("c", [0.1, 0.7, 5.0])
def test_entropy_gradient_beta_angle_vs_mpmath(c):
    # d H / d c through the substituted quadrature against mpmath's derivative
    conc = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    d = PlaneRotation(unit(10), StretchedSymmetricBeta(conc))
    (grad,) = torch.autograd.grad(d.entropy(), conc)
    with mp.workdps(30):
        ref = mp.diff(lambda x: mp.mpf(_mp_beta_angle_reference(x, 10)[0]), c, h=mp.mpf(1e-6))
    assert grad.item() == pytest.approx(float(ref), rel=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_log_prob_gradients_at_a_singular_end_not_nan(dtype):
    # Found by the property suite: a float32 draw of a Beta(c < 1) angle whose geodesic
    # angle rounds onto pi/2 scores +inf (the density is infinite there); logaddexp of
    # the two angle terms then gave NaN gradients. They are infinities now.
    c = torch.tensor(0.05, dtype=dtype, requires_grad=True)
    loc = torch.tensor([[0.0, 1.0], [0.6, 0.8]], dtype=dtype, requires_grad=True)
    x = torch.tensor([[1.0, 0.0], [0.8, -0.6]], dtype=dtype)  # at pi/2 from loc
    lp = PlaneRotation(loc, StretchedSymmetricBeta(c)).log_prob(x)
    # (float64's pi/2 lies below the real one: there the density is finite)
    assert (lp == math.inf).all() if dtype == torch.float32 else lp.isfinite().all()
    grads = torch.autograd.grad(lp.sum(), [c, loc])
    assert not any(g.isnan().any() for g in grads), grads
