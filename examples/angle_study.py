"""How far does each direction noise move a unit vector? (thesis appendix D, figures 11-14)

For every direction noise of :mod:`pyro_dirmag.nn.noise` and a range of ``alpha``,
draw 10,000 perturbed copies of one unit vector in R^1000, histogram the angle
between the clean and the perturbed vector, and overlay the exact angle density:

* rotation in a plane (``rotation_normal``, ``rotation_beta``) and tangent projection
  (``tangent``): the library's ``angle_log_prob``;
* projected Gaussian (``projected``): derived here. With ``x = normalize(v + s z)``,
  ``s = sqrt(alpha)``, split ``z`` along ``v`` and across it: ``a = 1 + s z_1`` and
  ``b = s R``, ``R ~ chi(k)``, ``k = n - 1``. In polar coordinates ``(rho, theta)`` of
  ``(a, b)``, integrating ``rho`` out gives

  .. math::

      f(\\theta) = \\frac{\\sin^{k-1}\\theta \\, e^{-\\sin^2\\theta / (2 s^2)}}
                        {2^{k/2 - 1} \\Gamma(k/2)} \\, M_k(\\cos\\theta / s),\\qquad
      M_k(t) = \\int_0^\\infty r^k \\varphi(r - t)\\, dr,

  the density of docs/MATH.md section 7 times the area ``A_{n-2} sin^{n-2} theta`` of the
  circle of points at angle ``theta``. ``M_k`` is a log-concave integral computed by
  quadrature around its peak ``r* = (t + sqrt(t^2 + 4k)) / 2``.

The figure shows the thesis's point: in high dimension a projected Gaussian moves
every vector by a large angle even for tiny ``alpha`` (``theta ~ arctan(sqrt(alpha n))``),
while the rotation laws keep the angle near ``sqrt(alpha)``.

Example::

    python examples/angle_study.py --output outputs/angle_study.png
"""

import argparse
import math
import os

import numpy as np
import torch

from pyro_dirmag.distributions._sphere import geodesic_angle
from pyro_dirmag.nn import DIRECTION_NOISES
from pyro_dirmag.nn.noise import ROTATION_BETA_MAX_ALPHA, direction_distribution

DEFAULT_ALPHAS = (1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 2.0)


def random_unit_vector(dim, seed=0, dtype=torch.float64):
    # A generator of its own, offset from the noise seed: with the same seed the first
    # noise draw would repeat the normal vector that made ``loc``.
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    v = torch.randn(dim, generator=generator, dtype=dtype)
    return v / v.norm()


def perturbation_angles(noise, alpha, dim=1000, num_samples=10000, seed=0, chunk=2000):
    """Angles between a unit vector in R^dim and ``num_samples`` perturbed copies.

    :returns: float64 tensor of shape ``(num_samples,)`` with values in ``[0, pi]``.
    """
    torch.manual_seed(seed)
    loc = random_unit_vector(dim, seed)
    dist = direction_distribution(noise, loc, alpha)
    out = []
    for start in range(0, num_samples, chunk):
        n = min(chunk, num_samples - start)
        with torch.no_grad():
            out.append(geodesic_angle(loc, dist.sample((n,)))[0])
    return torch.cat(out)


def projected_angle_log_density(theta, alpha, dim, num_nodes=512, width=40.0):
    """Log density of the angle between ``v`` and ``normalize(v + N(0, alpha I_dim))``
    (see the module docstring), evaluated at ``theta`` in ``(0, pi)``.

    :param theta: angles, array-like.
    :returns: numpy float64 array of the shape of ``theta``.
    """
    theta = np.asarray(theta, dtype=np.float64)
    s, k = math.sqrt(alpha), dim - 1
    t = np.cos(theta) / s
    # log M_k(t) by Gauss-Legendre quadrature on +-width curvature widths around the peak of the
    # log-concave integrand r^k phi(r - t); the peak and width come from its first and
    # second derivatives: k / r - (r - t) = 0 and -k / r^2 - 1.
    peak = 0.5 * (t + np.sqrt(t**2 + 4 * k))
    w = 1 / np.sqrt(1 + k / peak**2)
    lo = np.maximum(peak - width * w, 0.0)
    hi = peak + width * w
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    half = 0.5 * (hi - lo)[..., None]
    r = lo[..., None] + half * (nodes + 1)
    with np.errstate(divide="ignore"):
        log_f = k * np.log(r) - 0.5 * (r - t[..., None]) ** 2 - 0.5 * math.log(2 * math.pi)
    m = log_f.max(-1, keepdims=True)
    log_m = m[..., 0] + np.log((np.exp(log_f - m) * weights).sum(-1) * half[..., 0])
    sin = np.sin(theta)
    with np.errstate(divide="ignore"):  # log sin = -inf at theta = 0 and pi: density 0
        log_sin = np.log(sin)
    return (
        (k - 1) * log_sin
        - sin**2 / (2 * alpha)
        + log_m
        - (k / 2 - 1) * math.log(2)
        - math.lgamma(k / 2)
    )


