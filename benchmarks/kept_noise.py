"""
The noise the kept units of finished ``pyro-dirmag`` runs learned: per DirMag layer, the
units the run's pruning keeps (the thresholds in its ``prune.json``) and their median
:math:`\\log\\alpha` and :math:`\\alpha` (the variance of their multiplicative magnitude
noise), to set beside a fixed noise such as Gaussian dropout's ``alpha``.

    python benchmarks/kept_noise.py runs/A runs/B
"""

import argparse
import json
import math
import os

from pyro_dirmag._sites import site_name
from pyro_dirmag.nn.dirmag import dirmag_layers
from pyro_dirmag.run import load_run


def kept_noise(run):
    _, model, guide, _ = load_run(run)
    with open(os.path.join(run, "prune.json")) as f:
        thresholds = json.load(f)["threshold"]
    log_alpha = guide.log_alpha()
    cells = []
    for name, layer in dirmag_layers(model.net):  # names as in prune.json
        la = log_alpha[site_name(layer, "magnitude")]
        threshold = thresholds[name] if isinstance(thresholds, dict) else thresholds
        kept = la[la <= threshold]
        median = kept.median().item()
        cells.append(
            f"{name}: {kept.numel()} kept, median log alpha {median:.2f} "
            f"(alpha {math.exp(median):.3f})"
        )
    return f"{run} | " + " | ".join(cells)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    for run in p.parse_args(argv).runs:
        print(kept_noise(run), flush=True)


if __name__ == "__main__":
    main()
