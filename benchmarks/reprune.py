"""
Choose the pruning thresholds of a finished ``mnist_recipe.py`` run again (e.g. with
another tolerance or candidate list) from its checkpoint, without retraining; updates
``OUT/result.json`` in place (the previous pruning entries are kept under ``*_before``).

    python benchmarks/reprune.py runs/lenet300-dirmag-reverse --tolerance 0.001
    python benchmarks/reprune.py runs/lenet300-dirmag-reverse --criterion agreement \
        --tolerance 0.002
"""

import argparse
import json
import os
import sys

import pyro
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mnist_recipe  # noqa: E402

from pyro_dirmag.infer import Recipe  # noqa: E402
from pyro_dirmag.models import dirmag_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--tolerance", type=float, default=None)
    p.add_argument(
        "--criterion",
        choices=("accuracy", "agreement"),
        default="accuracy",
        help="agreement: bound the fraction of validation predictions that change; its "
        "results go to pruned_agreement, next to the accuracy criterion's pruned_chosen",
    )
    p.add_argument("--step", type=float, default=1.0, help="spacing of the candidates -4..8")
    p.add_argument("--label", default=None, help="store under pruned_LABEL instead")
    opts = p.parse_args(argv)
    with open(os.path.join(opts.run, "result.json")) as f:
        result = json.load(f)
    args = argparse.Namespace(**result["args"])
    if opts.tolerance is not None:
        args.tolerance = opts.tolerance
    (x, y), (xv, yv), (xt, yt) = mnist_recipe.split(args)
    if args.model == "lenet5":
        x, xv, xt = (t.reshape(-1, 1, 28, 28) for t in (x, xv, xt))
    reverse = args.method == "dirmag-reverse"
    phi = args.phi or ("shared" if reverse else "per_example")
    pyro.clear_param_store()
    angle_prior = getattr(args, "angle_prior", "uniform")
    model = dirmag_model(args.model, len(x), reverse=reverse, phi=phi, angle_prior=angle_prior)
    guide = Recipe(init_log_alpha=args.init_log_alpha).guide(model)
    with torch.no_grad():
        guide(x[:2], y[:2])
    state = torch.load(os.path.join(opts.run, "checkpoint.pt"), weights_only=False)
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    for key, value in mnist_recipe.prune_results(
        model,
        guide,
        (xv, yv),
        (xt, yt),
        args.tolerance,
        opts.criterion,
        candidates=[float(c) for c in torch.arange(-4.0, 8.0 + 1e-9, opts.step)],
    ).items():
        if opts.label is not None:
            key = key.replace("chosen", opts.label).replace("agreement", opts.label)
            key = key if opts.label in key else f"{key}_{opts.label}"
        if key.startswith("pruned_") and key in result:
            result[f"{key}_before"] = result[key]
        result[key] = value
    result["args"]["agreement_tolerance" if opts.criterion == "agreement" else "tolerance"] = (
        args.tolerance
    )
    with open(os.path.join(opts.run, "result.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)


if __name__ == "__main__":
    main(sys.argv[1:])
