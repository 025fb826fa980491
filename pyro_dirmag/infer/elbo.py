r"""
:class:`~pyro.infer.TraceMeanField_ELBO` without the log-densities it never uses.

``TraceMeanField_ELBO`` replaces :math:`\log p(z) - \log q(z)` by an analytic KL at
every latent site whose pair of distributions has one registered, yet Pyro still
evaluates both log-densities at every site before computing the loss. For DirMag
models these are the per-example copies of every unit's magnitude and angle
(``batch x units`` truncated-normal and log-uniform densities per step), a sizable
share of a training step that is then thrown away. :class:`DirMagELBO` gives the same
loss and gradients (it is ``TraceMeanField_ELBO`` with those evaluations skipped).
"""

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.util import is_validation_enabled
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, check_site_shape
from torch.distributions import kl_divergence

from .._sites import is_per_example_pair
from .._upstream import TracePairELBO, check_mean_field_requirement, kl_is_registered

__all__ = ["DirMagELBO"]


def _has_kl(q, p):
    """
    Whether ``TraceMeanField_ELBO`` uses the analytic ``kl_divergence(q, p)`` at a site:
    a KL is registered for the pair and does not raise ``NotImplementedError`` (as
    torch's KL of two different exponential families does, or a KL of this package for
    parameters it does not cover). Registered pairs are evaluated to tell: per-example
    copies (every DirMag site) hold the KL for the loss, which then takes it instead of
    computing it again; other pairs are evaluated once more, without a graph.
    """
    if not kl_is_registered(type(q), type(p)):
        return False
    try:
        if is_per_example_pair(q, p):
            q.hold_kl(p, kl_divergence(q, p))
        else:
            with torch.no_grad():
                kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


class DirMagELBO(TracePairELBO):
    """Same estimator as :class:`~pyro.infer.TraceMeanField_ELBO`, computed faster."""

    def trace_pair(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> tuple[Trace, Trace]:
        """``(model_trace, guide_trace)`` of one particle, without the log-densities of
        the sites whose analytic KL the loss uses (see the module notes)."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace = prune_subsample_sites(model_trace)
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            guide_site = guide_trace.nodes.get(name)
            if guide_site is None:
                raise ValueError(
                    f"model site {name!r} is latent but the guide has no site of that name: "
                    "DirMagGuide fits only DirMag sites; pass other=AutoNormal (or another "
                    "autoguide class) to DirMagGuide"
                )
            if _has_kl(guide_site["fn"], site["fn"]):
                # The loss uses the analytic KL here: skip both densities.
                zero = torch.zeros((), dtype=site["value"].dtype, device=site["value"].device)
                site["log_prob"] = site["unscaled_log_prob"] = zero
                site["log_prob_sum"] = zero
                guide_site["score_parts"] = ScoreParts(zero, 0, zero)
                guide_site["log_prob"] = guide_site["unscaled_log_prob"] = zero
                guide_site["log_prob_sum"] = zero
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            for trace in (model_trace, guide_trace):
                for site in trace.nodes.values():
                    if site["type"] == "sample" and site["log_prob"].dim():
                        check_site_shape(site, self.max_plate_nesting)
            check_mean_field_requirement(model_trace, guide_trace)
        return model_trace, guide_trace
