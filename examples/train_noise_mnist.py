"""Train a noise-regularized FC network on an MNIST training subset (thesis section 5.1).

The network is weight-normalized (FC 1024-1024-2048 by default) with one noise in
every layer; after training it reports the thesis's three test accuracies:
mean (noise off, the thesis's "deterministic network"), one random sample, and the
ensemble of ``S`` samples.
Training follows the thesis: Adam, the learning rate constant for the first half
of the epochs and then decreased linearly to zero.

Examples::

    # signal rotation with a stretched-Beta angle plus Gaussian magnitude noise (table 1)
    python examples/train_noise_mnist.py --train-size 1000 --noise rotation_beta \
        --alpha 0.1 --magnitude normal --magnitude-alpha 0.1 --on activation
    # Gaussian dropout on the inputs of every layer (the baseline)
    python examples/train_noise_mnist.py --train-size 5000 --noise gaussian --alpha 0.5
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F

from pyro_dirmag.data import load_mnist
from pyro_dirmag.models import ARCHITECTURES
from pyro_dirmag.nn import (
    EVAL_MODES,
    MAGNITUDE_NOISES,
    NOISE_TARGETS,
    NOISES,
    noisy_mlp,
    predict_probs,
)


def train(model, images, labels, *, epochs, batch_size=128, lr=1e-3, seed=0, log_every=0):
    """Minimize the cross-entropy with Adam; the learning rate is constant for the first
    half of the epochs and decreases linearly to zero over the second half (thesis 5).

    :returns: the mean training loss of the last epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    total, decay_start = epochs * steps_per_epoch, (epochs // 2) * steps_per_epoch

    def factor(step):
        if step < decay_start:
            return 1.0
        return max(0.0, (total - step) / (total - decay_start))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        running = 0.0
        for index in order.split(batch_size):
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(index)
        running /= len(labels)
        if log_every and (epoch + 1) % log_every == 0:
            print(f"epoch {epoch + 1:4d}  train loss {running:.4f}", flush=True)
    return running


def evaluate(model, images, labels, *, num_samples=30, batch_size=2000, modes=None):
    """Accuracy in each of the thesis's evaluation modes.

    :returns: ``{mode: accuracy}`` for ``modes`` (default: :data:`~pyro_dirmag.nn.EVAL_MODES`,
        i.e. mean, sample, ensemble).
    """
    modes = modes or EVAL_MODES
    result = {}
    for mode in modes:
        probs = predict_probs(model, images, mode, num_samples, batch_size=batch_size)
        result[mode] = (probs.argmax(-1) == labels).float().mean().item()
    return result


def noise_kwargs(args):
    """The ``noisy_mlp`` noise arguments from parsed command-line arguments."""
    return dict(
        noise=args.noise,
        alpha=args.alpha,
        magnitude=args.magnitude,
        magnitude_alpha=args.magnitude_alpha,
        on=args.on,
        per_example=not args.shared_weight_noise,
    )


def make_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=1000, help="MNIST training subset")
    parser.add_argument("--test-size", type=int, default=None, help="test subset (all 10,000)")
    parser.add_argument("--noise", choices=NOISES, default=None)
    parser.add_argument("--alpha", type=float, default=None, help="strength of --noise")
    parser.add_argument("--magnitude", choices=MAGNITUDE_NOISES, default=None)
    parser.add_argument("--magnitude-alpha", type=float, default=None)
    parser.add_argument("--on", choices=NOISE_TARGETS, default="activation")
    parser.add_argument(
        "--shared-weight-noise",
        action="store_true",
        help="one weight-noise draw per mini-batch (thesis table 2) instead of per example",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(ARCHITECTURES["fc1024"]),
        help="hidden widths (default: those of fc1024)",
    )
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-samples", type=int, default=30, help="ensemble size S")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10, help="epochs between log lines")
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw")
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    images, labels = load_mnist(train=True, subset=args.train_size, root=args.data_root)
    test_images, test_labels = load_mnist(train=False, subset=args.test_size, root=args.data_root)
    model = noisy_mlp(784, args.hidden, 10, **noise_kwargs(args))
    print(model)
    start = time.perf_counter()
    train(
        model,
        images,
        labels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        log_every=args.log_every,
    )
    elapsed = time.perf_counter() - start
    acc = evaluate(model, test_images, test_labels, num_samples=args.num_samples)
    print(f"trained {args.epochs} epochs on {args.train_size} images in {elapsed:.1f} s")
    print(
        f"test accuracy: mean {acc['mean']:.4f}  "
        f"one sample {acc['sample']:.4f}  ensemble(S={args.num_samples}) {acc['ensemble']:.4f}"
    )
    return acc


if __name__ == "__main__":
    main()
