"""
One row of the results table: train a network on full MNIST with the library's
training recipe, evaluate it on the test set, choose per-layer pruning thresholds on
a held-out validation split, prune, and write everything to ``OUT/result.json``.

    python benchmarks/mnist_recipe.py --model lenet300 --method dirmag-reverse \\
        --epochs 50 --out runs/lenet300-dirmag-reverse

Methods: ``dirmag`` (output-unit groups), ``dirmag-reverse`` (input-feature groups, the
thesis's "FC reverse"), ``gaussian-dropout`` (non-variational, on the activations) and
``none`` (plain weight-normalized net). Every method trains with Adam and the same
flat-then-linear learning-rate schedule. Recipe choices can be switched off one at a
time for the ablation table (``--clipped-adam``, ``--no-warmup``, ...).
"""

import argparse
import json
import os
import sys
import time

import pyro
import torch

from pyro_dirmag.data import load_dataset, take_subset, validation_split
from pyro_dirmag.infer import (
    Recipe,
    choose_thresholds,
    classification_metrics,
    evaluate,
    fit,
    prune,
    train_deterministic,
)
from pyro_dirmag.models import ARCHITECTURES, build
from pyro_dirmag.nn import predict_probs

METHODS = ("dirmag", "dirmag-reverse", "gaussian-dropout", "none")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet300", choices=sorted(ARCHITECTURES))
    p.add_argument("--method", default="dirmag-reverse", choices=METHODS)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--train-size", type=int, default=60000)
    p.add_argument("--val-size", type=int, default=5000, help="held out of the training set")
    p.add_argument("--lr", type=float, default=Recipe.lr)
    p.add_argument("--noise-lr", type=float, default=Recipe.noise_lr)
    p.add_argument("--init-log-alpha", type=float, default=Recipe.init_log_alpha)
    p.add_argument("--no-warmup", action="store_true", help="full ELBO from the first step")
    p.add_argument("--kl-final-weight", type=float, default=Recipe.kl_final_weight)
    p.add_argument("--clipped-adam", action="store_true", help="pyro's ClippedAdam (ablation)")
    p.add_argument("--flat-fraction", type=float, default=Recipe.flat_fraction)
    p.add_argument("--alpha", type=float, default=0.25, help="Gaussian dropout variance")
    p.add_argument("--phi", default=None, choices=["per_example", "shared"])
    p.add_argument("--angle-prior", default="uniform", choices=["uniform", "hemisphere"])
    p.add_argument("--pretrain-epochs", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--tolerance", type=float, default=0.001)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def split(args):
    """The recipe's data: ``train_size`` images drawn with ``seed``, of which ``val_size``
    (drawn with ``seed + 1``) are held out; the test set."""
    x, y = load_dataset("mnist", train=True)
    x, y = take_subset(x, y, args.train_size, args.seed)
    train, val = validation_split(x, y, args.val_size, args.seed + 1)
    return train, val, load_dataset("mnist", train=False)


def metrics(probs, y):
    return classification_metrics(probs, y)


def train_plain(net, x, y, args, log):
    """Cross-entropy with the recipe's Adam and schedule (non-Bayesian rows, pre-training)."""
    recipe = Recipe(lr=args.lr, flat_fraction=args.flat_fraction)
    train_deterministic(
        net,
        x,
        y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        recipe=recipe,
        callback=lambda epoch, record: log(record),
    )


def prune_results(model, guide, val, test, tolerance, criterion="accuracy", **kwargs):
    """Thresholds chosen on ``val``, and the pruned network's report and test metrics at
    them (``pruned_chosen``, or ``pruned_agreement`` with ``criterion="agreement"``) and
    at log alpha 3 (``pruned_fixed3``)."""
    thresholds, chosen = choose_thresholds(
        model, guide, *val, tolerance=tolerance, criterion=criterion, **kwargs
    )
    chosen_label = "chosen" if criterion == "accuracy" else criterion
    out = {"validation" if criterion == "accuracy" else f"validation_{criterion}": chosen}
    for label, thr in ((chosen_label, thresholds), ("fixed3", 3.0)):
        pruned, report = prune(model, guide, threshold=thr)
        probs = predict_probs(pruned, test[0], "mean", batch_size=1000)
        out[f"pruned_{label}"] = dict(report.as_dict(), test=metrics(probs, test[1]))
        print(report, f"\n  test accuracy {out[f'pruned_{label}']['test']['accuracy']:.4f}")
    return out


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    (x, y), (xv, yv), (xt, yt) = split(args)
    log_path = os.path.join(args.out, "epochs.jsonl")
    log_file = open(log_path, "w")

    def log(record):
        print(json.dumps(record), flush=True)
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    result = {"args": vars(args), "train_images": len(x), "val_images": len(xv)}
    start = time.perf_counter()
    if args.method in ("none", "gaussian-dropout"):
        options = {} if args.method == "none" else {"alpha": args.alpha}
        net = build(args.model, args.method, len(x), **options)[0].net
        train_plain(net, x, y, args, log)
        result["train_seconds"] = time.perf_counter() - start
        if args.method == "none":
            probs = predict_probs(net, xt, "mean", batch_size=1000)
            result["test"] = {"mean": metrics(probs, yt)}
        else:
            result["test"] = {
                "mean": metrics(predict_probs(net, xt, "mean"), yt),
                "sample": metrics(predict_probs(net, xt, "sample"), yt),
                "ensemble": metrics(
                    predict_probs(net, xt, "ensemble", num_samples=args.num_samples), yt
                ),
            }
    else:
        recipe = Recipe(
            lr=args.lr,
            noise_lr=args.noise_lr,
            flat_fraction=args.flat_fraction,
            init_log_alpha=args.init_log_alpha,
            kl_warmup_start=0.0 if args.no_warmup else Recipe.kl_warmup_start,
            kl_warmup_end=0.0 if args.no_warmup else Recipe.kl_warmup_end,
            kl_final_weight=args.kl_final_weight,
            grad_clip=10.0 if args.clipped_adam else None,
        )
        model, guide = build(
            args.model,
            args.method,
            len(x),
            recipe=recipe,
            phi=args.phi,
            angle_prior=args.angle_prior,
        )
        if args.pretrain_epochs:
            from pyro_dirmag.models import deterministic_model
            from pyro_dirmag.nn import load_deterministic_

            plain = deterministic_model(args.model)
            pre = argparse.Namespace(**dict(vars(args), epochs=args.pretrain_epochs))
            train_plain(plain, x, y, pre, lambda r: log(dict(r, phase="pretrain")))
            load_deterministic_(model, plain)
        fit(
            model,
            guide,
            x,
            y,
            epochs=args.epochs,
            batch_size=args.batch_size,
            recipe=recipe,
            callback=lambda e, r: log(r),
        )
        result["train_seconds"] = time.perf_counter() - start
        result["test"] = evaluate(model, guide, xt, yt, num_samples=args.num_samples)
        result.update(prune_results(model, guide, (xv, yv), (xt, yt), args.tolerance))
        torch.save(
            {
                "param_store": pyro.get_param_store().get_state(),
                "model": model.state_dict(),
                "guide": guide.state_dict(),
            },
            os.path.join(args.out, "checkpoint.pt"),
        )
    log_file.close()
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=1, default=float))


if __name__ == "__main__":
    main(sys.argv[1:])
