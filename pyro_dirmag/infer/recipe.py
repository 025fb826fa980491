r"""
The training recipe of DirMag models: optimizer, schedules, KL warm-up, and the
choice of pruning thresholds.

The ELBO of a DirMag model is summed over the :math:`N` training examples
(the likelihood of a mini-batch of :math:`M` weighs :math:`N/M`), so its gradients
are :math:`O(N)`. Every choice below was ablated on full MNIST (docs/RESULTS.md,
"Ablation of the recipe"):

* **Optimizer.** :class:`torch.optim.Adam`, one optimizer over all parameters of the
  model and the guide, in two groups: the noise parameters of
  :class:`~pyro_dirmag.infer.DirMagGuide` (:math:`\log\lambda`, :math:`\mu`,
  :math:`\sigma`) at ``noise_lr``, everything else (:math:`v`, biases, :math:`m`) at
  ``lr``. Pyro's :class:`~pyro.optim.ClippedAdam` clamps every gradient element to
  :math:`\pm 10`; with :math:`O(N)` gradients most elements are clamped and Adam sees
  signs. The noise parameters' gradients are almost all KL (:math:`O(1)`), so at the
  weights' rate they hardly move in a run; they get a higher one.
* **Learning-rate schedule** :class:`FlatThenLinear`: constant, then linear to 0 over
  the last ``1 - flat_fraction`` of the steps.
* **KL warm-up** :class:`LinearWarmup` with :func:`~pyro_dirmag.infer.kl_weight`: the KL terms are
  multiplied by :math:`\beta` rising from 0 to 1 early in the run (the network first
  fits the data with small noise, then the prior prunes), the full ELBO afterwards.
* **Initial noise** :math:`\log\alpha = -2` (``init_log_alpha``): noise large enough
  for its scale to be learned within the run.
* **Pre-training** (:func:`~pyro_dirmag.infer.pretrain_`): the first epochs of the
  budget train the deterministic twin, whose weights initialize the DirMag layers
  (``pyro-dirmag train --pretrain-epochs``, default a tenth of the epochs).
* **Pruning thresholds per layer**, chosen on held-out data by
  :func:`choose_thresholds`.

Example::

    recipe = Recipe()
    guide = recipe.guide(model)
    history = fit(model, guide, x, y, epochs=50, recipe=recipe)

**References:**

[1] C. K. Sønderby, T. Raiko, L. Maaløe, S. K. Sønderby, O. Winther (2016) "Ladder
    Variational Autoencoders" (KL warm-up)

[2] D. Molchanov, A. Ashukha, D. Vetrov (2017) "Variational Dropout Sparsifies Deep
    Neural Networks"
"""

import math
from dataclasses import asdict, dataclass

import torch

from .elbo import DirMagELBO
from .guide import DirMagGuide
from .kl_weight import kl_weight
from .training import check_run_sizes, run_epochs

__all__ = [
    "FlatThenLinear",
    "LinearWarmup",
    "Recipe",
    "choose_thresholds",
    "fit",
    "noise_parameter_names",
    "param_groups",
]


@dataclass(frozen=True)
class FlatThenLinear:
    r"""
    Learning-rate factor of step ``t`` out of ``total_steps``: 1 for the first
    ``flat_fraction`` of the steps, then linear down to ``final_factor`` at the last
    step. A picklable callable for :class:`torch.optim.lr_scheduler.LambdaLR`.
    """

    total_steps: int
    flat_fraction: float = 0.5
    final_factor: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.total_steps, int) and self.total_steps >= 1):
            raise ValueError(f"total_steps must be a positive int, got {self.total_steps!r}")
        if not 0 <= self.flat_fraction <= 1:
            raise ValueError(f"flat_fraction must be in [0, 1], got {self.flat_fraction}")
        if not 0 <= self.final_factor <= 1:
            raise ValueError(f"final_factor must be in [0, 1], got {self.final_factor}")

    def __call__(self, step):
        flat = self.flat_fraction * self.total_steps
        decay = self.total_steps - flat
        if step <= flat or decay <= 0:
            return 1.0
        progress = min((step - flat) / decay, 1.0)
        return 1.0 - (1.0 - self.final_factor) * progress


