"""
The library API end to end on MNIST, in one short script: a DirMag LeNet trained with
the training recipe, evaluated three ways, pruned on held-out data, saved and reloaded.
(The command line ``pyro-dirmag`` is the full tool: checkpoints, resume, logs, plots.)

    python examples/train_dirmag_mnist.py --train-size 10000 --epochs 5
    python examples/train_dirmag_mnist.py --model lenet5 --save runs/lenet5.pt
"""

import argparse
import os

import pyro
import torch

import pyro_dirmag
from pyro_dirmag.data import load_mnist, validation_split
from pyro_dirmag.infer import Recipe, accuracy, choose_thresholds, fit, predict, prune
from pyro_dirmag.models import ARCHITECTURES, dirmag_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet300", choices=sorted(ARCHITECTURES))
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="checkpoint path (never overwritten)")
    args = p.parse_args(argv)
    if args.save and os.path.exists(args.save):
        p.error(f"{args.save} exists; choose another path")
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()

    x, y = load_mnist(train=True, subset=args.train_size, seed=args.seed)
    (x, y), (x_val, y_val) = validation_split(x, y, len(x) // 10, seed=args.seed + 1)
    x_test, y_test = load_mnist(train=False, subset=args.test_size, seed=args.seed)

    # input-feature groups ("FC reverse") prune pixels and hidden units of dense nets
    reverse = args.model != "lenet5"
    model = dirmag_model(args.model, len(x), reverse=reverse)  # reverse layers share phi
    recipe = Recipe()
    guide = recipe.guide(model)
    fit(
        model,
        guide,
        x,
        y,
        epochs=args.epochs,
        recipe=recipe,
        callback=lambda epoch, r: print(f"epoch {epoch}: loss {r['loss']:.4f}", flush=True),
    )

    for mode in ("mean", "sample", "ensemble"):
        probs = predict(model, guide, x_test, mode=mode, num_samples=20)
        print(f"{mode:>8} network(s): test accuracy {100 * accuracy(probs, y_test):.2f} %")
    thresholds, _ = choose_thresholds(model, guide, x_val, y_val)
    pruned, report = prune(model, guide, threshold=thresholds)
    print(report)
    with torch.no_grad():
        print(f"pruned: test accuracy {100 * accuracy(pruned(x_test).softmax(-1), y_test):.2f} %")
    if args.save:
        pyro_dirmag.save(args.save, model, guide)
        print(f"saved to {args.save}; restore with pyro_dirmag.load(path, model, guide)")
    return model, guide, report


if __name__ == "__main__":
    main()