def angle_density(noise, alpha, theta, dim=1000):
    """Exact density of the perturbation angle at ``theta`` (float64 tensor) for ``noise``."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    if noise == "projected":
        return torch.from_numpy(np.exp(projected_angle_log_density(theta.numpy(), alpha, dim)))
    dist = direction_distribution(noise, random_unit_vector(dim), alpha)
    return dist.angle_log_prob(theta).exp()


def alphas_for(noise, alphas):
    """The ``alphas`` valid for ``noise`` (``rotation_beta`` needs ``alpha < pi^2 / 4``)."""
    if noise == "rotation_beta":
        return [a for a in alphas if a < ROTATION_BETA_MAX_ALPHA]
    return list(alphas)


def run_study(noises, alphas, dim, num_samples, seed=0, bins=60):
    """Angles, histograms and overlays for every ``(noise, alpha)``.

    :returns: list of dicts with keys ``noise, alpha, theta, edges, counts, grid, density``.
    """
    results = []
    for noise in noises:
        for alpha in alphas_for(noise, alphas):
            theta = perturbation_angles(noise, alpha, dim, num_samples, seed)
            counts, edges = np.histogram(theta.numpy(), bins=bins)
            lo, hi = edges[0], edges[-1]
            pad = 0.1 * (hi - lo)
            grid = torch.linspace(max(lo - pad, 1e-9), min(hi + pad, math.pi - 1e-9), 400)
            grid = grid.to(torch.float64)
            density = angle_density(noise, alpha, grid, dim)
            results.append(
                dict(
                    noise=noise,
                    alpha=alpha,
                    theta=theta,
                    edges=edges,
                    counts=counts,
                    grid=grid.numpy(),
                    density=density.numpy(),
                )
            )
    return results


def plot(results, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = list(dict.fromkeys(r["noise"] for r in results))
    cols = max(sum(r["noise"] == n for r in results) for n in noises)
    fig, axes = plt.subplots(
        len(noises), cols, figsize=(2.6 * cols, 2.2 * len(noises)), squeeze=False
    )
    for row, noise in enumerate(noises):
        panels = [r for r in results if r["noise"] == noise]
        for col in range(cols):
            ax = axes[row][col]
            if col >= len(panels):
                ax.axis("off")
                continue
            r = panels[col]
            ax.hist(r["theta"].numpy(), bins=r["edges"], density=True, color="0.75")
            ax.plot(r["grid"], r["density"], color="C3", lw=1.2)
            ax.set_title(f"{noise}, alpha={r['alpha']:g}", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[row][0].set_ylabel("density", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("angle (rad)", fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def make_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noises", nargs="+", choices=DIRECTION_NOISES, default=DIRECTION_NOISES)
    parser.add_argument("--alphas", type=float, nargs="+", default=DEFAULT_ALPHAS)
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join("outputs", "angle_study.png"))
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    results = run_study(args.noises, args.alphas, args.dim, args.num_samples, args.seed)
    print(f"{'noise':>16} {'alpha':>8} {'mean angle (deg)':>17} {'sd (deg)':>9}")
    for r in results:
        deg = torch.rad2deg(r["theta"])
        print(f"{r['noise']:>16} {r['alpha']:>8g} {deg.mean():17.2f} {deg.std():9.2f}")
    plot(results, args.output)
    print(f"saved {args.output}")
    return results


if __name__ == "__main__":
    main()
