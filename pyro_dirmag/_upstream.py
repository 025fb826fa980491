"""
The private names of torch and Pyro this package relies on, each behind one function.

Neither library offers a public way to ask whether a KL pair is registered (without
computing it), to check Pyro's mean-field requirement, to name a ``PyroModule``'s
site or to raise ``torch.compile``'s recompile limit for a block; each use below is fenced here
and pinned by ``tests/test_upstream.py``, which fails when the upstream behaviour it
relies on changes. ``pyproject.toml`` bounds ``pyro-ppl`` to the tested minor version
for the same reason. :class:`~pyro_dirmag.infer.DirMagELBO` also overrides Pyro's
``ELBO._get_trace`` hook (no public one skips the log-densities); the same test file
checks that Pyro still routes every loss through it.
"""

import torch
from pyro.infer.trace_mean_field_elbo import _check_mean_field_requirement
from torch.distributions.kl import _dispatch_kl

__all__ = [
    "check_mean_field_requirement",
    "compile_recompile_limit",
    "kl_is_registered",
    "pyro_fullname",
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


def compile_recompile_limit(limit):
    """A context manager under which ``torch.compile`` recompiles a function up to
    ``limit`` times before running it eagerly (``torch._dynamo.config``)."""
    return torch._dynamo.config.patch(recompile_limit=limit)
