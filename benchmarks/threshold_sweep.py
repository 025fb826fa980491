"""
Compression and accuracy change of finished ``pyro-dirmag`` runs pruned at one log alpha
threshold for every layer, for a list of thresholds: where the trained log alphas put
the cliff, with no threshold search (and so no selection on the validation split).

    python benchmarks/threshold_sweep.py runs/A runs/B --thresholds 3 2 1 0 -1 -2

Prints, per run, the mean network's test accuracy and, per threshold, the compression
and the change of validation and test accuracy (points) of the pruned mean network.
"""

import argparse
import math

import torch

from pyro_dirmag.infer.metrics import accuracy as _accuracy
from pyro_dirmag.infer.prune import prune
from pyro_dirmag.nn import predict_probs
from pyro_dirmag.run import load_run, load_splits


def accuracy(net, x, y):
    return _accuracy(predict_probs(net, x, "mean", batch_size=1000), y)


def sweep(run, thresholds):
    config, model, guide, _ = load_run(run)
    data = load_splits(config)
    (xv, yv), (xt, yt) = data["val"], data["test"]
    unpruned, _ = prune(model, guide, threshold=math.inf)
    val0, test0 = accuracy(unpruned, xv, yv), accuracy(unpruned, xt, yt)
    cells = []
    for threshold in thresholds:
        net, report = prune(model, guide, threshold=float(threshold))
        val = 100 * (accuracy(net, xv, yv) - val0) if len(yv) else math.nan
        test = 100 * (accuracy(net, xt, yt) - test0)
        cells.append(f"{threshold:g}: x{report.compression:.2f} val {val:+.2f} test {test:+.2f}")
    return f"{run} (mean network {100 * test0:.2f} %) | " + " | ".join(cells)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--thresholds", type=float, nargs="+", default=[3, 2, 1, 0, -1, -2])
    p.add_argument("--threads", type=int, default=1)
    opts = p.parse_args(argv)
    torch.set_num_threads(opts.threads)
    for run in opts.runs:
        print(sweep(run, opts.thresholds), flush=True)


if __name__ == "__main__":
    main()
