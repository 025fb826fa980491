"""
The private names of torch and Pyro this package relies on, each behind one function
or class.

Neither library offers a public way to ask whether a KL pair is registered (without
computing it), to check Pyro's mean-field requirement, to name a ``PyroModule``'s
site, to list a ``PyroModule``'s ``PyroSample``/``PyroParam`` attributes, to turn a
``PyroModule[C]`` back into a plain ``C``, to hand a ``TraceMeanField_ELBO`` its traces
(:class:`TracePairELBO`) or to raise ``torch.compile``'s recompile limit for a block;
each use below is fenced here and pinned by ``tests/test_upstream.py``, which fails
when the upstream behaviour it relies on changes. ``pyproject.toml`` bounds
``pyro-ppl`` to the tested minor version for the same reason.
"""

import contextlib
from collections.abc import Callable

import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.trace_mean_field_elbo import _check_mean_field_requirement
from pyro.poutine import Trace
from torch.distributions.kl import _dispatch_kl

__all__ = [
    "TracePairELBO",
    "check_mean_field_requirement",
    "compile_recompile_limit",
    "keep_distribution_validation",
    "kl_is_registered",
    "plain_module_state",
    "pyro_fullname",
    "pyro_module_latents",
]


def kl_is_registered(p_type, q_type):
    """
    Whether ``torch.distributions.kl_divergence`` has a function registered for laws of
    types ``p_type`` and ``q_type`` (by torch's most-specific-match rule), without
    computing it.
    """
    return _dispatch_kl(p_type, q_type) is not NotImplemented


def check_mean_field_requirement(model_trace, guide_trace):
    """Pyro's ``TraceMeanField_ELBO`` check (a warning) that sites are ordered alike."""
    _check_mean_field_requirement(model_trace, guide_trace)


def pyro_fullname(module, name):
    """The Pyro site name of attribute ``name`` of the ``PyroModule`` ``module``."""
    return module._pyro_get_fullname(name)


def pyro_module_latents(module):
    """The names of the attributes of ``module`` (a ``PyroModule``, not its submodules)
    that are ``PyroSample`` or ``PyroParam`` attributes: ``[]`` for a plain
    ``torch.nn.Module``."""
    d = module.__dict__
    return list(d.get("_pyro_samples", ())) + list(d.get("_pyro_params", ()))


def plain_module_state(module):
    """The instance state (``__dict__``) of the ``PyroModule`` ``module`` without the
    state ``PyroModule`` adds: that of a plain ``torch.nn.Module`` of its torch class."""
    return {k: v for k, v in module.__dict__.items() if not k.startswith("_pyro")}


class TracePairELBO(TraceMeanField_ELBO):
    """
    :class:`~pyro.infer.TraceMeanField_ELBO` whose every loss (``loss``,
    ``differentiable_loss``, ``loss_and_grads``, each particle) takes its model and
    guide traces from :meth:`trace_pair`, which a subclass overrides. Pyro's hook for
    this is the private ``ELBO._get_trace``; no public one lets an ELBO change how the
    traces' log-densities are computed.
    """

    def _get_trace(self, model, guide, args, kwargs):
        return self.trace_pair(model, guide, args, kwargs)

    def trace_pair(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> tuple[Trace, Trace]:
        """``(model_trace, guide_trace)`` of one particle, with the log-densities and
        score parts the loss reads: ``TraceMeanField_ELBO``'s own by default.

        :param callable model: the model.
        :param callable guide: the guide.
        :param tuple args: the positional arguments of both.
        :param dict kwargs: the keyword arguments of both.
        """
        return super()._get_trace(model, guide, args, kwargs)


@contextlib.contextmanager
def keep_distribution_validation():
    """Restores torch's default ``validate_args`` of distributions on exit: the first
    ``torch.compile`` in a process (Dynamo's one-time patching of torch) switches it off
    for every distribution of the process, so bad parameters would give NaN instead of
    an error. Reads the private ``Distribution._validate_args`` (no public getter)."""
    previous = torch.distributions.Distribution._validate_args
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def compile_recompile_limit(limit):
    """A context manager under which ``torch.compile`` recompiles a function up to
    ``limit`` times before running it eagerly (``torch._dynamo.config``)."""
    return torch._dynamo.config.patch(recompile_limit=limit)
