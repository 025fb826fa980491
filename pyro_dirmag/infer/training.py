r"""
SVI that refuses to apply a non-finite step.

:class:`pyro.infer.SVI` applies the optimizer whatever the loss; with a NaN or
infinite loss (or gradient) one step is enough to turn every parameter into NaN,
:class:`~pyro.optim.ClippedAdam` included. :class:`FiniteSVI` checks the loss and
the gradients *before* the update and, when one is not finite, discards the
gradients and raises :class:`NonFiniteLossError` naming the step and the sites or
parameters responsible, so the parameters stay as they were after the last good step.
"""

import contextlib
import math
import time

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

__all__ = ["FiniteSVI", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """A training step produced a non-finite loss or gradient; nothing was updated."""


class FiniteSVI(SVI):
    """
    :class:`pyro.infer.SVI` whose :meth:`step` raises :class:`NonFiniteLossError`
    (naming the step and the offending sites) instead of applying a non-finite update.
    Same arguments as :class:`~pyro.infer.SVI`; :attr:`num_steps` counts successful steps.
    """

    def __init__(self, model, guide, optim, loss, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.num_steps = 0

    def step(self, *args, **kwargs):
        with (
            poutine.trace(param_only=True) as param_capture,
            refuse_invalid_values(self.num_steps + 1),
        ):
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = {
            site["value"].unconstrained()
            for site in param_capture.trace.nodes.values()
            if site["value"].unconstrained().grad is not None
        }
        bad_grads = [
            name
            for name, site in param_capture.trace.nodes.items()
            if site["value"].unconstrained().grad is not None
            and not torch.isfinite(site["value"].unconstrained().grad).all()
        ]
        loss = float(loss)
        if not math.isfinite(loss) or bad_grads:
            pyro.infer.util.zero_grads(params)
            culprits = _non_finite_sites(self.model, self.guide, args, kwargs)
            raise NonFiniteLossError(
                f"step {self.num_steps + 1}: loss = {loss}; non-finite terms at sites "
                f"{', '.join(culprits) or '(none found on a fresh trace)'}; non-finite "
                f"gradients of "
                f"{bad_grads or 'no parameter'}; no parameter was updated"
            )
        self.optim(params)
        pyro.infer.util.zero_grads(params)
        self.num_steps += 1
        return loss


@contextlib.contextmanager
def refuse_invalid_values(step):
    """Turns a distribution's rejection of NaN parameters during the forward pass of
    step ``step`` into a :class:`NonFiniteLossError` (nothing was updated yet)."""
    try:
        yield
    except ValueError as e:
        if "invalid values" not in str(e):
            raise
        raise NonFiniteLossError(
            f"step {step}: non-finite values reached a distribution; no parameter was updated. {e}"
        ) from e


def refuse_non_finite_step(optimizer, step, loss=None):
    """
    Raises :class:`NonFiniteLossError` for step ``step``, after clearing the gradients,
    when ``loss`` (a float, if given) or a gradient of ``optimizer``'s parameters is not
    finite: call it between ``backward()`` and ``optimizer.step()``.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bad = [p for p in params if p.grad is not None and not p.grad.isfinite().all()]
    if bad or (loss is not None and not math.isfinite(loss)):
        optimizer.zero_grad(set_to_none=True)
        shown = "" if loss is None else f"loss = {loss}, "
        raise NonFiniteLossError(
            f"step {step}: {shown}{len(bad)} parameter(s) with non-finite gradients; "
            "no parameter was updated"
        )


def check_run_sizes(x, y, epochs, batch_size):
    """``ValueError`` unless ``epochs`` and ``batch_size`` are positive ints and ``x``,
    ``y`` have the same, non-zero length."""
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must have the same, non-zero length, got {len(x)}, {len(y)}")


def run_epochs(
    x,
    y,
    batch_loss,
    optimizer,
    scheduler,
    *,
    epochs,
    batch_size,
    summary,
    callback=None,
    generator=None,
):
    """
    The mini-batch loop of :func:`~pyro_dirmag.infer.fit` and
    :func:`~pyro_dirmag.infer.train_deterministic`. Each epoch draws a random order
    (``generator``); each step computes ``batch_loss(x_batch, y_batch, step)`` (a
    distribution's rejection of invalid values becomes a :class:`NonFiniteLossError`),
    backpropagates, refuses a non-finite loss or gradient before updating
    (:func:`refuse_non_finite_step`), then steps ``optimizer`` and ``scheduler``.

    After each epoch the record ``{"epoch", **summary(mean step loss, steps done),
    "lr", "seconds"}`` is appended to the returned history and passed to
    ``callback(epoch, record)``.
    """
    steps_per_epoch = math.ceil(len(x) / batch_size)
    history, step = [], 0
    for epoch in range(epochs):
        start, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            with refuse_invalid_values(step + 1):
                loss = batch_loss(x[idx], y[idx], step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = float(loss.detach())
            refuse_non_finite_step(optimizer, step + 1, value)
            optimizer.step()
            scheduler.step()
            loss_sum += value
            step += 1
        record = {"epoch": epoch + 1}
        record.update(summary(loss_sum / steps_per_epoch, step))
        record["lr"] = optimizer.param_groups[0]["lr"]
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        if callback is not None:
            callback(epoch + 1, record)
    return history


@torch.no_grad()
def _non_finite_sites(model, guide, args, kwargs):
    """Sites whose log-density, KL or value is not finite on a fresh trace."""
    culprits = []
    try:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    except (ValueError, RuntimeError) as e:  # e.g. a distribution rejecting NaN parameters
        return [f"(tracing failed: {e})"]
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        value = site["value"]
        if torch.is_tensor(value) and value.is_floating_point() and not value.isfinite().all():
            culprits.append(f"{name!r} (value)")
            continue
        try:
            if site["is_observed"]:
                term = site["fn"].log_prob(value)
            else:
                term = kl_divergence(guide_trace.nodes[name]["fn"], site["fn"])
        except (ValueError, NotImplementedError) as e:
            culprits.append(f"{name!r} ({e})")
            continue
        if not torch.isfinite(term).all():
            culprits.append(repr(name))
    return culprits
