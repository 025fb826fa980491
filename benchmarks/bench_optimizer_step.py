"""
Time per training step of a DirMag model with Pyro's per-parameter optimizer wrappers
(``SVI`` with ``pyro.optim.Adam``) against one ``torch.optim.Adam`` over all
parameters of the model and the guide (the recipe's optimizer, as ``fit`` and the
Lightning module use it), measured in one run (interleaved rounds, medians).

    OMP_NUM_THREADS=1 python benchmarks/bench_optimizer_step.py
    OMP_NUM_THREADS=1 python benchmarks/bench_optimizer_step.py --model lenet5 --batch-size 100

Columns: ``svi`` = ``SVI.step`` (loss and gradients, parameter capture trace,
one torch Adam per parameter, zeroing); ``torch`` = ``differentiable_loss`` +
``backward`` + one Adam step (no KL weight); ``module`` =
:meth:`PyroLightningModule.loss_and_stats` under the KL-weight handler + ``backward`` +
Adam + learning-rate scheduler step (the Lightning training step without the Trainer).
"""

import argparse
import statistics
import time

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_dirmag.infer import DirMagELBO, Recipe
from pyro_dirmag.models import build


def _setup(args):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = torch.randn(args.batch_size, 784)
    y = torch.randint(0, 10, (args.batch_size,))
    model, guide = build(args.model, args.method, num_data=55000)
    with torch.no_grad(), poutine.block():
        guide(x, y)
    return model, guide, x, y


def svi_step_fn(args):
    model, guide, x, y = _setup(args)
    svi = SVI(model, guide, Adam({"lr": Recipe().lr}), DirMagELBO())
    return lambda: svi.step(x, y)


def torch_step_fn(args):
    model, guide, x, y = _setup(args)
    elbo = DirMagELBO()
    optimizer = Recipe().optimizer(model, guide)

    def step():
        loss = elbo.differentiable_loss(model, guide, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def module_step_fn(args):
    from pyro_dirmag.lightning import PyroLightningModule

    model, guide, x, y = _setup(args)
    module = PyroLightningModule(model, guide)
    recipe = Recipe()
    optimizer = recipe.optimizer(model, guide)
    scheduler = recipe.lr_scheduler(optimizer, 10**6)

    def step():
        loss, _ = module.loss_and_stats(x, y, beta=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet300")
    p.add_argument("--method", default="dirmag-reverse")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-module", action="store_true", help="skip the Lightning column")
    args = p.parse_args()
    torch.set_num_threads(1)
    makers = {"svi": svi_step_fn, "torch": torch_step_fn}
    if not args.no_module:
        makers["module"] = module_step_fn
    steps = {}
    for name, make in makers.items():
        steps[name] = make(args)
        for _ in range(3):
            steps[name]()  # warm-up (lazy optimizer state, allocator)
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"{args.model} {args.method} batch {args.batch_size}, torch threads 1, "
        f"{args.rounds} rounds x {args.steps} steps (median ms/step)"
    )
    for name, t in med.items():
        ratio = med["svi"] / t
        print(f"  {name:<7} {1000 * t:8.2f} ms   svi/{name} = {ratio:.3f}")
    print(
        f"  one torch Adam saves {1000 * (med['svi'] - med['torch']):.2f} ms/step "
        f"({100 * (1 - med['torch'] / med['svi']):.1f} % of the SVI step)"
    )


if __name__ == "__main__":
    main()
