"""
A training run folder: its configuration, data splits, model and checkpoint.

A run folder ``RUN`` written by ``pyro-dirmag train`` holds:

* ``config.json``: the run's settings (:func:`run_config`), the identity of the
  model, the method and the data;
* ``last.ckpt``: the last complete end-of-epoch checkpoint (Lightning's format: the
  model's and the guide's state dicts under ``model.`` and ``guide.`` in
  ``state_dict``, optimizer, scheduler, loop counters, RNG states, ``run_config``);
* ``metrics.csv`` and ``metrics.jsonl``: one row per epoch;
* after ``evaluate``, ``prune``, ``retrain`` and ``plot``: ``metrics.json``,
  ``reliability.json``, ``prune.json``, ``pruned.pt``, ``pruned.pt2``, ``retrain.json``,
  ``retrained.pt``, ``retrained.pt2`` and PNG pictures.

Nothing here needs Lightning: :func:`load_run` rebuilds the model and the guide from
the folder with plain ``load_state_dict`` calls.
"""

import json
import os

import pyro
import torch
from pyro import poutine

from .data import load_dataset, rotate_images, take_subset, validation_split
from .infer.recipe import Recipe

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "IDENTITY_KEYS",
    "RunError",
    "build_from_config",
    "load_checkpoint",
    "load_pruning",
    "load_run",
    "load_splits",
    "read_config",
    "run_config",
    "train_like_run",
]

CONFIG = "config.json"
CHECKPOINT = "last.ckpt"

#: Settings that define what a checkpoint is; a resumed run may not change them.
IDENTITY_KEYS = (
    "model",
    "method",
    "dataset",
    "train_size",
    "val_size",
    "epochs",
    "pretrain_epochs",
    "batch_size",
    "seed",
    "recipe",
    "method_options",
)


class RunError(ValueError):
    """A run folder is missing, incomplete, or does not match what was asked."""


def run_config(
    *,
    model,
    method,
    dataset,
    train_size,
    val_size,
    epochs,
    batch_size,
    seed,
    recipe,
    method_options,
    data_dir=None,
    pretrain_epochs=0,
):
    """The ``config.json`` dict of a run (``recipe`` a :class:`~pyro_dirmag.infer.Recipe`)."""
    return {
        "model": model,
        "method": method,
        "dataset": dataset,
        "train_size": train_size,
        "val_size": val_size,
        "epochs": epochs,
        "pretrain_epochs": pretrain_epochs,
        "batch_size": batch_size,
        "seed": seed,
        "recipe": recipe.as_dict(),
        "method_options": dict(method_options),
        "data_dir": data_dir,
    }


