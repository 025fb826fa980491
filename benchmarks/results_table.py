"""
Prints the results table (docs/RESULTS.md, "All runs") from the ``result.json`` files
that ``benchmarks/mnist_recipe.py`` wrote, or from ``pyro-dirmag`` run folders
(``config.json``, ``metrics.json`` of ``evaluate``, ``prune.json`` of ``prune``; a
``prune-TAG.json`` of ``prune --tag TAG`` adds a row ``NAME-TAG``, a ``retrain[-TAG].json``
of ``retrain [--tag TAG]`` a row ``NAME[-TAG]-retrained``: the retrained network's
metrics, its pruning's units and compression, the training minutes of both):

    python benchmarks/results_table.py runs/lenet300-* runs/lenet500-* runs/lenet5-*
    python benchmarks/results_table.py --agreement runs/...   # reprune.py --criterion agreement
"""

import json
import os
import sys


def _pct(x):
    return f"{100 * x:.2f}"


def _read(run, name):
    with open(os.path.join(run, name)) as f:
        return json.load(f)


def cli_result(run, prune_file="prune.json"):
    """The ``result.json`` fields of a ``pyro-dirmag`` run folder (``train``, then
    ``evaluate`` and, for DirMag methods, ``prune``, or ``prune --tag``'s file)."""
    config, metrics = _read(run, "config.json"), _read(run, "metrics.json")
    with open(os.path.join(run, "metrics.jsonl")) as f:
        seconds = sum(json.loads(line)["seconds"] for line in f if line.strip())
    pre = config.get("pretrain_epochs") or 0  # part of the CLI's --epochs
    args = dict(config, epochs=config["epochs"] - pre)
    r = {"args": args, "test": metrics["test"], "train_seconds": seconds}
    if os.path.exists(os.path.join(run, prune_file)):
        r["pruned_chosen"] = _read(run, prune_file)
    return r


def tags(run):
    """The TAGs of the ``prune-TAG.json`` files in a run folder, sorted."""
    return sorted(
        f[len("prune-") : -len(".json")]
        for f in os.listdir(run)
        if f.startswith("prune-") and f.endswith(".json")
    )


def _line(cells):
    return "| " + " | ".join(cells) + " |"


def row(run, pruning="chosen", tag=None):
    return _line(cells(run, pruning, tag))


def cells(run, pruning="chosen", tag=None):
    """The table cells of one run (or of its ``prune-TAG.json``)."""
    name = os.path.basename(os.path.normpath(run))
    if os.path.exists(os.path.join(run, "result.json")):
        r = _read(run, "result.json")
    elif tag is not None:
        r, name = cli_result(run, f"prune-{tag}.json"), f"{name}-{tag}"
    else:
        r = cli_result(run)
    args, test = r["args"], r["test"]
    acc = {mode: _pct(test[mode]["accuracy"]) if mode in test else "-" for mode in test}
    best = test.get("ensemble", test["mean"])
    out = [
        name,
        args["model"],
        args["method"],
        str(args["epochs"])
        + (f" + {args['pretrain_epochs']} pre" if args.get("pretrain_epochs") else ""),
        acc.get("ensemble", "-"),
        acc.get("mean", "-"),
        acc.get("sample", "-"),
        f"{best['nll']:.4f}",
        f"{best['ece']:.4f}",
    ]
    pruned = r.get(f"pruned_{pruning}")
    if pruned:
        kept = "-".join(str(layer["units_kept"]) for layer in pruned["layers"])
        compression = f"x{pruned['compression']:.2f}"
        # compute, where it differs from storage: weights applied at several positions
        # (conv layers; prune.json files from before multiply-accumulates have none)
        if pruned.get("macs_total", 0) > pruned["params_total"]:
            compression += f", x{pruned['mac_reduction']:.2f} MACs"
        out += [kept, compression, _pct(pruned["test"]["accuracy"])]
    else:
        out += ["-", "-", "-"]
    out.append(f"{r['train_seconds'] / 60:.0f}")
    return out


def retrained_row(run, tag=None):
    """The row of ``retrain[-TAG].json``: the pruned architecture retrained with noise."""
    suffix = f"-{tag}" if tag else ""
    retrain = _read(run, f"retrain{suffix}.json")
    r = cli_result(run, retrain["pruning"])
    row_cells = cells(run, tag=tag)
    test = retrain["test"]
    row_cells[0] = f"{os.path.basename(os.path.normpath(run))}{suffix}-retrained"
    row_cells[2] += f", retrained ({retrain['noise']} {retrain['alpha']:g})"
    row_cells[3] += f" + {retrain['epochs']} retrain"
    row_cells[4:9] = [
        _pct(test["ensemble"]["accuracy"]),
        _pct(test["mean"]["accuracy"]),
        _pct(test["sample"]["accuracy"]),
        f"{test['ensemble']['nll']:.4f}",
        f"{test['ensemble']['ece']:.4f}",
    ]
    row_cells[11] = _pct(test["mean"]["accuracy"])
    row_cells[12] = f"{(r['train_seconds'] + retrain['train_seconds']) / 60:.0f}"
    return _line(row_cells)


def retrain_tags(run):
    """The TAGs of a run folder's ``retrain[-TAG].json`` files (``None``: untagged)."""
    return [
        None if f == "retrain.json" else f[len("retrain-") : -len(".json")]
        for f in sorted(os.listdir(run))
        if f.startswith("retrain") and f.endswith(".json")
    ]


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
        if any(os.path.exists(os.path.join(run, f)) for f in ("result.json", "metrics.json")):
            print(row(run, pruning))
        if os.path.exists(os.path.join(run, "metrics.json")):
            for tag in tags(run):
                print(row(run, pruning, tag))
            for tag in retrain_tags(run):
                print(retrained_row(run, tag))


if __name__ == "__main__":
    main(sys.argv[1:])
