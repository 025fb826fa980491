"""
Train a DirMag Bayesian network on MNIST and report ensemble, single-sample and
mean-network test accuracy, negative log-likelihood and calibration, then prune it.

Example (the default: LeNet-300-100 on 10,000 training images, about a minute or two
on a laptop CPU)::

    python examples/train_dirmag_mnist.py
    python examples/train_dirmag_mnist.py --model lenet5 --subset 60000 --time-budget 900
    python examples/train_dirmag_mnist.py --save runs/lenet300.pt  # never overwrites

MNIST is read from local IDX files (see :func:`pyro_dirmag.data.load_mnist`).
"""

import argparse
import math
import os
import sys
import time

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import ClippedAdam

import pyro_dirmag
from pyro_dirmag.data import load_mnist
from pyro_dirmag.infer import (
    DirMagELBO,
    DirMagGuide,
    FiniteSVI,
    accuracy,
    expected_calibration_error,
    negative_log_likelihood,
    predict,
    prune,
)
from pyro_dirmag.models import ARCHITECTURES, dirmag_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet300", choices=sorted(ARCHITECTURES))
    parser.add_argument("--subset", type=int, default=10000, help="training images (<= 60000)")
    parser.add_argument("--test-subset", type=int, default=None, help="test images (all 10000)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--time-budget", type=float, default=None, help="stop training after this many seconds"
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--final-lr-factor",
        type=float,
        default=0.01,
        help="the learning rate decays geometrically to lr * this over the planned epochs",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=20, help="networks in the ensemble")
    parser.add_argument("--prune-threshold", type=float, default=3.0)
    parser.add_argument("--phi", default="per_example", choices=["per_example", "shared"])
    parser.add_argument("--reverse", action="store_true", help="normalize dense layers over inputs")
    parser.add_argument("--no-magnitude-noise", action="store_true")
    parser.add_argument("--no-direction-noise", action="store_true")
    parser.add_argument(
        "--elbo",
        default="dirmag",
        choices=["dirmag", "meanfield", "trace"],
        help="DirMagELBO (TraceMeanField_ELBO without unused densities), "
        "TraceMeanField_ELBO or Trace_ELBO",
    )
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--save", default=None, help="write a checkpoint here")
    parser.add_argument("--overwrite", action="store_true", help="allow --save to replace a file")
    args = parser.parse_args(argv)
    for name in ("subset", "epochs", "batch_size", "num_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.lr > 0 or not 0 < args.final_lr_factor <= 1:
        parser.error("--lr must be > 0 and --final-lr-factor in (0, 1]")
    if args.save and os.path.exists(args.save) and not args.overwrite:
        parser.error(f"{args.save} exists; pass --overwrite to replace it")
    if args.reverse and args.phi == "per_example":
        args.phi = "shared"  # the only form available with input normalization
    return args


def evaluate(model, guide, x, y, num_samples):
    rows = {}
    for mode in ("ensemble", "sample", "mean"):
        start = time.perf_counter()
        probs = predict(model, guide, x, mode=mode, num_samples=num_samples)
        rows[mode] = (
            accuracy(probs, y),
            negative_log_likelihood(probs, y),
            expected_calibration_error(probs, y),
            time.perf_counter() - start,
        )
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    x, y = load_mnist(train=True, subset=args.subset, root=args.data_root, seed=args.seed)
    xt, yt = load_mnist(train=False, subset=args.test_subset, root=args.data_root, seed=args.seed)
    model = dirmag_model(
        args.model,
        len(x),
        magnitude_noise=not args.no_magnitude_noise,
        direction_noise=not args.no_direction_noise,
        phi=args.phi,
        reverse=args.reverse,
    )
    guide = DirMagGuide(model)
    steps_per_epoch = math.ceil(len(x) / args.batch_size)
    lrd = args.final_lr_factor ** (1.0 / (args.epochs * steps_per_epoch))
    elbo = {"dirmag": DirMagELBO, "meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}[
        args.elbo
    ]()
    svi = FiniteSVI(model, guide, ClippedAdam({"lr": args.lr, "lrd": lrd}), elbo)
    print(
        f"training {args.model} on {len(x)} MNIST images ({args.epochs} epochs of "
        f"{steps_per_epoch} steps, batch {args.batch_size}), testing on {len(xt)}",
        flush=True,
    )
    start = time.perf_counter()
    out_of_time = False
    epoch = 0
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(x))
        total, steps = 0.0, 0
        for i in range(0, len(x), args.batch_size):
            idx = perm[i : i + args.batch_size]
            total += svi.step(x[idx], y[idx])
            steps += 1
            if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
                out_of_time = True
                break
        elapsed = time.perf_counter() - start
        print(
            f"epoch {epoch:3d}  -ELBO per example {total / steps / len(x):8.4f}  "
            f"({elapsed:6.1f} s, {1e3 * elapsed / svi.num_steps:5.1f} ms/step)",
            flush=True,
        )
        if out_of_time:
            print(f"time budget of {args.time_budget:g} s reached during epoch {epoch}")
            break
    train_time = time.perf_counter() - start
    print(f"\ntest set ({len(xt)} images)      accuracy      NLL      ECE    time")
    rows = evaluate(model, guide, xt, yt, args.num_samples)
    labels = {
        "ensemble": f"ensemble ({args.num_samples} nets)",
        "sample": "one sampled network",
        "mean": "mean network",
    }
    for mode, (acc, nll, ece, sec) in rows.items():
        print(f"  {labels[mode]:<24} {100 * acc:8.2f}%  {nll:7.4f}  {ece:7.4f}  {sec:5.1f} s")
    pruned, report = prune(model, guide, threshold=args.prune_threshold)
    with torch.no_grad():
        logits = torch.cat([pruned(c) for c in xt.split(1000)])
    print()
    print(report)
    print(f"  pruned network test accuracy {100 * accuracy(logits.softmax(-1), yt):.2f}%")
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        # model and guide state dicts (pyro_dirmag.load restores them); the param
        # store's state would not restore the model's weights
        pyro_dirmag.save(
            args.save,
            model,
            guide,
            extra={
                "args": vars(args),
                "epochs": epoch,
                "train_seconds": train_time,
                "pruned_state_dict": pruned.state_dict(),
                "metrics": rows,
            },
        )
        print(f"checkpoint written to {args.save}")
    return rows, report


if __name__ == "__main__":
    main(sys.argv[1:])
