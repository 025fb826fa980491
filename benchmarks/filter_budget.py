"""
The ``pyro-dirmag prune --threshold`` words that keep at most a given number of units in
some layers of a finished run (e.g. at most half of LeNet5's 70 conv filters): one log
alpha threshold shared by those layers, the highest that keeps no more than the budget
(so the units dropped are the ones with the largest log alpha), and the other layers at
the thresholds the run's validation search chose (its ``prune.json``).

    pyro-dirmag prune RUN --tag half \\
        --threshold $(python benchmarks/filter_budget.py RUN --layers 1 4 --max-units 35)

No test data is read: the choice uses the trained log alphas and the validation
pruning only.
"""

import argparse
import json
import os

import torch

from pyro_dirmag._sites import site_name
from pyro_dirmag.nn.dirmag import dirmag_layers
from pyro_dirmag.run import load_run


def budget_threshold(log_alphas, max_units):
    """The highest threshold ``t`` with at most ``max_units`` of ``log_alphas`` ``<= t``
    (a unit is kept at ``log alpha <= t``); ``-inf`` when no unit fits the budget."""
    values = torch.sort(torch.cat([la.flatten() for la in log_alphas])).values
    kept = torch.searchsorted(values, values, right=True)  # units kept at t = each value
    fits = values[kept <= max_units]
    return float(fits.max()) if fits.numel() else float("-inf")


def threshold_words(run, layers, max_units):
    _, model, guide, _ = load_run(run)
    pruning = os.path.join(run, "prune.json")
    if not os.path.isfile(pruning):
        raise SystemExit(f"{run} has no prune.json: run `pyro-dirmag prune {run}` first")
    with open(pruning) as f:
        chosen = {layer["name"]: layer["threshold"] for layer in json.load(f)["layers"]}
    by_name = dict(dirmag_layers(model.net))
    unknown = sorted(set(layers) - set(by_name))
    if unknown:
        raise SystemExit(f"{run} has no DirMag layers {unknown}; it has {sorted(by_name)}")
    log_alpha = guide.log_alpha()
    t = budget_threshold([log_alpha[site_name(by_name[n], "magnitude")] for n in layers], max_units)
    words = []
    for name in by_name:
        value = t if name in layers else chosen[name]
        words.append(f"{name}={float(value)!r}")  # repr: read back exactly
    return words


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--layers", nargs="+", required=True, help="names as in prune.json")
    p.add_argument("--max-units", type=int, required=True)
    args = p.parse_args(argv)
    print(" ".join(threshold_words(args.run, args.layers, args.max_units)))


if __name__ == "__main__":
    main()
