"""
Variance of the ELBO gradient of LeNet-300-100 at batch 100: the thesis's shared phi
(one direction noise draw per mini-batch) against per-example phi (docs/MATH.md section 5).

The same parameters and the same mini-batch are used for both; only the noise
changes between draws, so the variance measured is the noise's. Reported per
parameter tensor (variance per element, averaged) and overall as a ratio
shared / per-example, in one run.

    python benchmarks/bench_grad_variance.py [--draws 100] [--warmup-steps 200]
"""

import argparse
import time

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import ClippedAdam

from pyro_dirmag.data import default_data_root, load_mnist
from pyro_dirmag.infer import DirMagELBO, DirMagGuide
from pyro_dirmag.models import dirmag_model
from pyro_dirmag.nn import direction_noise


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    if default_data_root() is not None:
        x, y = load_mnist(train=True, subset=10000)
        source = "MNIST (10,000-image subset)"
    else:
        x, y = torch.randn(10000, 784), torch.randint(0, 10, (10000,))
        source = "random data (MNIST not found)"
    model = dirmag_model("lenet300", 60000)
    guide = DirMagGuide(model, init_angle_scale=0.2)
    svi = SVI(model, guide, ClippedAdam({"lr": 1e-3}), DirMagELBO())
    start = time.perf_counter()
    for _step in range(args.warmup_steps):  # realistic parameters, not the init
        idx = torch.randint(0, len(x), (args.batch_size,))
        svi.step(x[idx], y[idx])
    print(
        f"{source}; {args.warmup_steps} warm-up steps ({time.perf_counter() - start:.0f} s); "
        f"{args.draws} gradient draws per variant, batch {args.batch_size}"
    )
    xb, yb = x[: args.batch_size], y[: args.batch_size]
    names = [n for n, _ in model.named_parameters()] + [
        "guide." + n for n, _ in guide.named_parameters()
    ]
    params = list(model.parameters()) + list(guide.parameters())
    elbo = DirMagELBO()
    variances = {}
    for phi in ("per_example", "shared"):
        grads = [[] for _ in params]
        with direction_noise(model, phi):
            for _ in range(args.draws):
                loss = elbo.differentiable_loss(model, guide, xb, yb)
                for store, g in zip(grads, torch.autograd.grad(loss, params), strict=False):
                    store.append(g.detach().flatten())
        variances[phi] = [torch.stack(g).var(0).mean().item() for g in grads]
    print(f"{'parameter':<48}{'per-example phi':>16}{'shared phi':>14}{'ratio':>8}")
    for n, a, b in zip(names, variances["per_example"], variances["shared"], strict=False):
        print(f"{n:<48}{a:>16.4g}{b:>14.4g}{b / a:>8.2f}")
    sizes = [p.numel() for p in params]
    total = {
        k: sum(v * s for v, s in zip(vs, sizes, strict=False)) / sum(sizes)
        for k, vs in variances.items()
    }
    print(
        f"gradient variance averaged over all {sum(sizes)} parameters: per-example "
        f"{total['per_example']:.4g}, shared {total['shared']:.4g}, "
        f"ratio shared / per-example = {total['shared'] / total['per_example']:.2f}"
    )
    direction = [n for n in names if "angle" in n]
    ratios = [
        b / a for n, a, b in zip(names, variances["per_example"], variances["shared"], strict=False)
    ]
    print(
        "ratios for the angle parameters: "
        + ", ".join(f"{r:.2f}" for n, r in zip(names, ratios, strict=False) if n in direction)
    )


if __name__ == "__main__":
    main()