@dataclass(frozen=True)
class LinearWarmup:
    r"""
    KL weight :math:`\beta` at training progress ``p`` in ``[0, 1]`` (the fraction of
    the run done): 0 before ``start``, linear from 0 to ``final`` between ``start`` and
    ``end``, ``final`` afterwards. ``start = end = 0`` with ``final = 1`` is the plain
    ELBO throughout. A ``final`` weight above 1 still gives a lower bound on the evidence
    (the KL is non-negative), a looser one that prunes harder (thesis section 6).
    """

    start: float = 0.02
    end: float = 0.12
    final: float = 1.0

    def __post_init__(self):
        if not 0 <= self.start <= self.end <= 1:
            raise ValueError(
                f"warm-up needs 0 <= start <= end <= 1, got start={self.start}, end={self.end}"
            )
        if not (math.isfinite(self.final) and self.final > 0):
            raise ValueError(f"Expected parameter final ({self.final}) to be positive")

    def __call__(self, progress):
        if progress >= self.end:
            return self.final
        if progress <= self.start:
            return 0.0
        return self.final * (progress - self.start) / (self.end - self.start)


#: log alpha thresholds tried by :func:`choose_thresholds`: -4 to 8 (log alpha is
#: clipped to [-10, 10]; units kept by a trained model sit near -5 to -7).
THRESHOLD_CANDIDATES = tuple(float(t) for t in range(-4, 9))

_NOISE_CONTAINERS = ("magnitude_log_scale", "angle_loc", "angle_scale")


def noise_parameter_names(guide):
    """Names (in ``guide.named_parameters()``) of the guide's noise parameters:
    :math:`\\log\\lambda`, :math:`\\mu` and :math:`\\sigma` of every DirMag site."""
    return [n for n, _ in guide.named_parameters() if n.split(".", 1)[0] in _NOISE_CONTAINERS]


def param_groups(model, guide, lr, noise_lr):
    """
    Parameter groups for one torch optimizer over ``model`` and ``guide``: the guide's
    noise parameters (:func:`noise_parameter_names`) at ``noise_lr``, all others at
    ``lr``. The guide must have been run once (its parameters are created lazily).

    :rtype: list of dict
    """
    if isinstance(guide, DirMagGuide):
        guide._require_setup()
    noise = set(noise_parameter_names(guide))
    noise_params = [p for n, p in guide.named_parameters() if n in noise]
    seen = {id(p) for p in noise_params}
    other = []
    for p in list(model.parameters()) + list(guide.parameters()):
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            other.append(p)
    groups = [{"params": other, "lr": lr, "name": "weights"}]
    if noise_params:
        groups.append({"params": noise_params, "lr": noise_lr, "name": "noise"})
    return groups


