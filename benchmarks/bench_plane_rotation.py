"""PlaneRotation sampling cost at MNIST width, relative to Pyro's ProjectedNormal.

Times, for 300 units of dimension 784 and 100 samples each (float32):

- ``ProjectedNormal.rsample`` (the baseline: normalize(concentration + noise));
- ``PlaneRotation.rsample`` and ``rsample + log_prob`` with the thesis's angle laws
  (stretched symmetric Beta, truncated normal on [-pi/2, pi/2]);
- ``TangentProjectedNormal.rsample`` and ``rsample + log_prob``.

Each round times the baseline and every variant back to back (this machine's speed
drifts within a run); prints each variant's median time and the median over rounds of
its ratio to the baseline of the same round. Run::

    .venv/bin/python benchmarks/bench_plane_rotation.py [--threads 1] [--repeats 5]
"""

import argparse
import math
import statistics
import time

import pyro.distributions as dist
import torch

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    TangentProjectedNormal,
    TruncatedNormal,
)


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    units, n, s = args.units, args.dim, args.samples
    loc = torch.randn(units, n)
    loc = loc / loc.norm(dim=-1, keepdim=True)
    sigma = torch.full((units,), 0.3)
    half_pi = torch.tensor(math.pi / 2)
    laws = {
        "PlaneRotation(StretchedSymmetricBeta)": PlaneRotation(
            loc, StretchedSymmetricBeta(torch.full((units,), 10.0))
        ),
        "PlaneRotation(TruncatedNormal)": PlaneRotation(
            loc, TruncatedNormal(torch.zeros(units), sigma, -half_pi, half_pi)
        ),
        "TangentProjectedNormal": TangentProjectedNormal(loc, sigma),
    }
    baseline_dist = dist.ProjectedNormal(loc / 0.3)

    variants = {"ProjectedNormal.rsample (baseline)": lambda: baseline_dist.rsample((s,))}
    for name, d in laws.items():
        variants[name + ".rsample"] = lambda d=d: d.rsample((s,))
        variants[name + ".rsample + log_prob"] = lambda d=d: d.log_prob(d.rsample((s,)))
    for fn in variants.values():
        fn()  # warm up
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(_seconds(fn))
    base = times["ProjectedNormal.rsample (baseline)"]
    print(f"shape: {s} samples x {units} units x dim {n}, float32, {args.threads} thread(s)")
    for name, t in times.items():
        ratio = statistics.median(ti / bi for ti, bi in zip(t, base, strict=True))
        print(f"{name:58s} {1e3 * statistics.median(t):8.2f} ms {ratio:6.2f}x")


if __name__ == "__main__":
    main()
