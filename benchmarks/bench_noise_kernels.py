"""
The per-example noise kernels of a dense DirMag layer against their plain forms, timed
interleaved in one run (best of the rounds, so that a loaded machine compares like with
like). Shapes are LeNet-300-100's first layer at batch 1000: ``(1000, 300)`` noise values
and a ``(300, 784)`` weight.

    python benchmarks/bench_noise_kernels.py [--rounds 20] [--threads 1]

Pairs (fast / plain, both exact and tested to agree in ``tests/``):

* ``rotated_output``: the layer output as one autograd node against autograd on the
  plain expression ``g (cos eps s + sin eps sqrt(|x|^2 - s^2) t) + b``, forward + backward;
* ``unit_directions``: ``v / ||v||`` with its three-pass backward against autograd's;
* truncated-normal angles: ``rsample`` + backward of an expanded law, gradients from four
  batch sums (laws near their mode) against the general log-space Jacobians;
* tangent draws: rejection from a normal (two variates a draw) against ``z / sqrt(z^2 +
  chi2)`` with a Marsaglia-Tsang chi-square (three variates a draw);
* the tangent draws' acceptance test thinned to Bernoulli candidates against the full
  test (one uniform per proposal).

With ``--compiled`` (needs a C++ compiler; compiling takes a minute), also
:mod:`pyro_dirmag.kernels`' compiled output against the hand-written node, the same
compiled with a symbolic batch size (``dynamic=True``), and aten's ``erfinv``, ``erfc``
and ``exp`` against Inductor's (the first column is then aten's, so the ratio is
Inductor's slowdown): why the truncated normal's quantiles stay eager.
"""

import argparse
import math
import time

import torch

import pyro_dirmag.distributions.truncated_normal as tn_module
import pyro_dirmag.nn._direction as direction_module
import pyro_dirmag.nn._rotated_output as rotated_module
from pyro_dirmag.distributions import TruncatedNormal
from pyro_dirmag.kernels import compiled_kernels
from pyro_dirmag.nn._direction import gamma_marsaglia_tsang, tangent_projection
from pyro_dirmag.nn._rotated_output import rotated_output
from pyro_dirmag.nn.weight_norm import unit_directions

BATCH, UNITS, FAN_IN = 1000, 300, 784


def _rotated_pair():
    s, xsq, g, eps, t, b = _rotated_inputs()

    def fast():
        rotated_output(s, xsq, g, eps, t, b).sum().backward()

    def plain():
        rho = (xsq - s * s).clamp_min(1e-12).sqrt()
        (g * (eps.cos() * s + eps.sin() * (rho * t)) + b).sum().backward()

    return fast, plain


def _compiled_output_pair(dynamic=False):
    hand_written, _ = _rotated_pair()
    if dynamic:
        kernel = torch.compile(rotated_module.compiled_rotated_output.fn, dynamic=True)
        inputs = _rotated_inputs()

        def compiled():
            kernel(*inputs, 1e-12).sum().backward()

        return compiled, hand_written

    def compiled():
        with compiled_kernels():
            hand_written()

    return compiled, hand_written


def _rotated_inputs():
    x = torch.randn(BATCH, FAN_IN)
    u = torch.nn.functional.normalize(torch.randn(UNITS, FAN_IN), dim=-1)
    s = (x @ u.T).requires_grad_()
    xsq = x.square().sum(-1, keepdim=True)
    g = torch.randn(BATCH, UNITS, requires_grad=True)
    eps = torch.rand(BATCH, UNITS, requires_grad=True)
    t = tangent_projection(FAN_IN, (BATCH, UNITS))
    return s, xsq, g, eps, t, torch.zeros(UNITS, requires_grad=True)


def _inductor_pair(fn):
    def make():
        x = torch.rand(BATCH, UNITS) * 0.98 + 0.01
        compiled = torch.compile(lambda a: fn(a), dynamic=False)
        return (lambda: fn(x)), (lambda: compiled(x))

    return make


def _normalize_pair():
    v = torch.randn(UNITS, FAN_IN, requires_grad=True)
    w = torch.randn(UNITS, FAN_IN)

    def fast():
        (unit_directions(v, (1,)) * w).sum().backward()

    def plain():
        (v / torch.linalg.vector_norm(v, dim=1, keepdim=True) * w).sum().backward()

    return fast, plain


def _angle_pair():
    loc = torch.linspace(0.0, 0.6, UNITS).requires_grad_()
    scale = torch.full((UNITS,), 0.05, requires_grad=True)
    zero = torch.zeros(())
    w = torch.randn(BATCH, UNITS)

    def draw():
        d = TruncatedNormal(loc, scale, zero, zero + 0.5 * math.pi).expand((BATCH, UNITS))
        (d.rsample() * w).sum().backward()

    def plain():
        with tn_module.fast_paths(False):  # the reference paths only
            draw()

    return draw, plain


def _tangent_pair():
    def fast():
        tangent_projection(FAN_IN, (BATCH, UNITS))

    def plain():
        z = torch.randn(BATCH, UNITS)
        chi2 = 2 * gamma_marsaglia_tsang(0.5 * (FAN_IN - 2), (BATCH, UNITS))
        return z * torch.rsqrt(z * z + chi2)

    return fast, plain


def _thinning_pair():
    def thinned():
        tangent_projection(FAN_IN, (BATCH, UNITS))

    def full_test():
        saved, direction_module._THIN_MIN = direction_module._THIN_MIN, 1 << 62
        try:
            thinned()
        finally:
            direction_module._THIN_MIN = saved

    return thinned, full_test


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compiled", action="store_true", help="add the torch.compile rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), best of {args.rounds} rounds")
    print(f"{'kernel':<34}{'fast ms':>9}{'plain ms':>10}{'plain/fast':>12}")
    pairs = {
        "rotated_output fwd+bwd": _rotated_pair,
        "unit_directions fwd+bwd": _normalize_pair,
        "angle rsample+bwd (near mode)": _angle_pair,
        "tangent draw t": _tangent_pair,
        "tangent draw t, thinned test": _thinning_pair,
    }
    if args.compiled:
        pairs.update(
            {
                "output: compiled / hand-written": _compiled_output_pair,
                "output: dynamic=True / hand-wr.": lambda: _compiled_output_pair(dynamic=True),
                "erfinv: aten / Inductor": _inductor_pair(torch.erfinv),
                "erfc: aten / Inductor": _inductor_pair(torch.special.erfc),
                "exp: aten / Inductor": _inductor_pair(torch.exp),
            }
        )
    for name, make in pairs.items():
        fast, plain = make()
        best = {"fast": math.inf, "plain": math.inf}
        for fn in (fast, plain):
            fn()
        for _ in range(args.rounds):
            for key, fn in (("fast", fast), ("plain", plain)):
                start = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - start)
        f, p = 1e3 * best["fast"], 1e3 * best["plain"]
        print(f"{name:<34}{f:>9.2f}{p:>10.2f}{p / f:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
