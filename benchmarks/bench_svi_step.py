"""
Time per SVI step of the DirMag models against a plain PyTorch training step of the
same weight-normalized deterministic architecture, measured in one run (interleaved
rounds, medians) so that the ratios are comparable on a loaded machine.

    python benchmarks/bench_svi_step.py            # LeNet-300-100 @100, @1000, LeNet5 @100
    python benchmarks/bench_svi_step.py --profile  # plus where the SVI step's time goes
    python benchmarks/bench_svi_step.py --breakdown  # LeNet-300-100 @1000 by phase only
    python benchmarks/bench_svi_step.py --compiled   # plus DirMagELBO with compiled kernels

Anchor (issue 3): TyXe's local reparameterization measured 8.7x (batch 100) and 3.4x
(batch 1000) a plain step; target <= 8x and <= 3x for LeNet-300-100.
"""

import argparse
import cProfile
import io
import math
import pstats
import statistics
import time

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import ClippedAdam

from pyro_dirmag.infer import DirMagELBO, DirMagGuide
from pyro_dirmag.kernels import compiled_kernels
from pyro_dirmag.models import deterministic_model, dirmag_model

CASES = [("lenet300", 100), ("lenet300", 1000), ("lenet5", 100)]


def plain_step_fn(name, x, y):
    net = deterministic_model(name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    return step


def svi_step_fn(name, x, y, elbo=TraceMeanField_ELBO, **layer_kwargs):
    pyro.clear_param_store()
    model = dirmag_model(name, 60000, **layer_kwargs)
    guide = DirMagGuide(model)
    svi = SVI(model, guide, ClippedAdam({"lr": 1e-3}), elbo())
    return lambda: svi.step(x, y)


def compiled_step_fn(step):
    """``step`` (an SVI step) with pyro_dirmag.kernels' compiled kernels on: the same
    model and parameters as the eager column, so that the two compare like with like."""

    def compiled_step():
        with compiled_kernels():
            step()

    return compiled_step


def timed(fn, steps):
    """Seconds of each of ``steps`` calls."""
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="add DirMagELBO with compiled kernels (needs a C++ compiler; compiles first)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only LeNet-300-100 at batch 1000, one DirMagELBO step split into phases",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    if args.breakdown:
        return breakdown(args.rounds * args.steps, compiled=args.compiled)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds x "
        f"{args.steps} steps, median step times"
    )
    cols = {
        "meanfield": "TraceMeanField_ELBO",
        "dirmag": "DirMagELBO",
        "shared": "DirMagELBO shared-phi",
    }
    if args.compiled:
        cols["compiled"] = "DirMagELBO compiled"
    print("per-example noise (g, eps, phi) unless shared-phi; ms per step (ratio to plain)")
    print(f"{'model':<9}{'batch':>6}{'plain':>8}" + "".join(f"{c:>26}" for c in cols.values()))
    for name, batch in CASES:
        x = torch.randn(batch, 784)
        y = torch.randint(0, 10, (batch,))
        fns = {
            "plain": plain_step_fn(name, x, y),
            "meanfield": svi_step_fn(name, x, y),
            "dirmag": svi_step_fn(name, x, y, elbo=DirMagELBO),
            "shared": svi_step_fn(name, x, y, elbo=DirMagELBO, phi="shared"),
        }
        if args.compiled:
            fns["compiled"] = compiled_step_fn(fns["dirmag"])
        times = {k: [] for k in fns}
        for fn in fns.values():
            timed(fn, 5)  # warm up: a model's first steps run slower
        for _ in range(args.rounds):
            for k, fn in fns.items():
                times[k].extend(timed(fn, args.steps))
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        line = f"{name:<9}{batch:>6}{med['plain']:>8.2f}"
        for c in cols:
            line += f"{med[c]:>18.2f} ({med[c] / med['plain']:4.1f}x)"
        print(line, flush=True)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            timed(fns["dirmag"], args.steps)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
            print(s.getvalue())


def breakdown(steps, batch=1000, compiled=False):
    """Best-of-``steps`` times of the phases of one DirMagELBO step on LeNet-300-100,
    next to a plain step and to the random draws alone (the floor of exact sampling)."""
    x = torch.randn(batch, 784)
    y = torch.randint(0, 10, (batch,))
    plain = plain_step_fn("lenet300", x, y)
    pyro.clear_param_store()
    model = dirmag_model("lenet300", 60000)
    guide = DirMagGuide(model)
    optim = ClippedAdam({"lr": 1e-3})
    svi = SVI(model, guide, optim, DirMagELBO())
    elbo = DirMagELBO()
    svi.step(x, y)
    params = list(pyro.get_param_store().values())

    def compiled_step():
        with compiled_kernels():
            svi.step(x, y)

    def draws():  # per (example, unit): g (normal), eps (uniform), t (normal; its thinned
        # acceptance test adds about 0.05-0.12 uniforms at these widths, left out)
        for units in (300, 100, 10):
            torch.randn(batch, units), torch.rand(batch, units), torch.randn(batch, units)

    phases = {
        "plain weight-normalized step": plain,
        "random draws only (3 per example and unit)": draws,
        "guide (posteriors, g and eps draws)": lambda: poutine.trace(guide).get_trace(x, y),
        "guide + model (t draws, layers)": lambda: elbo.trace_pair(model, guide, (x, y), {}),
        "loss (guide + model + KL)": lambda: elbo.differentiable_loss(model, guide, x, y),
        "loss + backward": lambda: elbo.differentiable_loss(model, guide, x, y).backward(),
        "whole SVI step (+ ClippedAdam)": lambda: svi.step(x, y),
    }
    if compiled:
        phases["whole SVI step, compiled kernels"] = compiled_step
        start = time.perf_counter()
        compiled_step()  # compiles (or loads from Inductor's on-disk cache)
        print(f"first compiled step (compilation included): {time.perf_counter() - start:.1f} s")
    best = dict.fromkeys(phases, math.inf)
    for _ in range(steps):
        for name, fn in phases.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            for p in params:
                p.grad = None
    print(f"LeNet-300-100, batch {batch}, DirMagELBO, best of {steps} interleaved runs (ms)")
    for name, t in best.items():
        print(f"  {name:<46}{1e3 * t:8.2f}")


if __name__ == "__main__":
    main()
