"""
Prints the results table (README, "Results on full MNIST") from the ``result.json`` files
that ``benchmarks/mnist_recipe.py`` wrote:

    python benchmarks/results_table.py runs/lenet300-* runs/lenet500-* runs/lenet5-*
    python benchmarks/results_table.py --agreement runs/...   # reprune.py --criterion agreement
"""

import json
import os
import sys


def _pct(x):
    return f"{100 * x:.2f}"


def row(run, pruning="chosen"):
    with open(os.path.join(run, "result.json")) as f:
        r = json.load(f)
    args, test = r["args"], r["test"]
    acc = {mode: _pct(test[mode]["accuracy"]) if mode in test else "-" for mode in test}
    best = test.get("ensemble", test["mean"])
    cells = [
        os.path.basename(os.path.normpath(run)),
        args["model"],
        args["method"],
        str(args["epochs"]),
        acc.get("ensemble", "-"),
        acc.get("mean", "-"),
        acc.get("sample", "-"),
        f"{best['nll']:.4f}",
        f"{best['ece']:.4f}",
    ]
    pruned = r.get(f"pruned_{pruning}")
    if pruned:
        kept = "-".join(str(layer["units_kept"]) for layer in pruned["layers"])
        cells += [kept, f"x{pruned['compression']:.2f}", _pct(pruned["test"]["accuracy"])]
    else:
        cells += ["-", "-", "-"]
    cells.append(f"{r['train_seconds'] / 60:.0f}")
    return "| " + " | ".join(cells) + " |"


def main(argv):
    pruning = "chosen"
    if argv[:1] == ["--agreement"]:  # thresholds of reprune.py --criterion agreement
        pruning, argv = "agreement", argv[1:]
    print(
        "| run | net | method | epochs | ensemble | mean | one sample | NLL | ECE | kept | "
        "compression | pruned acc. | train min |"
    )
    print("|" + "---|" * 13)
    for run in argv:
        if os.path.exists(os.path.join(run, "result.json")):
            print(row(run, pruning))


if __name__ == "__main__":
    main(sys.argv[1:])
