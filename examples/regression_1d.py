"""
Bayesian regression on 1-D toy data with a network of your own: pre-train a plain
``torch.nn`` MLP, convert it with :func:`pyro_dirmag.nn.to_dirmag`, fit the DirMag
posterior and a noise scale (a latent of the likelihood, fitted by ``AutoNormal``
through ``DirMagGuide(other=...)``), and plot the predictive band, which widens away
from the data.

The magnitudes get a Gaussian prior here (``--prior-scale``): the library's default
log-uniform prior is the sparsifying one of sparse variational dropout, which switches
most units off and leaves little uncertainty away from the data (``--log-uniform``
shows it).

Example::

    python examples/regression_1d.py --out regression_1d.png

It prints the predictive standard deviation inside the data and away from it.
"""

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from pyro.optim import ClippedAdam
from torch import nn

from pyro_dirmag.infer import DirMagELBO, DirMagGuide, predict
from pyro_dirmag.nn import DirMagModel, to_dirmag


class NormalLikelihood(PyroModule):
    """``y ~ Normal(f(x), scale)`` with a log-normal prior on the global ``scale``."""

    def __init__(self):
        super().__init__()
        self.scale = PyroSample(dist.LogNormal(-2.0, 1.0))

    def forward(self, out):
        return dist.Normal(out.squeeze(-1), self.scale)


def toy_data(n, seed=0):
    """Two clusters, ``x`` in [-1, -0.3] and [0.3, 1], ``y = sin(3x) + 0.1 noise``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 0.7 + 0.3
    x = torch.where(torch.arange(n)[:, None] % 2 == 0, x, -x)
    y = torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(n, generator=g)
    return x, y


def pretrain(net, x, y, steps, lr=1e-2):
    """Plain least squares with Adam (the "pre-training" of the deterministic net)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (net(x).squeeze(-1) - y).pow(2).mean()
        loss.backward()
        optimizer.step()
    return loss.item()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-data", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--prior-scale", type=float, default=2.0, help="of Normal(0, s) on g")
    parser.add_argument("--log-uniform", action="store_true", help="the default prior on g")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the plot here (PNG)")
    args = parser.parse_args(argv)
    for name in ("num_data", "hidden", "steps", "batch_size", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.prior_scale > 0:
        parser.error("--prior-scale must be > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    x, y = toy_data(args.num_data, args.seed)
    net = nn.Sequential(
        nn.Linear(1, args.hidden),
        nn.ReLU(),
        nn.Linear(args.hidden, args.hidden),
        nn.ReLU(),
        nn.Linear(args.hidden, 1),
    )
    start = time.perf_counter()
    mse = pretrain(net, x, y, args.pretrain_steps)
    print(f"pre-training: {args.pretrain_steps} steps, training MSE {mse:.4f}")
    # The first layer's weights are vectors of dimension 1: magnitude noise only there.
    prior = None if args.log_uniform else dist.Normal(0.0, args.prior_scale)
    model = DirMagModel(to_dirmag(net, magnitude_prior=prior), NormalLikelihood(), len(x))
    guide = DirMagGuide(model, other=AutoNormal)
    svi = SVI(model, guide, ClippedAdam({"lr": args.lr}), DirMagELBO())
    for step in range(args.steps):
        idx = torch.randint(0, len(x), (min(args.batch_size, len(x)),))
        loss = svi.step(x[idx], y[idx])
        if (step + 1) % max(1, args.steps // 5) == 0:
            print(f"step {step + 1:5d}  -ELBO per example {loss / len(x):8.4f}")
    grid = torch.linspace(-3, 3, 301)[:, None]
    mean, variance = predict(model, guide, grid, mode="ensemble", num_samples=args.num_samples)
    std = variance.sqrt()
    scale = guide.other.median(x[:1], y[:1])["likelihood.scale"]
    inside = (grid.abs() >= 0.3).squeeze(-1) & (grid.abs() <= 1).squeeze(-1)
    outside = (grid.abs() >= 2.5).squeeze(-1)
    results = {
        "noise_scale": float(scale),
        "std_inside": float(std[inside].mean()),
        "std_outside": float(std[outside].mean()),
        "seconds": time.perf_counter() - start,
    }
    print(f"posterior median of the noise scale {results['noise_scale']:.3f} (true 0.1)")
    print(
        f"predictive std: {results['std_inside']:.3f} inside the data, "
        f"{results['std_outside']:.3f} at |x| >= 2.5"
    )
    if args.out:
        plot(args.out, x, y, grid, mean, std)
        print(f"plot written to {args.out}")
    return results


def plot(path, x, y, grid, mean, std):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = grid.squeeze(-1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(g, mean - 2 * std, mean + 2 * std, alpha=0.3, label="mean +- 2 std")
    ax.plot(g, mean, label="predictive mean")
    ax.plot(g, torch.sin(3 * g), "k--", lw=1, label="sin(3x)")
    ax.scatter(x.squeeze(-1), y, s=6, c="k", label="data")
    ax.set_ylim(-3, 3)
    ax.set_xlabel("x")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("DirMag regression: the band widens away from the data")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
