"""
Pictures of a run folder (matplotlib, written as PNG files):

* ``curves.png``: the per-epoch training curves of ``metrics.jsonl`` (loss and its
  ELBO terms, training accuracy, units kept, learning rate and KL weight);
* ``posteriors.png`` (DirMag runs): per layer, the histogram of :math:`\\log\\alpha` and
  of the angle posteriors' means :math:`E[\\epsilon]` and scales :math:`\\sigma` (as the
  thesis's figure 6);
* ``units_kept.png`` (DirMag runs): units kept per layer at the pruning thresholds of
  ``prune.json`` (or :math:`\\log\\alpha \\le 3`);
* ``reliability.png``: the reliability diagram of the test predictions of
  ``reliability.json`` (written by ``pyro-dirmag evaluate``).
"""

import json
import os

__all__ = ["plot_run"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(records, path):
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    panels = [
        ("loss per example", ["loss", "nll", "kl"]),
        ("training accuracy", ["acc"]),
        ("units kept (log alpha <= 3)", ["units_kept"]),
        ("learning rates", ["lr", "lr_noise"]),
        ("KL weight", ["kl_weight"]),
    ]
    panels = [(t, [k for k in keys if any(k in r for r in records)]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            ax.plot(epochs, [r.get(key, float("nan")) for r in records], marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_posteriors(guide, path):
    """Per DirMag layer: histograms of log alpha, angle posterior means and scales."""
    plt = _pyplot()
    log_alpha = guide.log_alpha()
    means = guide.posterior_mean()
    layers = []
    for site in guide.site_names:  # "<layer>.magnitude" and "<layer>.angle"
        layer = site.rsplit(".", 1)[0]
        if layer not in layers:
            layers.append(layer)
    fig, axes = plt.subplots(len(layers), 3, figsize=(11, 2.6 * len(layers)), squeeze=False)
    for row, name in zip(axes, layers, strict=True):
        mag, ang = f"{name}.magnitude", f"{name}.angle"
        if mag in log_alpha:
            row[0].hist(log_alpha[mag].numpy(), bins=40, color="C0")
        row[0].set_title(f"{name}: log alpha")
        if ang in means:
            sigma = guide.posterior(ang).base_dist.scale.detach()
            row[1].hist(means[ang].numpy(), bins=40, color="C1")
            row[2].hist(sigma.numpy(), bins=40, color="C2")
        row[1].set_title(f"{name}: angle posterior mean")
        row[2].set_title(f"{name}: angle posterior scale")
    _save(plt, fig, path)


def plot_units_kept(layers, path):
    plt = _pyplot()
    names = [r["name"] for r in layers]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.2))
    ax.bar(names, [r["units_total"] for r in layers], color="0.8", label="total")
    ax.bar(names, [r["units_kept"] for r in layers], color="C0", label="kept")
    for k, r in enumerate(layers):
        ax.text(
            k, r["units_kept"], f"{r['units_kept']}/{r['units_total']}", ha="center", va="bottom"
        )
    ax.set_ylabel("units")
    ax.set_title("units kept per layer")
    ax.legend()
    _save(plt, fig, path)


def plot_reliability(bins_by_mode, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="calibrated")
    for mode, bins in bins_by_mode.items():
        pts = [
            (c, a)
            for c, a in zip(bins["confidence"], bins["accuracy"], strict=True)
            if c is not None
        ]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability (test set)")
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_run(run_dir, config):
    """
    Writes the pictures of ``run_dir`` that its files allow; returns their paths.

    :raises FileNotFoundError: when the run has no ``metrics.jsonl`` (not trained yet).
    """
    from .models import is_variational
    from .run import load_run

    written = []
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: train it first")
    path = os.path.join(run_dir, "curves.png")
    plot_curves(_read_jsonl(metrics), path)
    written.append(path)
    if is_variational(config["method"]):
        _, model, guide, _ = load_run(run_dir)
        path = os.path.join(run_dir, "posteriors.png")
        plot_posteriors(guide, path)
        written.append(path)
        prune_json = os.path.join(run_dir, "prune.json")
        if os.path.isfile(prune_json):
            layers = _read_json(prune_json)["layers"]
        else:
            from .infer.prune import prune

            layers = prune(model, guide, threshold=3.0)[1].layers
        path = os.path.join(run_dir, "units_kept.png")
        plot_units_kept(layers, path)
        written.append(path)
    reliability = os.path.join(run_dir, "reliability.json")
    if os.path.isfile(reliability):
        bins = _read_json(reliability)["test"]
        path = os.path.join(run_dir, "reliability.png")
        plot_reliability(bins, path)
        written.append(path)
    return written