@dataclass(frozen=True)
class Recipe:
    r"""
    The default training recipe (ablated in docs/RESULTS.md).

    :param float lr: Adam learning rate of :math:`v`, biases and :math:`m`.
    :param float noise_lr: Adam learning rate of :math:`\log\lambda, \mu, \sigma`.
    :param float flat_fraction: share of the run at the full learning rate
        (:class:`FlatThenLinear`).
    :param float kl_warmup_start: training progress where the KL weight starts rising.
    :param float kl_warmup_end: training progress where it reaches 1.
    :param float kl_final_weight: the KL weight after the warm-up (1: the ELBO).
    :param float init_log_alpha: initial :math:`\log\alpha` of the magnitudes.
    :param float init_angle_scale: initial :math:`\sigma` of the angles.
    :param float grad_clip: ``None`` (default) for Adam; a number clamps every gradient
        element to ``[-grad_clip, grad_clip]`` before Adam (Pyro's ``ClippedAdam``; an
        ablation: it caps the summed ELBO's :math:`O(N)` gradients).
    """

    lr: float = 3e-3
    noise_lr: float = 1e-2
    flat_fraction: float = 0.5
    kl_warmup_start: float = 0.02
    kl_warmup_end: float = 0.12
    kl_final_weight: float = 1.0
    init_log_alpha: float = -2.0
    init_angle_scale: float = 0.05
    grad_clip: float | None = None

    def __post_init__(self):
        names = ("lr", "noise_lr", "kl_final_weight", "init_angle_scale") + (
            ("grad_clip",) if self.grad_clip is not None else ()
        )
        for name in names:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Expected parameter {name} ({value}) to be positive")
        FlatThenLinear(1, self.flat_fraction)  # validates
        self.kl_schedule()  # validates

    def guide(self, model, **kwargs):
        """A :class:`~pyro_dirmag.infer.DirMagGuide` with the recipe's initial noise."""
        kwargs.setdefault("init_log_alpha", self.init_log_alpha)
        kwargs.setdefault("init_angle_scale", self.init_angle_scale)
        return DirMagGuide(model, **kwargs)

    def kl_schedule(self):
        """The KL weight as a function of training progress (:class:`LinearWarmup`)."""
        return LinearWarmup(self.kl_warmup_start, self.kl_warmup_end, self.kl_final_weight)

    def optimizer(self, model, guide):
        """:class:`torch.optim.Adam` over :func:`param_groups` (with ``grad_clip``,
        Pyro's clipped Adam)."""
        groups = param_groups(model, guide, self.lr, self.noise_lr)
        if self.grad_clip is None:
            return torch.optim.Adam(groups)
        from pyro.optim.clipped_adam import ClippedAdam

        return ClippedAdam(groups, clip_norm=self.grad_clip)

    def lr_scheduler(self, optimizer, total_steps):
        """:class:`~torch.optim.lr_scheduler.LambdaLR` with :class:`FlatThenLinear`."""
        schedule = FlatThenLinear(int(total_steps), self.flat_fraction)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def as_dict(self):
        return asdict(self)


def fit(
    model,
    guide,
    x,
    y,
    *,
    epochs,
    batch_size=100,
    recipe=None,
    elbo=None,
    callback=None,
    generator=None,
):
    r"""
    Trains ``model`` and ``guide`` on ``(x, y)`` with ``recipe`` (a plain loop; the
    command line trains through PyTorch Lightning with the same pieces).

    Every step computes ``elbo.differentiable_loss`` under :func:`kl_weight` with the
    recipe's warm-up weight, refuses a non-finite loss or gradient before updating
    (:class:`~pyro_dirmag.infer.NonFiniteLossError`, parameters untouched), then steps
    Adam and the learning-rate schedule.

    :param model: a model taking ``(x_batch, y_batch)``.
    :param guide: its guide (run once here on the first batch if it is new).
    :param int epochs: passes over the data.
    :param int batch_size: mini-batch size.
    :param Recipe recipe: default :class:`Recipe`.
    :param elbo: default :class:`~pyro_dirmag.infer.DirMagELBO`.
    :param callable callback: called as ``callback(epoch, record)`` after each epoch,
        ``record`` a dict with ``epoch``, ``loss`` (mean loss per example),
        ``kl_weight``, ``lr`` and ``seconds``.
    :param torch.Generator generator: for the mini-batch order.
    :returns: the list of per-epoch records.
    """
    check_run_sizes(x, y, epochs, batch_size)
    recipe = recipe or Recipe()
    elbo = elbo or DirMagELBO()
    with torch.no_grad():
        guide(x[:batch_size], y[:batch_size])
    optimizer = recipe.optimizer(model, guide)
    total = epochs * math.ceil(len(x) / batch_size)
    scheduler = recipe.lr_scheduler(optimizer, total)
    warmup = recipe.kl_schedule()

    def batch_loss(xb, yb, step):
        with kl_weight(weight=warmup(step / total)):
            return elbo.differentiable_loss(model, guide, xb, yb)

    def summary(mean_loss, steps_done):
        return {"loss": mean_loss / len(x), "kl_weight": warmup(steps_done / total)}

    return run_epochs(
        x,
        y,
        batch_loss,
        optimizer,
        scheduler,
        epochs=epochs,
        batch_size=batch_size,
        summary=summary,
        callback=callback,
        generator=generator,
    )