def read_config(run_dir):
    """The ``config.json`` of ``run_dir``; :class:`RunError` when there is none."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        raise RunError(f"no run in {run_dir}: {CONFIG} not found")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not a readable run configuration: {e}") from e


def load_splits(config, *, test=True, rotate=None, download=False):
    """
    The data of a run: ``{"train": (x, y), "val": (x, y)}`` and, with ``test``,
    ``"test"``; with ``rotate`` (degrees) also ``"test_rotated"``.

    The training images are ``train_size`` drawn with ``seed`` from the data set's
    training split, of which ``val_size`` (drawn with ``seed + 1``) are held out for
    validation (never trained on).
    """
    name, root = config["dataset"], config.get("data_dir")
    x, y = load_dataset(name, train=True, root=root, download=download)
    size = config["train_size"] if config["train_size"] is not None else len(y)
    if size > len(y):
        raise RunError(f"--train-size {size} is above the {len(y)} training images of {name}")
    x, y = take_subset(x, y, size, config["seed"])
    val_size = config["val_size"]
    if val_size >= size:
        raise RunError(f"--val-size {val_size} leaves no training image out of {size}")
    train, val = validation_split(x, y, val_size, config["seed"] + 1)
    out = {"train": train, "val": val}
    if test or rotate is not None:
        xt, yt = load_dataset(name, train=False, root=root, download=download)
        out["test"] = (xt, yt)
        if rotate is not None:
            out["test_rotated"] = (rotate_images(xt, rotate, name), yt)
    return out


def build_from_config(config, num_data):
    """``(model, guide)`` of a run's method (:func:`pyro_dirmag.models.build`), built
    with an empty param store; the guide is not run yet."""
    from pyro_dirmag.models import build

    pyro.clear_param_store()
    return build(
        config["model"],
        config["method"],
        num_data,
        recipe=Recipe(**config["recipe"]),
        **config["method_options"],
    )


def num_train(config):
    """Training examples of a run (its ``train_size`` minus the validation split)."""
    return config["train_size"] - config["val_size"]


def load_checkpoint(run_dir):
    """The checkpoint dict of ``run_dir`` (:class:`RunError` when missing or unreadable)."""
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise RunError(f"no checkpoint in {run_dir}: {CHECKPOINT} not found (train it first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling or truncation error
        raise RunError(f"{path} is not a readable checkpoint: {e}") from e


def check_identity(config, checkpoint, where):
    """Refuses a checkpoint trained with other identity settings than ``config``."""
    stored = checkpoint.get("run_config")
    if stored is None:
        raise RunError(f"{where} holds no run_config: not a pyro-dirmag checkpoint")
    for key in IDENTITY_KEYS:
        if stored.get(key) != config.get(key):
            raise RunError(
                f"{where} was trained with {key}={stored.get(key)!r}, not {config.get(key)!r}"
            )


def load_run(run_dir):
    """
    Rebuilds the model and the guide of a run from its last checkpoint.

    :returns: ``(config, model, guide, checkpoint)``, the model and the guide in
        ``eval()`` mode.
    """
    config = read_config(run_dir)
    checkpoint = load_checkpoint(run_dir)
    check_identity(config, checkpoint, os.path.join(run_dir, CHECKPOINT))
    model, guide = build_from_config(config, num_train(config))
    example = torch.zeros(2, 784)
    with torch.no_grad(), poutine.block():
        guide(example, torch.zeros(2, dtype=torch.int64))
    state = checkpoint["state_dict"]
    for prefix, module in (("model.", model), ("guide.", guide)):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(part)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise RunError(f"{run_dir}: the checkpoint does not fit the model: {first}") from e
    model.eval()
    guide.eval()
    return config, model, guide, checkpoint


def load_pruning(run_dir, tag=None):
    """
    The network that a run's pruning kept, rebuilt from the checkpoint with the
    thresholds of its ``prune[-TAG].json`` (:func:`~pyro_dirmag.infer.prune`).

    :returns: ``(config, pruned, report, pruning)``: the run's config, the pruned plain
        network, its :class:`~pyro_dirmag.infer.PruneReport` and the JSON dict.
    :raises RunError: for a run of a method without a posterior, or one not pruned yet.
    """
    from .infer.prune import prune
    from .models import is_variational

    config, model, guide, _ = load_run(run_dir)
    if not is_variational(config["method"]):
        raise RunError(
            f"{run_dir} was trained with --method {config['method']}: nothing was pruned"
        )
    name = f"prune{'-' + tag if tag else ''}.json"
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        flag = f" --tag {tag}" if tag else ""
        raise RunError(f"no {path}: run pyro-dirmag prune {run_dir}{flag} first")
    with open(path) as f:
        pruning = json.load(f)
    pruned, report = prune(model, guide, threshold=pruning["threshold"])
    return config, pruned, report, pruning


def train_like_run(net, config, data, *, epochs, seed, callback=None):
    """
    Trains a plain network ``net`` by cross-entropy on the run's training split with its
    batch size and recipe (:func:`~pyro_dirmag.infer.train_deterministic`: Adam at the
    recipe's rate, its schedule), the mini-batch order drawn with ``seed``.

    :returns: the per-epoch records.
    """
    from .infer.pretrain import train_deterministic

    x, y = data["train"]
    return train_deterministic(
        net,
        x,
        y,
        epochs=epochs,
        batch_size=config["batch_size"],
        recipe=Recipe(**config["recipe"]),
        callback=callback,
        generator=torch.Generator().manual_seed(seed),
    )
