r"""
The variational posterior of the DirMag layers (thesis section 4.1, eq. 28-32).

For every unit of every :mod:`pyro_dirmag.nn` DirMag layer:

.. math::

    q(g) = \mathcal{N}(m, \lambda^2), \qquad
    q(\epsilon) = \mathcal{TN}(\mu, \sigma, 0, \pi/2), \qquad q(\phi) = p(\phi) ,

with :math:`m, \log\lambda, \mu, \sigma` learned. :math:`\lambda` is optimized through
:math:`\log\lambda` (the additive-noise parametrization of Molchanov et al. [1]);
the noise level is :math:`\log\alpha = 2(\log\lambda - \log|m|)`.

**Clipping of** :math:`\log\alpha`. The scale actually used is
:math:`|m| \exp(\mathrm{clip}(\log\alpha, -10, 10)/2)`, i.e. :math:`\log\alpha` is clipped
to ``[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`` before the distribution is built, so that the
KL (which depends on :math:`q` only through :math:`\alpha`) and the samples always
see the same, bounded :math:`\alpha`: the KL stays finite when :math:`\lambda \ll |m|`,
and a unit whose magnitude collapses to 0 gets a scale that shrinks with it (:math:`|m|` is
floored at 1e-8 in the bounds) instead of noise without bound. Outside the range the
gradient with respect to :math:`\log\lambda` is zero (the bound moves with :math:`m`),
the usual behaviour of clipped sparse variational dropout. :meth:`DirMagGuide.log_alpha` reports the
clipped value, and pruning thresholds (3 by default) lie well inside the range.

**Per-example copies.** The model's DirMag sites live inside the data plate with one
copy per example (the site protocol of :mod:`pyro_dirmag._sites`); the guide declares
the same copies, all with one base distribution, inside a plate of the same name
whose subsample size is the current batch size, through the same function as the
layers, so that the copies weigh :math:`1/M` each, exactly as in the model. The
batch size is read from the leading dimension of the first tensor argument of the
model; pass ``create_plates`` (as for any Pyro ``AutoGuide``) when the model's plate
is sized otherwise.

**Other latent variables.** A model may have latent sites of its own besides the
DirMag layers' (a noise scale, a prior's hyperparameter). ``other=`` names a Pyro
autoguide class (or any callable ``model -> AutoGuide``) that
:class:`DirMagGuide` builds on the model with the DirMag sites hidden and runs inside
its own plates, so that one guide covers the whole model::

    guide = DirMagGuide(model, other=AutoNormal)
    guide = DirMagGuide(model, other=functools.partial(AutoLowRankMultivariateNormal, rank=2))

The same composition by hand, ``AutoGuideList`` of a ``DirMagGuide`` and an autoguide
on ``poutine.block``-ed models, also works, but the list's plates keep the batch size
of its first run (Pyro's rule), so every batch must have that size; ``other=``
follows the batch size. Without ``other=``, a model with other latent sites is
refused when the guide is first run with observed data.

**References:**

[1] D. Molchanov, A. Ashukha, D. Vetrov (2017) "Variational Dropout Sparsifies Deep
    Neural Networks"
"""

import functools
import math
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from .._sites import sample_per_example, site_record
from ..distributions import TruncatedNormal

__all__ = ["LOG_ALPHA_MAX", "LOG_ALPHA_MIN", "DirMagGuide"]

LOG_ALPHA_MIN = -10.0
LOG_ALPHA_MAX = 10.0
HALF_PI = 0.5 * math.pi
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_EMPTY = torch.Size()
# Floor on |m| in the clipping bounds: a unit with |m| below it is dead anyway, and the
# floor keeps the posterior scale a normal float32 number (whose square does not
# underflow in log_prob) when m reaches 0.
_MIN_ABS_LOC = 1e-8