CRITERIA = ("accuracy", "agreement")
#: What :func:`choose_thresholds` removes the most of: weights and biases, or the
#: multiply-accumulates of one forward pass (:class:`~pyro_dirmag.infer.PruneReport`).
OBJECTIVES = ("params", "macs")


@torch.no_grad()
def choose_thresholds(
    model,
    guide,
    x_val,
    y_val,
    candidates=THRESHOLD_CANDIDATES,
    tolerance=0.001,
    criterion="accuracy",
    objective="params",
):
    r"""
    Per-layer :math:`\log\alpha` pruning thresholds chosen on held-out data.

    A greedy search over the per-layer thresholds: starting from nothing pruned, each
    round tries lowering one layer's threshold to its next smaller candidate, for every
    layer, and takes the move that removes the most parameters (``objective="params"``)
    or multiply-accumulates (``objective="macs"``: compute, where a conv filter weighs
    its weights times its output positions) among the allowed ones (ties: the higher
    held-out accuracy); it stops when no move is allowed. Unlike
    choosing layer by layer, the budget goes where it buys the most compression. A move
    is allowed when the pruned mean network

    * ``criterion="accuracy"``: keeps the held-out accuracy within ``tolerance`` of the
      unpruned mean network's;
    * ``criterion="agreement"``: changes the predicted class of at most a ``tolerance``
      fraction of the held-out examples. This bounds the accuracy lost on any data set
      drawn like them, whereas accuracy alone lets changes for the better and for the
      worse cancel on a small validation set and the search overfit it.

    :param torch.Tensor x_val: held-out inputs (never the test set).
    :param torch.Tensor y_val: held-out labels.
    :param candidates: thresholds to try (:data:`THRESHOLD_CANDIDATES`).
    :param float tolerance: accuracy (a fraction, 0.001 = 0.1 point) one may lose, or
        the fraction of predictions that may change.
    :param str criterion: ``"accuracy"`` (default) or ``"agreement"``.
    :param str objective: ``"params"`` (default) or ``"macs"``.
    :returns: ``({layer name: threshold}, {"reference": acc, "pruned": acc,
        "changed": fraction})``; ``inf`` for a layer left unpruned.
    """
    from .prune import prune

    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    cost = {"params": "params_kept", "macs": "macs_kept"}[objective]
    candidates = sorted({float(c) for c in candidates}, reverse=True)
    if not candidates:
        raise ValueError("candidates must not be empty")

    def evaluate(thresholds):
        pruned, report = prune(model, guide, threshold=thresholds)
        pruned.eval()
        predicted = torch.cat([pruned(xb).argmax(-1) for xb in x_val.split(1000)])
        return predicted, report

    reference_pred, report = evaluate(math.inf)
    reference = float((reference_pred == y_val).float().mean())
    names = [r["name"] for r in report.layers]  # prune's names, relative to the network
    chosen = dict.fromkeys(names, math.inf)
    kept = getattr(report, cost)
    current, changed = reference, 0.0
    while True:
        best = None
        for name in names:
            lower = [c for c in candidates if c < chosen[name]]
            if not lower:
                continue
            trial = dict(chosen, **{name: lower[0]})
            predicted, report = evaluate(trial)
            acc = float((predicted == y_val).float().mean())
            change = float((predicted != reference_pred).float().mean())
            if criterion == "accuracy":
                allowed = acc >= reference - tolerance
            else:
                allowed = change <= tolerance
            if allowed:
                key = (kept - getattr(report, cost), acc)
                if best is None or key > best[0]:
                    best = (key, trial, acc, change, getattr(report, cost))
        if best is None:
            break
        _, chosen, current, changed, kept = best
    return chosen, {"reference": reference, "pruned": current, "changed": changed}
