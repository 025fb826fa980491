"""
Gaussian dropout trained from scratch on the architecture that a finished ``pyro-dirmag``
run's pruning kept, beside the same training on the run's full architecture: how much
accuracy the kept units can reach at all (capacity), apart from what the variational
training did with them.

    python benchmarks/retrain_kept.py runs/A [--tag T] --seeds 0 1 2 [--epochs 50] [--kept-only]

The kept architecture is the pruned network of the run's ``prune[-TAG].json``
thresholds, with every ``Linear`` / ``Conv2d`` replaced by a freshly initialized
weight-normalized layer with Gaussian dropout (:func:`~pyro_dirmag.nn.to_noisy`, ``alpha``
0.25, as ``pyro-dirmag train --method gaussian-dropout``; ``pyro-dirmag retrain`` does
the same for one seed and writes the network); the full architecture is that method's
network. Both train on the run's own training split with the recipe's Adam and schedule
(:func:`~pyro_dirmag.run.train_like_run`, cross-entropy, as ``pyro-dirmag retrain``) for
``--epochs``, and are scored on the test set: mean network and an ensemble of 20 noise draws.
"""

import argparse

import torch

from pyro_dirmag.infer.metrics import accuracy
from pyro_dirmag.models import build
from pyro_dirmag.nn import predict_probs, to_noisy
from pyro_dirmag.run import load_pruning, load_splits, train_like_run


def scores(net, x, y):
    return {
        mode: 100 * accuracy(predict_probs(net, x, mode, num_samples=20, batch_size=1000), y)
        for mode in ("mean", "ensemble")
    }


def retrain(run, tag, seeds, epochs, alpha, kept_only=False):
    config, kept, report, _ = load_pruning(run, tag)
    data = load_splits(config)
    xt, yt = data["test"]
    print(f"{run}: kept x{report.compression:.2f} ({report.params_kept} parameters)", flush=True)
    for seed in seeds:
        row = {}
        for which in ("kept",) if kept_only else ("kept", "full"):
            torch.manual_seed(seed)
            if which == "kept":
                net = to_noisy(kept, noise="gaussian", alpha=alpha)
            else:
                num_data = len(data["train"][1])
                net = build(config["model"], "gaussian-dropout", num_data, alpha=alpha)[0].net
            train_like_run(net, config, data, epochs=epochs, seed=seed)
            row[which] = scores(net, xt, yt)
        print(
            f"  seed {seed}: "
            + " | ".join(
                f"{which} mean {acc['mean']:.2f} ensemble {acc['ensemble']:.2f}"
                for which, acc in row.items()
            ),
            flush=True,
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--tag", help="use prune-TAG.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--kept-only", action="store_true", help="skip the full architecture")
    p.add_argument("--threads", type=int, default=1)
    opts = p.parse_args(argv)
    torch.set_num_threads(opts.threads)
    retrain(opts.run, opts.tag, opts.seeds, opts.epochs, opts.alpha, opts.kept_only)


if __name__ == "__main__":
    main()