class DirMagGuide(AutoGuide):
    r"""
    Mean-field guide for every DirMag site of a model: Gaussian magnitudes and
    truncated-normal angles, with analytic KL terms under
    :class:`~pyro.infer.TraceMeanField_ELBO`::

        guide = DirMagGuide(net)
        svi = SVI(net, guide, pyro.optim.Adam({"lr": 3e-3}), TraceMeanField_ELBO())

    Initialization: :math:`m` from the layer's weight-norm init (:math:`\|v\|`, read
    through the layer's ``initial_magnitude()``),
    :math:`\log\alpha` = ``init_log_alpha`` (small :math:`\lambda`), :math:`\mu` =
    ``init_angle_loc`` and :math:`\sigma` = ``init_angle_scale`` (a small rotation).

    :param callable model: a model (typically a :class:`~pyro.nn.PyroModule`) whose
        latent sites all come from DirMag layers.
    :param float init_log_alpha: initial :math:`\log\alpha`, in
        ``[LOG_ALPHA_MIN, LOG_ALPHA_MAX]``.
    :param float init_angle_loc: initial :math:`\mu`.
    :param float init_angle_scale: initial :math:`\sigma > 0`.
    :param callable create_plates: as for :class:`~pyro.infer.autoguide.AutoGuide`;
        by default the data plate's subsample size is the leading dimension of the
        model's first tensor argument.
    :param callable other: a Pyro autoguide class, or a callable ``model ->
        AutoGuide``, for the model's latent sites that are not DirMag sites (see the
        module notes); its guide is the attribute ``other`` after the first run.
    """

    def __init__(
        self,
        model: Callable,
        *,
        init_log_alpha: float = -8.0,
        init_angle_loc: float = 0.0,
        init_angle_scale: float = 0.05,
        create_plates: Callable | None = None,
        other: Callable[[Callable], AutoGuide] | None = None,
    ) -> None:
        if other is not None and not callable(other):
            raise ValueError(f"other must be an autoguide class or callable, got {other!r}")
        if not LOG_ALPHA_MIN <= init_log_alpha <= LOG_ALPHA_MAX:
            raise ValueError(
                f"init_log_alpha must be in [{LOG_ALPHA_MIN}, {LOG_ALPHA_MAX}], "
                f"got {init_log_alpha}"
            )
        if not math.isfinite(init_angle_loc):
            raise ValueError(f"init_angle_loc must be finite, got {init_angle_loc}")
        if not init_angle_scale > 0:
            raise ValueError(f"init_angle_scale must be positive, got {init_angle_scale}")
        self.init_log_alpha = float(init_log_alpha)
        self.init_angle_loc = float(init_angle_loc)
        self.init_angle_scale = float(init_angle_scale)
        super().__init__(model, create_plates=create_plates)
        self._other_factory = other
        self.other = None

    # ----- setup ---------------------------------------------------------------
    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        self._sites = OrderedDict()
        self.magnitude_loc = PyroModule()
        self.magnitude_log_scale = PyroModule()
        self.angle_loc = PyroModule()
        self.angle_scale = PyroModule()
        others = []
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            record = site_record(site)
            if record is None:
                others.append(name)
                continue
            frames = [f for f in site["cond_indep_stack"] if f.vectorized]
            if len(frames) > 1 and self.create_plates is None:
                raise NotImplementedError(
                    f"site {name!r} is inside {len(frames)} plates; pass create_plates= to "
                    "say how large each is"
                )
            if frames and self.create_plates is None:
                batch = _batch_size(args, kwargs)
                if batch != frames[0].size:
                    raise ValueError(
                        f"plate {frames[0].name!r} has size {frames[0].size} but the model's "
                        f"first tensor argument has {batch} rows; pass create_plates= to "
                        "DirMagGuide"
                    )
            self._sites[name] = record.kind
            event_shape = site["fn"].event_shape
            if record.kind == "magnitude":
                m = record.layer.initial_magnitude().reshape(event_shape)
                log_abs = _log_abs(m)
                deep_setattr(self.magnitude_loc, name, PyroParam(m, constraints.real, 1))
                log_scale = log_abs + 0.5 * self.init_log_alpha
                deep_setattr(
                    self.magnitude_log_scale, name, PyroParam(log_scale, constraints.real, 1)
                )
            else:
                like = site["value"]
                mu = torch.full(event_shape, self.init_angle_loc, dtype=like.dtype)
                sigma = torch.full(event_shape, self.init_angle_scale, dtype=like.dtype)
                deep_setattr(self.angle_loc, name, PyroParam(mu, constraints.real, 1))
                deep_setattr(self.angle_scale, name, PyroParam(sigma, constraints.positive, 1))
        self._setup_other(others, args, kwargs)

    def _setup_other(self, others, args, kwargs):
        """The guide of the non-DirMag latent sites ``others`` (see the module notes)."""
        if not others:
            return
        # The prototype trace leaves observed sites out; one more run tells whether this
        # first run had observations. Without any (e.g. a first run without labels) the
        # likelihood site is unobserved too and cannot be told from a latent.
        full = poutine.block(poutine.trace(self.model).get_trace)(*args, **kwargs)
        observed = any(
            site["type"] == "sample" and site["is_observed"] for site in full.nodes.values()
        )
        if self._other_factory is None:
            if observed:
                raise ValueError(
                    f"model: latent sites {others} are not DirMag sites and DirMagGuide "
                    "does not fit them; pass other=AutoNormal (or another autoguide "
                    "class) to DirMagGuide"
                )
            return
        if not observed:
            raise ValueError(
                "DirMagGuide(other=...) must first be run with the training arguments, "
                f"observations included: without them the sites {others} cannot be told "
                "from latent variables"
            )
        # The part's model hides the DirMag sites; assigning an AutoGuide makes this
        # guide its master (Pyro's AutoGuide protocol), so it runs in our plates.
        self.other = self._other_factory(poutine.block(self.model, hide=list(self._sites)))
        if not isinstance(self.other, AutoGuide):
            raise ValueError(
                f"other must build a pyro.infer.autoguide.AutoGuide, got {type(self.other)}"
            )

    def _check_prototype(self, part_trace):
        # Called by the part guide built from ``other`` (as AutoGuideList does).
        for name, part_site in part_trace.iter_stochastic_nodes():
            site = self.prototype_trace.nodes[name]
            if part_site["fn"].shape() != site["fn"].shape():
                raise ValueError(f"site {name!r} changed shape between the guide's runs")

    def _create_plates(self, *args, **kwargs):
        if self.create_plates is not None or self.master is not None:
            # user plates, or the plates of the AutoGuideList this guide is part of
            return super()._create_plates(*args, **kwargs)
        self.plates = {}
        if self._prototype_frames:
            batch = _batch_size(args, kwargs)
            for name, frame in self._prototype_frames.items():
                size = max(frame.full_size or frame.size, batch)
                self.plates[name] = pyro.plate(name, size, subsample_size=batch, dim=frame.dim)
        return self.plates

    # ----- posteriors --------------------------------------------------------------
    @property
    def site_names(self) -> list[str]:
        """Names of the DirMag sites, in model order (after the first call)."""
        self._require_setup()
        return list(self._sites)

    def _require_setup(self):
        if self.prototype_trace is None:
            raise RuntimeError("the guide has not been run yet: call it (or svi.step) once")

    def _magnitude_params(self, name):
        m = deep_getattr(self.magnitude_loc, name)
        log_lambda = deep_getattr(self.magnitude_log_scale, name)
        log_abs = _log_abs(m)
        lo = log_abs + 0.5 * LOG_ALPHA_MIN
        hi = log_abs + 0.5 * LOG_ALPHA_MAX
        log_scale = torch.maximum(torch.minimum(log_lambda, hi), lo)
        return m, log_scale.exp()

    def posterior(self, name: str) -> dist.Independent:
        """
        The posterior of one unit-vector site, batch shape ``()``, event ``(units,)``.

        :param str name: a site name, e.g. ``"fc1.magnitude"``.
        :rtype: ~pyro.distributions.Independent
        """
        self._require_setup()
        if name not in self._sites:
            raise KeyError(f"unknown DirMag site {name!r}; known: {list(self._sites)}")
        if self._sites[name] == "magnitude":
            loc, scale = self._magnitude_params(name)
            return _MagnitudeNormal(loc, scale).to_event(1)
        mu = deep_getattr(self.angle_loc, name)
        sigma = deep_getattr(self.angle_scale, name)
        zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
        return TruncatedNormal(mu, sigma, zero, zero + HALF_PI).to_event(1)

    def forward(self, *args, **kwargs):
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if name not in self._sites:
                continue
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        plate = plates[frame.name]
                        _check_plate_size(plate, args, kwargs, self.create_plates)
                        stack.enter_context(plate)
                result[name] = sample_per_example(name, self.posterior(name))
        if self.other is not None:
            result.update(self.other(*args, **kwargs))
        return result

    @torch.no_grad()
    def log_alpha(self) -> dict[str, torch.Tensor]:
        r"""
        Clipped :math:`\log\alpha = 2(\log\lambda - \log|m|)` of every magnitude site.

        :returns: ``{site name: tensor of shape (units,)}``.
        """
        self._require_setup()
        out = {}
        for name, kind in self._sites.items():
            if kind == "magnitude":
                m, scale = self._magnitude_params(name)
                out[name] = 2 * (scale.log() - _log_abs(m))
        return out

    @torch.no_grad()
    def posterior_mean(self) -> dict[str, torch.Tensor]:
        """
        Posterior means of every site: :math:`m` for magnitudes, the truncated normal's
        mean for angles.

        :returns: ``{site name: tensor of shape (units,)}``.
        """
        self._require_setup()
        return {name: self.posterior(name).mean for name in self._sites}

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Posterior medians (:math:`m`; the angle's inverse CDF at 1/2), per unit."""
        self._require_setup()
        with torch.no_grad():
            out = {}
            for name in self._sites:
                base = self.posterior(name).base_dist
                half = torch.full_like(base.loc, 0.5)
                out[name] = base.loc if self._sites[name] == "magnitude" else base.icdf(half)
            return out

    @torch.no_grad()
    def sample_posterior(self) -> dict[str, torch.Tensor]:
        """One global draw of every site (one network): ``{name: (units,) tensor}``."""
        self._require_setup()
        return {name: self.posterior(name).sample() for name in self._sites}


class _MagnitudeNormal(dist.Normal):
    """``Normal`` with a one-pass ``rsample`` and a three-pass ``log_prob`` (torch's take
    two and six): the magnitude posterior is drawn and scored on ``batch x units``
    per-example copies every step."""

    def rsample(self, sample_shape=_EMPTY):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return torch.addcmul(self.loc, eps, self.scale)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        return torch.addcmul(-(self.scale.log() + _LOG_SQRT_2PI), z, z, value=-0.5)


def _log_abs(m):
    """``log|m|`` with ``|m|`` floored at ``_MIN_ABS_LOC``, as in the clipping bounds."""
    return m.abs().clamp_min(_MIN_ABS_LOC).log()


def deep_getattr(obj, key):
    """``getattr`` through a dotted ``key`` (the inverse of ``deep_setattr``)."""
    return functools.reduce(getattr, key.split("."), obj)


def _check_plate_size(plate, args, kwargs, create_plates):
    """A plate made elsewhere (an AutoGuideList's) must have the current batch size."""
    if create_plates is not None:
        return
    batch = _batch_size(args, kwargs)
    if plate.subsample_size != batch:
        raise ValueError(
            f"plate {plate.name!r} of the enclosing AutoGuideList has subsample size "
            f"{plate.subsample_size} (its first run) but this batch has {batch} rows: pass "
            "create_plates= to the AutoGuideList, or use DirMagGuide(model, other=...) "
            "instead of the list"
        )


def _batch_size(args, kwargs):
    for value in list(args) + list(kwargs.values()):
        if torch.is_tensor(value) and value.dim() > 0:
            return value.shape[0]
    raise ValueError(
        "DirMagGuide reads the batch size from the model's first tensor argument, but none "
        "was passed; pass create_plates= to DirMagGuide"
    )
