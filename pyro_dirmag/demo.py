"""Draw from each distribution of the package and check the draws against its density.

Run with ``python -m pyro_dirmag.demo`` (``make demo``). For every distribution it
prints: the Monte Carlo mean against the exact one (where defined), the
goodness-of-fit p-value of the draws against ``log_prob`` (Pyro's ``gof`` test with
scipy's chi-square tail when scipy is installed), and the integral of the density
over its support by quadrature (it must be 1).
"""

import argparse
import math

import pyro.distributions.testing.gof as gof
import torch

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    SymmetricLogUniform,
    TangentProjectedNormal,
    TruncatedNormal,
)
from pyro_dirmag.distributions._sphere import geodesic_angle

try:  # Pyro's own chi-square tail returns 1.0 for huge statistics; prefer scipy's
    import scipy.stats

    gof.chi2sf = lambda x, df: float(scipy.stats.chi2.sf(float(x), int(df)))  # noqa: E731
except ImportError:  # pragma: no cover - scipy is a dev dependency only
    pass


def _integrate(log_density, low, high, num_points=200_001):
    """Trapezoid rule of exp(log_density) on [low, high] in float64."""
    grid = torch.linspace(low, high, num_points, dtype=torch.float64)
    return torch.trapezoid(log_density(grid).exp(), grid).item()


def _line_cases():
    # float64: Pyro's gof test bins by the spacing of sorted draws, which float32
    # quantizes far from 0 (at x ~ 30 the float32 spacing rivals the draws' gaps).
    pi = math.pi
    t = torch.tensor(0.0, dtype=torch.float64)
    return [
        ("TruncatedNormal(0, 1, -1, 2)", TruncatedNormal(t, 1.0, -1.0, 2.0), (-1.0, 2.0)),
        ("TruncatedNormal(0, 1, 8, 9)", TruncatedNormal(t, 1.0, 8.0, 9.0), (8.0, 9.0)),
        ("TruncatedNormal(0, 1, 30, inf)", TruncatedNormal(t, 1.0, 30.0, math.inf), (30.0, 31.5)),
        (
            "TruncatedNormal(0.3, 0.2, 0, pi/2)",
            TruncatedNormal(t + 0.3, 0.2, 0.0, pi / 2),
            (0, pi / 2),
        ),
        ("StretchedSymmetricBeta(3)", StretchedSymmetricBeta(t + 3.0), (-pi / 2, pi / 2)),
        ("SymmetricLogUniform(1e-3, 10)", SymmetricLogUniform(t + 1e-3, 10.0), None),
    ]


def _sphere_cases(dim):
    loc = torch.zeros(dim, dtype=torch.float64)
    loc[0] = 1.0
    pi = math.pi
    return [
        (
            f"PlaneRotation(TN(0, 0.3, -pi/2, pi/2)), n={dim}",
            PlaneRotation(loc, TruncatedNormal(loc[1], 0.3, -pi / 2, pi / 2)),
        ),
        (
            f"PlaneRotation(TN(0.4, 0.2, 0, pi/2)), n={dim}",
            PlaneRotation(loc, TruncatedNormal(loc[1] + 0.4, 0.2, 0.0, pi / 2)),
        ),
        (
            f"PlaneRotation(StretchedBeta(4)), n={dim}",
            PlaneRotation(loc, StretchedSymmetricBeta(loc[1] + 4.0)),
        ),
        (f"TangentProjectedNormal(0.1), n={dim}", TangentProjectedNormal(loc, 0.1)),
    ]


def _symmetric_log_uniform_normalization(d):
    # the density is symmetric; integrate log|x| uniformly: int p dx = 2 int p(e^s) e^s ds
    low, high = math.log(d.low.item()), math.log(d.high.item())
    return 2 * _integrate(lambda s: d.log_prob(s.exp().clamp(d.low, d.high)) + s, low, high)


def run(num_samples=20_000, dim=50, seed=0):
    torch.manual_seed(seed)
    rows = []
    with torch.no_grad():
        for name, d, interval in _line_cases():
            x = d.sample((num_samples,))
            p_value = gof.auto_goodness_of_fit(x, d.log_prob(x).exp())
            if interval is None:
                integral = _symmetric_log_uniform_normalization(d)
            else:
                integral = _integrate(
                    lambda t, d=d: d.log_prob(t.to(d.mean.dtype)).double(), *interval
                )
            try:
                exact_mean = f"{d.mean.item():.4f}"
            except NotImplementedError:
                exact_mean = "-"
            rows.append((name, f"{x.mean().item():.4f}", exact_mean, p_value, integral))
        for name, d in _sphere_cases(dim):
            x = d.sample((num_samples,))
            theta = geodesic_angle(d.loc, x)[0]
            # the geodesic angle is a 1-D statistic with an exact density
            p_value = gof.auto_goodness_of_fit(theta, d.angle_log_prob(theta).exp())
            integral = _integrate(d.angle_log_prob, 1e-12, math.pi - 1e-12)
            norm_ok = torch.allclose(x.norm(dim=-1), torch.ones(()).double())
            rows.append((name, f"{theta.mean().item():.4f}", "-", p_value, integral, norm_ok))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=50, help="sphere dimension n")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = run(args.num_samples, args.dim, args.seed)
    header = f"{'distribution':<44} {'MC mean':>9} {'exact':>9} {'gof p':>8} {'integral':>10}"
    print(f"{args.num_samples} draws each; sphere rows test the geodesic angle theta")
    print(header)
    print("-" * len(header))
    for name, mc_mean, exact_mean, p_value, integral, *_ in rows:
        print(f"{name:<44} {mc_mean:>9} {exact_mean:>9} {p_value:>8.3f} {integral:>10.6f}")
    bad = [r[0] for r in rows if not (r[3] > 1e-3 and abs(r[4] - 1) < 1e-3)]
    print("all draws agree with their densities" if not bad else f"MISMATCH: {bad}")
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
