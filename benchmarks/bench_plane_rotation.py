"""PlaneRotation sampling cost at MNIST width, relative to Pyro's ProjectedNormal.

Times, for 300 units of dimension 784 and 100 samples each (float32):

- ``ProjectedNormal.rsample`` (the baseline: normalize(concentration + noise));
- ``PlaneRotation.rsample`` and ``rsample + log_prob`` with the thesis's angle laws
  (stretched symmetric Beta, truncated normal on [-pi/2, pi/2]);
- ``TangentProjectedNormal.rsample`` and ``rsample + log_prob``.

Prints the median time of each and its ratio to the baseline. Run::

    .venv/bin/python benchmarks/bench_plane_rotation.py [--threads 1] [--repeats 5]
"""

import argparse
import math
import time

import pyro.distributions as dist
import torch

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    TangentProjectedNormal,
    TruncatedNormal,
)


def median_time(fn, repeats):
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


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

    baseline = median_time(lambda: baseline_dist.rsample((s,)), args.repeats)
    print(f"shape: {s} samples x {units} units x dim {n}, float32, {args.threads} thread(s)")
    print(f"{'ProjectedNormal.rsample (baseline)':58s} {1e3 * baseline:8.2f} ms   1.00x")
    for name, d in laws.items():
        t_rs = median_time(lambda d=d: d.rsample((s,)), args.repeats)
        t_lp = median_time(lambda d=d: d.log_prob(d.rsample((s,))), args.repeats)
        print(f"{name + '.rsample':58s} {1e3 * t_rs:8.2f} ms {t_rs / baseline:6.2f}x")
        print(f"{name + '.rsample + log_prob':58s} {1e3 * t_lp:8.2f} ms {t_lp / baseline:6.2f}x")


if __name__ == "__main__":
    main()
