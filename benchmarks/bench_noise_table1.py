"""Thesis table 1 at this machine's scale, plus the cost of a training step per noise.

Part 1 (table 1): an FC 1024-1024-2048 weight-normalized network on MNIST training
subsets (1,000 and 5,000 images by default), with the noise on activations ("signal
rotation", thesis 3.5) in every layer: no regularization, Gaussian dropout, rotation
with a stretched-Beta angle, rotation with a truncated-normal angle, rotation (normal)
plus Gaussian magnitude noise (magnitude variance tied to the rotation's ``alpha``).
For each method one ``alpha`` is chosen from a small grid by the ensemble accuracy on a
validation split held out from the training subset (never the test set); the network
trained on the rest of the subset with that ``alpha`` is then scored on the full
10,000-image test set. Printed beside the thesis's numbers (200 epochs, full subsets).

Part 2 (step cost): seconds per training step (batch 128, forward + backward + Adam)
of the same network with each noise, relative to the network without noise; the
configurations are timed round-robin and the fastest round kept, to damp the noise
of a shared machine.

One thread by default: on a machine shared with other jobs, two OpenMP threads on two
busy cores wait on each other at every barrier and made steps 3-10x slower and erratic.

Example (the run reported in the closing note)::

    python -u benchmarks/bench_noise_table1.py --sizes 1000 5000 --epochs 20 6 --threads 1
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

from train_noise_mnist import evaluate, train  # noqa: E402

from pyro_dirmag.data import load_mnist  # noqa: E402
from pyro_dirmag.models import ARCHITECTURES  # noqa: E402
from pyro_dirmag.nn import noisy_mlp  # noqa: E402

THESIS_TABLE1 = {
    1000: {
        "none": 0.904,
        "gauss": 0.931,
        "rot_beta": 0.928,
        "rot_normal": 0.920,
        "rot_magn": 0.930,
    },
    5000: {
        "none": 0.958,
        "gauss": 0.971,
        "rot_beta": 0.968,
        "rot_normal": 0.966,
        "rot_magn": 0.967,
    },
}

ROTATION_GRID = (0.05, 0.2)
METHODS = {
    # name: (label, alpha grid, alpha -> noisy_mlp keyword arguments)
    "none": ("No reg", (None,), lambda a: {}),
    "gauss": ("Gauss inp", (0.1, 0.5), lambda a: dict(noise="gaussian", alpha=a)),
    "rot_beta": ("Rot sB (X)", ROTATION_GRID, lambda a: dict(noise="rotation_beta", alpha=a)),
    "rot_normal": ("Rot N (X)", ROTATION_GRID, lambda a: dict(noise="rotation_normal", alpha=a)),
    "rot_magn": (
        "Rot N, Magn N (X)",
        ROTATION_GRID,
        lambda a: dict(noise="rotation_normal", alpha=a, magnitude="normal", magnitude_alpha=a),
    ),
}

STEP_COST_CONFIGS = {
    "none": {},
    "gaussian dropout (act)": dict(noise="gaussian", alpha=0.3),
    "projected (act)": dict(noise="projected", alpha=0.01),
    "tangent (act)": dict(noise="tangent", alpha=0.01),
    "rotation_normal (act)": dict(noise="rotation_normal", alpha=0.1),
    "rotation_beta (act)": dict(noise="rotation_beta", alpha=0.1),
    "magnitude normal": dict(magnitude="normal", magnitude_alpha=0.1),
    "magnitude gamma": dict(magnitude="gamma", magnitude_alpha=0.1),
    "rot_normal + magn normal (act)": dict(
        noise="rotation_normal", alpha=0.1, magnitude="normal", magnitude_alpha=0.1
    ),
    "gaussian (weight, local reparam)": dict(noise="gaussian", alpha=0.3, on="weight"),
    "rotation_normal (weight, per example)": dict(noise="rotation_normal", alpha=0.1, on="weight"),
    "rotation_beta (weight, per example)": dict(noise="rotation_beta", alpha=0.1, on="weight"),
    "rotation_normal (weight, per batch)": dict(
        noise="rotation_normal", alpha=0.1, on="weight", per_example=False
    ),
    "projected (weight, per batch)": dict(noise="projected", alpha=0.01, on="weight"),
    "tangent (weight, per example)": dict(noise="tangent", alpha=0.01, on="weight"),
}


def split(images, labels, val_fraction, seed=0):
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    n_val = int(round(val_fraction * len(labels)))
    val, tr = order[:n_val], order[n_val:]
    return (images[tr], labels[tr]), (images[val], labels[val])


def run_table(args):
    test_images, test_labels = load_mnist(train=False)
    rows = {}
    for size, epochs in zip(args.sizes, args.epochs, strict=True):
        images, labels = load_mnist(train=True, subset=size, seed=args.seed)
        (x_tr, y_tr), (x_val, y_val) = split(images, labels, args.val_fraction, args.seed)
        print(
            f"\n== train-set size {size}: {len(y_tr)} train / {len(y_val)} validation, "
            f"{epochs} epochs ==",
            flush=True,
        )
        rows[size] = {}
        for name, (label, grid, kwargs_of) in METHODS.items():
            best = None
            for alpha in grid:
                torch.manual_seed(args.seed)
                model = noisy_mlp(784, args.hidden, 10, **kwargs_of(alpha))
                start = time.perf_counter()
                loss = train(
                    model,
                    x_tr,
                    y_tr,
                    epochs=epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    seed=args.seed,
                )
                fit_s = time.perf_counter() - start
                mode = "mean" if name == "none" else "ensemble"
                val = evaluate(model, x_val, y_val, num_samples=args.num_samples, modes=(mode,))
                print(
                    f"  {label:>18} alpha={alpha!s:>5}  train loss {loss:.4f}  "
                    f"val {mode} {val[mode]:.4f}  ({fit_s:.0f} s)",
                    flush=True,
                )
                if best is None or val[mode] > best[0]:
                    best = (val[mode], alpha, model)
            _, alpha, model = best
            if name == "none":
                acc = evaluate(model, test_images, test_labels, modes=("mean",))
                acc["sample"] = acc["ensemble"] = acc["mean"]
            else:
                acc = evaluate(model, test_images, test_labels, num_samples=args.num_samples)
            rows[size][name] = (alpha, acc)
            print(
                f"  -> {label}: alpha={alpha}  test mean {acc['mean']:.4f}  "
                f"sample {acc['sample']:.4f}  ensemble {acc['ensemble']:.4f}",
                flush=True,
            )
    return rows


def print_table(rows, args):
    print(
        f"\nTable 1 (signal rotation, ensemble test accuracy, S={args.num_samples}); "
        "thesis value in brackets (200 epochs)"
    )
    header = f"{'size':>6} " + " ".join(f"{METHODS[m][0]:>20}" for m in METHODS)
    print(header)
    for size, row in rows.items():
        cells = []
        for name in METHODS:
            alpha, acc = row[name]
            thesis = THESIS_TABLE1.get(size, {}).get(name)
            ref = f"[{thesis:.3f}]" if thesis is not None else ""
            cells.append(f"{acc['ensemble']:.3f} {ref:>7}".rjust(20))
        print(f"{size:>6} " + " ".join(cells))
        print(f"{'alpha':>6} " + " ".join(f"{row[m][0]!s:>20}" for m in METHODS))
        det = " ".join(f"{row[m][1]['mean']:>20.3f}" for m in METHODS)
        print(f"{'mean':>6} " + det)


def run_step_cost(args, rounds=5, steps=4):
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 784, generator=generator)
    y = torch.randint(0, 10, (args.batch_size,), generator=generator)
    setups = {}
    for name, kwargs in STEP_COST_CONFIGS.items():
        torch.manual_seed(args.seed)
        model = noisy_mlp(784, args.hidden, 10, **kwargs)
        setups[name] = (model, torch.optim.Adam(model.parameters(), lr=args.lr))

    def step(model, optimizer):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    best = {name: float("inf") for name in setups}
    for _ in range(rounds):
        for name, (model, optimizer) in setups.items():
            step(model, optimizer)  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                step(model, optimizer)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    base = best["none"]
    print(
        f"\nTraining-step cost (batch {args.batch_size}, FC 784-{'-'.join(map(str, args.hidden))}"
        f"-10, {torch.get_num_threads()} threads; best of {rounds} rounds x {steps} steps)"
    )
    print(f"{'noise':>40} {'ms/step':>9} {'ratio':>7}")
    for name, sec in best.items():
        print(f"{name:>40} {1000 * sec:9.1f} {sec / base:7.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=[20, 6], help="epochs per train-set size"
    )
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(ARCHITECTURES["fc1024"]),
        help="hidden widths (default: those of fc1024)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-samples", type=int, default=5, help="ensemble size S")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-step-cost", action="store_true")
    args = parser.parse_args(argv)
    if len(args.epochs) != len(args.sizes):
        raise ValueError("give one --epochs value per --sizes value")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if not args.skip_step_cost:
        run_step_cost(args)
    if not args.skip_table:
        rows = run_table(args)
        print_table(rows, args)
    print(f"\nwall time {time.perf_counter() - start:.0f} s; command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
