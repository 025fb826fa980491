import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.stats
import torch
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import Normal, Uniform, kl_divergence

from pyro_dirmag.distributions import (
    HemisphereAngle,
    LogUniform,
    PlaneRotation,
    StretchedSymmetricBeta,
    SymmetricLogUniform,
    TangentNormalAngle,
    TangentProjectedNormal,
    TruncatedNormal,
)
from pyro_dirmag.distributions._per_example_copies import PerExampleCopies
from pyro_dirmag.distributions.kl import _molchanov_kl

DTYPES = [torch.float32, torch.float64]


def random_unit(n, dtype=torch.float64, batch=()):
    x = torch.randn(batch + (n,), dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def t(x, dtype=torch.float64):
    return torch.as_tensor(x, dtype=dtype)


# ---------------------------------------------------------------- log-uniform priors


def integrated_kl(log_alpha):
    """E_q[log q(x) + log|x|] for q = N(1, alpha) by quadrature (finite part of the KL)."""
    s = math.exp(0.5 * log_alpha)
    lo, hi = 1 - 40 * s, 1 + 40 * s
    points = [p for p in (0.0, 1.0) if lo < p < hi]
    e_log_abs, _ = scipy.integrate.quad(
        lambda x: scipy.stats.norm.pdf(x, 1, s) * math.log(abs(x)), lo, hi, points=points, limit=500
    )
    return -0.5 * math.log(2 * math.pi * math.e * s * s) + e_log_abs


def test_molchanov_matches_integrated_kl():
    log_alpha = np.linspace(-6, 6, 13)
    loc = t(1.7)  # the KL depends on q only through alpha = scale^2 / loc^2
    scale = loc.abs() * torch.exp(0.5 * t(log_alpha))
    approx = kl_divergence(Normal(loc, scale), LogUniform()).numpy()
    exact = np.array([integrated_kl(la) for la in log_alpha])
    np.testing.assert_allclose(exact - approx, -2.055, atol=0.01)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_molchanov_properties(dtype):
    log_alpha = torch.linspace(-20, 20, 401, dtype=dtype)
    loc = torch.full_like(log_alpha, -0.3)
    kl = kl_divergence(Normal(loc, 0.3 * (0.5 * log_alpha).exp()), LogUniform(log_alpha.shape))
    assert kl.dtype == dtype and kl.shape == log_alpha.shape
    assert (kl >= 0).all()
    assert (kl[1:] < kl[:-1]).all()  # decreasing in alpha
    # elementwise, broadcast batch shape (TraceMeanField_ELBO asserts it)
    p = Normal(torch.ones(4, 1, dtype=dtype), torch.ones(3, dtype=dtype))
    assert kl_divergence(p, LogUniform((4, 3))).shape == (4, 3)
    assert kl_divergence(p, LogUniform((2, 4, 3))).shape == (2, 4, 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_molchanov_stable_at_zero_loc_and_tiny_scale(dtype):
    loc = torch.tensor([0.0, 1.0, 1.0, -5.0], dtype=dtype, requires_grad=True)
    scale = torch.tensor([1.0, 1e-30, 1e-38, 1e-20], dtype=dtype, requires_grad=True)
    kl = kl_divergence(Normal(loc, scale), LogUniform())
    assert kl.isfinite().all()
    assert kl[0].item() == 0.0  # alpha = inf
    # tiny scale: KL ~ k1 - log(scale / |loc|) (log1p(exp) would overflow to inf)
    assert kl[1].item() == pytest.approx(0.63576 - math.log(1e-30), rel=1e-5)
    kl.sum().backward()
    assert loc.grad.isfinite().all() and scale.grad.isfinite().all()


def test_symmetric_log_uniform_kl_is_shifted_molchanov():
    p = Normal(t([0.5, -2.0]), t([0.1, 3.0]))
    q = SymmetricLogUniform(t(1e-4), t(1e2))
    expected = kl_divergence(p, LogUniform()) + math.log(2 * math.log(1e6))
    np.testing.assert_allclose(kl_divergence(p, q), expected, rtol=1e-12)
    q2 = SymmetricLogUniform(t([1e-3, 1e-2]).unsqueeze(-1), t(10.0))
    assert kl_divergence(p, q2).shape == (2, 2)


def test_trace_mean_field_elbo_with_log_uniform():
    def model():
        with pyro.plate("units", 3):
            pyro.sample("g", SymmetricLogUniform(t(1e-3), t(1e3)))

    def guide():
        loc = pyro.param("loc", t([1.0, 2.0, -1.0]))
        with pyro.plate("units", 3):
            pyro.sample("g", dist.Normal(loc, 0.1))

    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    prior = SymmetricLogUniform(t(1e-3), t(1e3))
    expected = kl_divergence(Normal(t([1.0, 2.0, -1.0]), 0.1), prior)
    assert loss.item() == pytest.approx(expected.sum().item(), rel=1e-10)
    assert _molchanov_kl(t(1.0), t(0.1)).item() > 0


# ---------------------------------------------------------------- TruncatedNormal || Uniform


@pytest.mark.parametrize(
    "params", [(0.3, 0.5, 0.0, math.pi / 2), (0.0, 0.2, -1.0, 1.0), (2.0, 0.1, -1.0, 1.0)]
)
def test_truncated_normal_uniform_kl(params):
    loc, scale, a, b = params
    p = TruncatedNormal(t(loc), t(scale), t(a), t(b))
    q = Uniform(t(-2.0), t(2.0))
    ref = scipy.stats.truncnorm((a - loc) / scale, (b - loc) / scale, loc=loc, scale=scale)
    numeric, _ = scipy.integrate.quad(lambda x: ref.pdf(x) * (ref.logpdf(x) + math.log(4)), a, b)
    assert kl_divergence(p, q).item() == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    # support of p not inside that of q: +inf
    outside = kl_divergence(p, Uniform(t([-2.0, a + 0.01]), t([b - 0.01, 2.0])))
    assert outside.eq(math.inf).all()


# ------------------------------------------------------ TruncatedNormal || HemisphereAngle


def mpmath_hemisphere_kl(loc, scale, n, low=0.0, high=math.pi / 2):
    """KL(TruncatedNormal || HemisphereAngle(n)) by mpmath quadrature of the definition,
    with breakpoints at the law's scales and at decades of ``scale`` near 0."""
    import mpmath as mp

    with mp.workdps(30):
        mu, s, a, b = mp.mpf(loc), mp.mpf(scale), mp.mpf(low), mp.mpf(high)

        def w(x):
            return mp.exp(-((x - mu) ** 2) / (2 * s**2))

        near = [mu + k * s for k in (-30, -10, -3, 0, 3, 10, 30)]
        decades = [a + s * mp.mpf(10) ** -j for j in range(12)]
        points = sorted({a, b, *(x for x in near + decades if a < x < b)})
        z = mp.quad(w, points)
        half = mp.mpf(n) / 2
        log_zn = mp.log(mp.sqrt(mp.pi) * mp.gamma(half - 0.5) / (2 * mp.gamma(half)))

        def integrand(x):
            log_q = mp.log(w(x) / z)
            return w(x) / z * (log_q - (n - 2) * mp.log(mp.sin(x)) + log_zn)

        return float(mp.quad(integrand, points))


HEMISPHERE_CASES = [
    # a plain Gauss-Legendre rule is 1e-4 to 1e-3 off on the cases reaching 0
    (0.0, 1e-4, 300),  # mass at the singularity of log sin
    (0.3, 1e-3, 784),  # narrow, inside
    (1.5, 0.5, 3),  # wide, reaching pi/2
    (-1.0, 0.1, 100),  # one-sided: an exponential-like law at 0
    (0.0, 0.05, 784),  # the guide's initial posterior
    (1e-3, 1e-2, 25),
    (2.0, 0.05, 10),  # mass at pi/2, where log sin is 0
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loc,scale,n", HEMISPHERE_CASES)
def test_truncated_normal_hemisphere_kl_matches_mpmath(loc, scale, n, dtype):
    p = TruncatedNormal(t(loc, dtype), t(scale, dtype), t(0.0, dtype), t(math.pi / 2, dtype))
    kl = kl_divergence(p, HemisphereAngle(n, dtype=dtype))
    assert kl.dtype == dtype
    rel = 1e-11 if dtype == torch.float64 else 2e-6
    assert kl.item() == pytest.approx(mpmath_hemisphere_kl(loc, scale, n), rel=rel, abs=1e-12)


def test_truncated_normal_hemisphere_kl_gradients():
    loc = t([0.0, 0.3, -1.0, 1.2]).requires_grad_()
    scale = t([0.05, 1e-3, 0.1, 0.4]).requires_grad_()

    def kl(loc, scale):
        p = TruncatedNormal(loc, scale, t(0.0), t(math.pi / 2))
        return kl_divergence(p, HemisphereAngle(50))

    assert torch.autograd.gradcheck(kl, (loc, scale))
    # and against mpmath's derivative of the reference, at one law
    g_loc, g_scale = torch.autograd.grad(kl(loc, scale)[0], (loc, scale))
    h = 1e-6
    ref = mpmath_hemisphere_kl
    d_loc = (ref(h, 0.05, 50) - ref(-h, 0.05, 50)) / (2 * h)
    d_scale = (ref(0.0, 0.05 + h, 50) - ref(0.0, 0.05 - h, 50)) / (2 * h)
    assert g_loc[0].item() == pytest.approx(d_loc, rel=1e-6)
    assert g_scale[0].item() == pytest.approx(d_scale, rel=1e-6)


def test_truncated_normal_hemisphere_kl_monte_carlo():
    """The KL is E_q[log q - log p]: a fixed-seed Monte Carlo mean agrees within 4 SE."""
    torch.manual_seed(0)
    p = TruncatedNormal(t([0.02, 0.4]), t([0.05, 0.2]), t(0.0), t(math.pi / 2))
    q = HemisphereAngle(40, dtype=torch.float64)
    x = p.sample((400_000,))
    terms = p.log_prob(x) - q.log_prob(x)
    se = terms.std(0) / math.sqrt(x.shape[0])
    assert ((terms.mean(0) - kl_divergence(p, q)).abs() < 4 * se).all()


def test_truncated_normal_hemisphere_kl_shapes_support_and_dim_2():
    p = TruncatedNormal(t([[0.1], [0.5], [0.9]]), t(0.2), t(0.0), t(math.pi / 2))
    q = HemisphereAngle(7, dtype=torch.float64).expand([4])
    assert kl_divergence(p, q).shape == (3, 4)
    # n = 2 is the thesis's Uniform(0, pi/2) prior
    uniform = kl_divergence(p, Uniform(t(0.0), t(math.pi / 2)))
    torch.testing.assert_close(kl_divergence(p, HemisphereAngle(2, dtype=torch.float64)), uniform)
    # support of p not inside [0, pi/2]: +inf
    wide = TruncatedNormal(t(0.1), t(0.2), t([-0.1, 0.0]), t([1.0, 2.0]))
    assert kl_divergence(wide, HemisphereAngle(5, dtype=torch.float64)).eq(math.inf).all()


def test_stretched_beta_kls():
    p = StretchedSymmetricBeta(t([0.7, 3.0]))
    q = StretchedSymmetricBeta(t(2.0))
    x = p.sample((200000,))
    mc = (p.log_prob(x) - q.log_prob(x)).mean(0)
    np.testing.assert_allclose(kl_divergence(p, q), mc, atol=0.01)
    u = Uniform(t(-math.pi / 2), t(math.pi / 2))
    np.testing.assert_allclose(
        kl_divergence(p, u), (p.log_prob(x) - u.log_prob(x)).mean(0), atol=0.01
    )
    assert kl_divergence(p, Uniform(t(-1.0), t(2.0))).eq(math.inf).all()


def test_tangent_normal_angle_kl():
    p = TangentNormalAngle(t([0.1, 0.5]), 9)
    q = TangentNormalAngle(t(0.3), 9)
    x = p.sample((200000,))
    mc = (p.log_prob(x) - q.log_prob(x)).mean(0)
    np.testing.assert_allclose(kl_divergence(p, q), mc, rtol=0.02)


# ---------------------------------------------------------------- PlaneRotation || PlaneRotation


def mc_sphere_kl(p, q, num_samples=100000):
    x = p.sample((num_samples,))
    return (p.log_prob(x) - q.log_prob(x)).mean(0)


@pytest.mark.parametrize("n", [2, 3, 10])
def test_plane_rotation_kl_one_sided(n):
    loc = random_unit(n)
    p = PlaneRotation(loc, TruncatedNormal(t(0.4), t(0.2), t(0.0), t(math.pi / 2)))
    q = PlaneRotation(loc, Uniform(t(0.0), t(math.pi / 2)))
    kl = kl_divergence(p, q)
    assert kl.item() == pytest.approx(math.log(math.pi / 2) - p.angle.entropy().item(), rel=1e-10)
    assert kl.item() == pytest.approx(mc_sphere_kl(p, q).item(), abs=0.01)


@pytest.mark.parametrize("n", [2, 5])
def test_plane_rotation_kl_symmetric(n):
    loc = random_unit(n, batch=(2,))
    p = PlaneRotation(loc, StretchedSymmetricBeta(t([4.0, 0.8])))
    q = PlaneRotation(loc, StretchedSymmetricBeta(t(2.0)))
    kl = kl_divergence(p, q)
    assert kl.shape == (2,)
    np.testing.assert_allclose(kl, kl_divergence(p.angle, q.angle))
    np.testing.assert_allclose(kl, mc_sphere_kl(p, q), atol=0.015)
    tn = PlaneRotation(loc, TruncatedNormal(t(0.0), t(0.5), t(-math.pi / 2), t(math.pi / 2)))
    u = PlaneRotation(loc, Uniform(t(-math.pi / 2), t(math.pi / 2)))
    np.testing.assert_allclose(kl_divergence(tn, u), mc_sphere_kl(tn, u), atol=0.01)


def test_tangent_projected_normal_kl():
    loc = random_unit(6)
    p = TangentProjectedNormal(loc, t(0.2))
    q = TangentProjectedNormal(loc, t(0.35))
    assert kl_divergence(p, q).item() == pytest.approx(mc_sphere_kl(p, q).item(), abs=0.01)


def test_plane_rotation_kl_not_implemented():
    loc = random_unit(3)
    p = PlaneRotation(loc, StretchedSymmetricBeta(t(3.0)))
    with pytest.raises(NotImplementedError, match="loc"):
        kl_divergence(p, PlaneRotation(random_unit(3), StretchedSymmetricBeta(t(3.0))))
    with pytest.raises(NotImplementedError, match="symmetric"):
        kl_divergence(p, PlaneRotation(loc, Uniform(t(0.0), t(math.pi / 2))))
    skewed = TruncatedNormal(t(0.3), t(0.2), t(-math.pi / 2), t(math.pi / 2))
    with pytest.raises(NotImplementedError):
        kl_divergence(PlaneRotation(loc, skewed), p)


def test_molchanov_kl_gradients():
    # the one-node KL against autograd through its formula, and finite differences
    loc = torch.tensor([1.0, -0.3, 2e-3, 5.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.1, 0.5, 1e-3, 40.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_molchanov_kl, (loc, scale))
    log_alpha = 2 * (scale.log() - loc.abs().log())
    ref = 0.63576 - 0.63576 * torch.sigmoid(1.87320 + 1.48695 * log_alpha)
    ref = ref + 0.5 * torch.nn.functional.softplus(-log_alpha)
    kl = _molchanov_kl(loc, scale)
    torch.testing.assert_close(kl, ref)
    g = torch.autograd.grad(kl.sum(), [loc, scale])
    g_ref = torch.autograd.grad(ref.sum(), [loc, scale])
    torch.testing.assert_close(g, g_ref)
    # m = 0: KL 0 with a zero gradient
    zero = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    kl0 = _molchanov_kl(zero, torch.ones(1, dtype=torch.float64))
    (g0,) = torch.autograd.grad(kl0.sum(), [zero])
    assert kl0.item() == pytest.approx(0.0, abs=1e-12) and g0.item() == 0.0


# ---------------------------------------------------------------- expanded copies
def _foreign_laws():
    """Laws of torch and Pyro (none of this package), batch shape (3,), as pairs of a
    name and a distribution, covering pairs with and without a registered KL."""
    g = torch.Generator().manual_seed(0)
    pos = lambda: torch.rand(3, generator=g, dtype=torch.float64) + 0.5  # noqa: E731
    real = lambda: torch.randn(3, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        ("Normal", dist.Normal(real(), pos())),
        ("Normal2", dist.Normal(real(), pos())),
        ("Laplace", dist.Laplace(real(), pos())),
        ("Gamma", dist.Gamma(pos(), pos())),
        ("Exponential", dist.Exponential(pos())),
        ("Beta", dist.Beta(pos(), pos())),
        ("Uniform", dist.Uniform(real() - 3, real() + 3)),
        ("Bernoulli", dist.Bernoulli(probs=pos() / 2)),
        ("Poisson", dist.Poisson(pos())),
        ("Delta", dist.Delta(pos())),
        ("Dirichlet", dist.Dirichlet(pos().expand(3, 3).clone())),
        ("IndependentNormal", dist.Normal(real().expand(3, 3), 1.0).to_event(1)),
        ("MultivariateNormal", dist.MultivariateNormal(real().expand(3, 3), torch.eye(3))),
    ]


def test_per_example_copies_kl_of_foreign_laws_is_what_pyro_gives_the_bases():
    # For any pair of laws of torch and Pyro, the per-example copies get exactly Pyro's
    # KL of the unexpanded laws, broadcast (each copy is the base law), and where Pyro
    # has none, NotImplementedError (its error, where Pyro's raises one).
    laws = _foreign_laws()
    checked = 0
    for (p_name, p), (q_name, q) in [(a, b) for a in laws for b in laws]:
        if p.event_shape != q.event_shape:
            continue
        ep = PerExampleCopies(p, (2,) + p.batch_shape)
        eq = PerExampleCopies(q, (2,) + q.batch_shape)
        try:
            expected = kl_divergence(p, q)
        except (NotImplementedError, ValueError) as e:  # (ValueError: Delta outside supp q)
            with pytest.raises(type(e)):
                kl_divergence(ep, eq)
            continue
        actual = kl_divergence(ep, eq)
        assert actual.shape == (2,) + p.batch_shape, (p_name, q_name)
        assert torch.equal(actual, expected.expand(actual.shape)), (p_name, q_name)
        checked += 1
    assert checked >= 20


def test_per_example_copies_kl_matches_trace_mean_field_monte_carlo():
    # Pyro without the registration estimates the KL of expanded copies by Monte Carlo
    # (TraceMeanField_ELBO's fallback): same expectation as the analytic value used here.
    p = dist.Normal(torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0]))
    q = dist.Normal(torch.tensor([0.0, 0.5]), torch.tensor([1.0, 1.5]))
    ep, eq = PerExampleCopies(p, (4, 2)), PerExampleCopies(q, (4, 2))
    x = ep.sample((50000,))
    mc = (ep.log_prob(x) - eq.log_prob(x)).mean(0)
    torch.testing.assert_close(mc, kl_divergence(ep, eq), atol=0.03, rtol=0)


_PLAIN_EXPANDED_KL = """
import sys
import torch
import pyro.distributions as dist
from pyro.distributions.torch_distribution import ExpandedDistribution
from torch.distributions import kl_divergence
if sys.argv[1] == "with":
    import pyro_dirmag.distributions  # noqa: F401
    import pyro_dirmag.infer  # noqa: F401
    import pyro_dirmag.nn  # noqa: F401
pairs = {
    "Normal-Normal": (dist.Normal(0.3, 0.5), dist.Normal(0.0, 1.0)),
    "Normal-StudentT": (dist.Normal(0.3, 0.5), dist.StudentT(3.0, 0.0, 1.0)),
    "Beta-Uniform": (dist.Beta(2.0, 3.0), dist.Uniform(0.0, 1.0)),
}
for name, (p, q) in pairs.items():
    try:
        kl_divergence(p, q)
        print(name, "base pair registered")
    except NotImplementedError:
        print(name, "base pair unregistered")
    try:
        kl = kl_divergence(ExpandedDistribution(p, (3,)), ExpandedDistribution(q, (3,)))
        print(name, "value", kl.tolist())
    except Exception as e:
        print(name, type(e).__name__)
"""


def test_plain_expanded_kl_is_pyros_with_or_without_the_package():
    # Importing pyro_dirmag must not change kl_divergence of Pyro's own
    # ExpandedDistribution: the same outcome (value or error) as in a process without it,
    # for base pairs with a registered KL (Normal-Normal, Beta-Uniform) and without one.
    import subprocess
    import sys

    def run(arg):
        out = subprocess.run(
            [sys.executable, "-c", _PLAIN_EXPANDED_KL, arg],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.splitlines()

    without, with_package = run("without"), run("with")
    assert len(without) == 6
    assert "Normal-Normal base pair registered" in without
    assert "Normal-StudentT base pair unregistered" in without
    assert with_package == without
    assert "Normal-StudentT NotImplementedError" in with_package


def test_per_example_copies_held_kl_is_returned_once_and_for_its_pair_only():
    # DirMagELBO evaluates the KL of per-example copies to decide how to score a site and
    # hands it on to the loss: kl_divergence returns it once, for the same pair only.
    p = PerExampleCopies(Normal(torch.tensor([0.3, -1.0]), 0.5), (4, 2))
    q = PerExampleCopies(Normal(torch.tensor([0.0, 0.5]), 1.5), (4, 2))
    other = PerExampleCopies(Normal(torch.tensor([0.0, 0.5]), 1.5), (4, 2))
    held = kl_divergence(p, q)
    p.hold_kl(q, held)
    assert kl_divergence(p, q) is held
    fresh = kl_divergence(p, q)
    assert fresh is not held and torch.equal(fresh, held)
    p.hold_kl(q, held)
    assert kl_divergence(p, other) is not held  # another law: computed, and the hold dropped
    assert kl_divergence(p, q) is not held
