r"""
Bayesian weight-normalized layers with noise on the magnitude and on the direction of
each unit's weight vector (thesis sections 4.1-4.3; docs/MATH.md sections 1, 3-5).

Unit :math:`j` of a layer has the weight vector

.. math::

    w_j = g_j \left(\cos(\epsilon_j)\, u_j + \sin(\epsilon_j)\, \phi_j\right),
    \qquad u_j = v_j / \|v_j\| ,

with the latent magnitude :math:`g_j` (prior log-uniform), the latent angle
:math:`\epsilon_j` (prior :math:`\mathrm{Uniform}(0, \pi/2)`) and :math:`\phi_j` uniform
on the unit sphere of the tangent space at :math:`u_j` (prior = posterior, so it is
auxiliary noise drawn inside the layer rather than a Pyro site). The direction
:math:`v` and the bias are point-estimated parameters.

**Design choices.**

* *Prior on the magnitude.* The log-uniform prior :math:`p(g) \propto 1/|g|` is
  improper and cannot be sampled, but :class:`pyro.infer.Predictive` and every
  ``AutoGuide`` first run the model on its own and draw each latent site from its
  prior. The default prior is therefore the proper log-uniform law on
  :math:`10^{-30} \le |g| \le 10^{4}`
  (:class:`~pyro_dirmag.distributions.SymmetricLogUniform`): its KL from a Gaussian
  posterior is Molchanov's approximation of the improper KL plus the constant
  :math:`\log(2 \log(b/a))`, so gradients are those of the improper model. The
  bounds are chosen so that a Gaussian posterior draw falls outside them with
  negligible probability (float32 resolution) and prior draws cannot overflow a
  deep net's activations. Pass ``magnitude_prior=`` to change it.
* *Per-example noise and the ELBO's weights.* The layers are called inside the
  model's data plate. Their sites ``<layer>.magnitude`` and ``<layer>.angle`` then
  get one copy per example (local reparameterization: independent noise for every
  example), scaled so that the copies of one step sum to exactly one KL term; the
  site names, the record the sites carry and this scaling rule are the site protocol
  of :mod:`pyro_dirmag._sites`. Called outside any plate, a layer draws one value per
  unit for the whole input.
* *Direction noise per example.* ``phi="per_example"`` (default) gives every example
  its own :math:`\phi`: exact and cheap for dense layers through
  :math:`\phi_j \cdot x = \|x_{\perp j}\|\, t` (docs/MATH.md section 5,
  :func:`~pyro_dirmag.nn._direction.tangent_projection`), exact for convolutions
  through one grouped convolution with per-example kernels. ``phi="shared"`` is the
  thesis's form (one :math:`\Phi` per mini-batch); ``phi="mean"`` replaces
  :math:`\phi` by its mean 0 (the "mean network").

**References:**

[1] T. Salimans, D. P. Kingma (2016) "Weight Normalization: A Simple
    Reparameterization to Accelerate Training of Deep Neural Networks"

[2] D. Molchanov, A. Ashukha, D. Vetrov (2017) "Variational Dropout Sparsifies Deep
    Neural Networks"

[3] D. P. Kingma, T. Salimans, M. Welling (2015) "Variational Dropout and the Local
    Reparameterization Trick"
"""

import contextlib
import math
from collections.abc import Iterator

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from .._shapes import broadcast_size
from .._sites import sample_layer_site
from ..distributions import HemisphereAngle, SymmetricLogUniform
from ..distributions._support import all_within
from ._direction import PERP_FLOOR, squared_norms, tangent_projection, tangent_uniform
from ._rotated_output import rotated_output
from .weight_norm import WeightNormLayer, check_positive_int, int_pair

__all__ = ["PHI_MODES", "DirMagConv2d", "DirMagLinear", "direction_noise"]

PHI_MODES = ("per_example", "shared", "mean")
MAGNITUDE_PRIOR_LOW = 1e-30
MAGNITUDE_PRIOR_HIGH = 1e4
HALF_PI = 0.5 * math.pi


class _AngleUniform(dist.Uniform):
    """``Uniform`` whose ``log_prob`` on values all inside ``[low, high)`` of scalar bounds
    is a broadcast constant (one min/max pass over the values, none per value): the angle
    prior is scored on ``batch x units`` copies every step."""

    def log_prob(self, value):
        if not self._validate_args and all_within(value, self.low, self.high, high_open=True):
            width = self.high.reshape(-1)[0] - self.low.reshape(-1)[0]
            shape = broadcast_size(value.shape, self.batch_shape)
            return (-width.log()).expand(shape)
        return super().log_prob(value)


ANGLE_PRIORS = ("uniform", "hemisphere")


def check_angle_prior(angle_prior):
    """``angle_prior`` if it is one of :data:`ANGLE_PRIORS`, else a ``ValueError``."""
    if angle_prior not in ANGLE_PRIORS:
        raise ValueError(f"angle_prior must be one of {ANGLE_PRIORS}, got {angle_prior!r}")
    return angle_prior


class _DirMagLayer(WeightNormLayer, PyroModule):
    """The maths shared by every DirMag layer; subclasses supply the linear map. The
    direction ``v``, the bias, their init and the normalization are those of
    :class:`~pyro_dirmag.nn.weight_norm.WeightNormLayer`."""

    def __init__(
        self,
        weight_shape,
        bias,
        magnitude_noise,
        direction_noise,
        magnitude_prior,
        phi,
        reverse,
    ):
        if phi is None:
            phi = "shared" if reverse else "per_example"
        if phi not in PHI_MODES:
            raise ValueError(f"phi must be one of {PHI_MODES}, got {phi!r}")
        if reverse and phi == "per_example":
            raise ValueError(
                "phi='per_example' is not available with reverse=True (it would need one "
                "(out, in) matrix per example); use phi='shared'"
            )
        # The weight-norm init of Salimans & Kingma: v as torch's default init, g = ||v||.
        super().__init__(weight_shape, bias, unit_dim=1 if reverse else 0)
        self.magnitude_noise = bool(magnitude_noise)
        self.direction_noise = bool(direction_noise)
        self.reverse = bool(reverse)
        self.phi = phi
        self._phi_cache = None  # {"phi": tensor} while predictions share one network
        self.register_buffer("magnitude_init", self.unit_norms(self.v.detach()))
        if not self.magnitude_noise:
            self.magnitude = nn.Parameter(self.magnitude_init.clone())
        if magnitude_prior is None:
            low = torch.tensor(MAGNITUDE_PRIOR_LOW)
            high = torch.tensor(MAGNITUDE_PRIOR_HIGH)
            magnitude_prior = SymmetricLogUniform(low, high)
        if magnitude_prior.batch_shape != () or magnitude_prior.event_shape != ():
            raise ValueError(
                "magnitude_prior must be a scalar distribution (batch_shape () and "
                f"event_shape ()), got batch_shape {tuple(magnitude_prior.batch_shape)} "
                f"and event_shape {tuple(magnitude_prior.event_shape)}"
            )
        self.magnitude_prior = magnitude_prior

    # ----- what subclasses provide -------------------------------------------------
    def _linear(self, x, weight):
        """The layer's linear map (``F.linear``/``F.conv2d``) without bias."""
        raise NotImplementedError

    def _per_example_term(self, x, u, s):
        r""":math:`\phi_{ij} \cdot x_i` with an independent :math:`\phi` per example."""
        raise NotImplementedError

    def _check_input(self, x, v):
        raise NotImplementedError

    # ----- shared maths ------------------------------------------------------------
    @torch.no_grad()
    def _reset_magnitude(self, norms):
        # the guide reads magnitude_init on its first run only: reset before that
        self.magnitude_init.copy_(norms)
        if not self.magnitude_noise:
            self.magnitude.copy_(norms)

    def _sample(self, kind, prior):
        return sample_layer_site(self, kind, prior.expand([self.num_units]).to_event(1))

    def _magnitude_prior(self, v):
        p = self.magnitude_prior
        if isinstance(p, SymmetricLogUniform) and p.low.device != v.device:
            p = SymmetricLogUniform(p.low.to(v.device), p.high.to(v.device))
        return p

    def _angle_prior(self, v):
        if self.angle_prior == "hemisphere":
            dim = self.v.numel() // self.num_units
            return HemisphereAngle(dim, dtype=v.dtype, device=v.device, validate_args=False)
        # Constant, valid parameters, and log_prob is -inf outside [0, pi/2] anyway: the
        # per-value support check (as costly as the density itself on batch x units
        # copies) is skipped.
        zero = torch.zeros((), dtype=v.dtype, device=v.device)
        return _AngleUniform(zero, zero + HALF_PI, validate_args=False)

    def _direction_term(self, x, u):
        r""":math:`\Phi x` for the shared :math:`\Phi` of this call (or of the cache)."""
        if self._phi_cache is not None and "phi" in self._phi_cache:
            phi = self._phi_cache["phi"]
        else:
            phi = self._tangent(u)
            if self._phi_cache is not None:
                self._phi_cache["phi"] = phi
        return self._linear(x, phi)

    def _tangent(self, u):
        """One draw of :math:`\\Phi` (same shape as the weight), tangent at each unit."""
        if self.reverse:
            return tangent_uniform(u.t()).t()
        flat = tangent_uniform(u.reshape(u.shape[0], -1))
        return flat.reshape(u.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v
        self._check_input(x, v)
        u = self.directions(v)
        if self.magnitude_noise:
            g = self._sample("magnitude", self._magnitude_prior(v))
        else:
            g = self.magnitude
        eps = None
        if self.direction_noise:
            eps = self._sample("angle", self._angle_prior(v))
        bias = self.bias
        if self.reverse:
            # Units are input features: w[:, i] = g_i (cos eps_i u_i + sin eps_i phi_i), so
            # y = U (x g cos eps) + Phi (x g sin eps), with per-example g and eps.
            xg = x * g
            if eps is None:
                y = self._linear(xg, u)
            elif self.phi == "mean":
                y = self._linear(xg * eps.cos(), u)
            else:
                y = self._linear(xg * eps.cos(), u) + self._direction_term(xg * eps.sin(), u)
        else:
            s = self._linear(x, u)
            if eps is not None and self.phi == "per_example":
                return self._per_example_output(x, u, s, g, eps, bias)
            if eps is not None:
                cos = self._unit_view(eps.cos())
                if self.phi == "mean":
                    s = cos * s
                else:
                    s = cos * s + self._unit_view(eps.sin()) * self._direction_term(x, u)
            y = self._unit_view(g) * s
        if bias is not None:
            y = y + self._bias_view(bias)
        return y

    def _per_example_output(self, x, u, s, g, eps, bias):
        r""":math:`g(\cos\epsilon\, s + \sin\epsilon\, \phi \cdot x) + b` with an independent
        :math:`\phi` per example (the generic form; dense layers fuse it)."""
        r = self._per_example_term(x, u, s)
        y = self._unit_view(g) * (self._unit_view(eps.cos()) * s + self._unit_view(eps.sin()) * r)
        return y if bias is None else y + self._bias_view(bias)

    def initial_magnitude(self) -> torch.Tensor:
        r"""
        The initial value of the posterior mean :math:`m` of the magnitudes: the norms
        :math:`\|w_j\|` of the weight the layer was started from (its weight-norm init,
        or the weight given to :meth:`load_weight_`).
        :class:`~pyro_dirmag.infer.DirMagGuide` starts from it on its first run.

        :returns: a new tensor of shape ``(units,)``, with the layer's dtype and device.
        """
        return self.magnitude_init.detach().clone()

    @torch.no_grad()
    def load_weight_(
        self, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> "_DirMagLayer":
        r"""
        Starts the layer from a deterministic weight (e.g. a pre-trained network's):
        :math:`v` = ``weight`` and the initial magnitude :math:`\|w_j\|` per unit
        (:meth:`initial_magnitude`), which :class:`~pyro_dirmag.infer.DirMagGuide` takes
        as the initial posterior mean :math:`m` when it is first run. Call it before the
        guide's first run.

        :param torch.Tensor weight: shaped like ``torch.nn``'s weight for this layer.
        :param torch.Tensor bias: shape ``(out,)``, or ``None`` to keep the current bias.
        :returns: ``self``.
        """
        if tuple(weight.shape) != self._weight_shape:
            raise ValueError(
                f"weight must have shape {self._weight_shape}, got {tuple(weight.shape)}"
            )
        if not torch.isfinite(weight).all():
            raise ValueError("weight must be finite")
        norms = self.unit_norms(weight)
        if not (norms > 0).all():
            raise ValueError(f"weight has {int((norms == 0).sum())} all-zero unit vectors")
        self.v.copy_(weight)
        self.magnitude_init.copy_(norms)
        if not self.magnitude_noise:
            self.magnitude.copy_(norms)
        if bias is not None:
            if self.bias is None or bias.shape != self.bias.shape:
                raise ValueError(
                    f"bias must have shape {None if self.bias is None else tuple(self.bias.shape)}"
                    f", got {tuple(bias.shape)}"
                )
            self.bias.copy_(bias)
        return self

    def weight_from(
        self,
        magnitude: torch.Tensor,
        angle: torch.Tensor | None = None,
        phi: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""
        The deterministic weight :math:`g (\cos\epsilon\, u + \sin\epsilon\, \phi)` for
        given per-unit values (``angle=None`` or ``phi=None``: no rotation term).

        :param torch.Tensor magnitude: shape ``(units,)``.
        :param torch.Tensor angle: shape ``(units,)`` or ``None``.
        :param torch.Tensor phi: tangent directions, same shape as the weight, or ``None``.
        :returns: a tensor shaped like ``torch.nn``'s weight for this layer.
        """
        u = self.directions()
        shape = self._weight_unit_shape()
        direction = u
        if angle is not None:
            direction = angle.cos().reshape(shape) * u
            if phi is not None:
                direction = direction + angle.sin().reshape(shape) * phi
        return magnitude.reshape(shape) * direction

    def _check_dtype(self, x, v):
        if not torch.is_tensor(x):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x)}")
        if not x.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} expects a floating point input, got dtype {x.dtype}"
            )
        if x.dtype != v.dtype:
            raise TypeError(
                f"{type(self).__name__}: input dtype {x.dtype} does not match the layer's "
                f"dtype {v.dtype}"
            )


class DirMagLinear(_DirMagLayer):
    r"""
    Dense Bayesian weight-normalized layer with latent magnitude and direction noise.

    Each output unit's weight row is :math:`w_j = g_j(\cos\epsilon_j u_j +
    \sin\epsilon_j \phi_j)`; with ``reverse=True`` the columns are normalized instead
    and :math:`g_i` scores input feature :math:`i` (the thesis's "FC reverse",
    section 4.3). Call it inside the model's data plate to get per-example noise::

        class Net(PyroModule):
            def __init__(self, num_data):
                super().__init__()
                self.num_data = num_data
                self.fc = DirMagLinear(784, 10)

            def forward(self, x, y=None):
                with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
                    logits = self.fc(x)
                    pyro.sample("y", dist.Categorical(logits=logits), obs=y)
                return logits

    Latent sites: ``<name>.magnitude`` and ``<name>.angle`` with event shape
    ``(units,)``; fit them with :class:`~pyro_dirmag.infer.DirMagGuide`.

    :param int in_features: input size.
    :param int out_features: output size.
    :param bool bias: learn an additive bias (point estimate).
    :param bool magnitude_noise: make :math:`g` latent (else a plain parameter).
    :param bool direction_noise: make :math:`\epsilon` latent and rotate the direction
        (else :math:`w = g u`).
    :param magnitude_prior: scalar prior of :math:`g`; default
        ``SymmetricLogUniform(1e-30, 1e4)`` (see the module notes).
    :param str phi: ``"per_example"`` (default), ``"shared"`` (one :math:`\Phi` per
        call, the thesis's form; the default with ``reverse``) or ``"mean"``.
    :param bool reverse: normalize over inputs (units are input features).
    :param str angle_prior: prior of :math:`\epsilon`: ``"uniform"`` (default, the
        thesis's :math:`\mathrm{Uniform}(0, \pi/2)`) or ``"hemisphere"``
        (:class:`~pyro_dirmag.distributions.HemisphereAngle`: the rotated direction is
        uniform on the hemisphere around :math:`u`; its KL grows with the dimension).
        Experimental: its exact KL prunes far more and costs accuracy (full MNIST,
        LeNet-300-100: x16.8 at 97.1 %; docs/RESULTS.md, "Stronger priors?").
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        magnitude_noise: bool = True,
        direction_noise: bool = True,
        magnitude_prior: dist.Distribution | None = None,
        phi: str | None = None,
        reverse: bool = False,
        angle_prior: str = "uniform",
    ) -> None:
        check_positive_int(in_features=in_features, out_features=out_features)
        if direction_noise and (out_features if reverse else in_features) < 2:
            raise ValueError("direction noise needs vectors of dimension >= 2")
        self.in_features = in_features
        self.out_features = out_features
        super().__init__(
            (out_features, in_features),
            bias,
            magnitude_noise,
            direction_noise,
            magnitude_prior,
            phi,
            reverse,
        )
        self.angle_prior = check_angle_prior(angle_prior)

    def _linear(self, x, weight):
        return F.linear(x, weight)

    def _per_example_output(self, x, u, s, g, eps, bias):
        # phi_j . x = ||x_perp_j|| t (docs/MATH.md section 5), the whole output as one autograd
        # node (pyro_dirmag.nn._rotated_output): the dense layers' training-step hot spot.
        # The floor keeps the square root's gradient finite where x is parallel to u_j.
        t = tangent_projection(self.in_features, s.shape, dtype=s.dtype, device=s.device)
        return rotated_output(s, squared_norms(x), g, eps, t, bias, floor=PERP_FLOOR)

    def _check_input(self, x, v):
        self._check_dtype(x, v)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"DirMagLinear expects inputs of shape (..., {self.in_features}), "
                f"got {tuple(x.shape)}"
            )

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, magnitude_noise={self.magnitude_noise}, "
            f"direction_noise={self.direction_noise}, phi={self.phi!r}, reverse={self.reverse}"
        )


class DirMagConv2d(_DirMagLayer):
    r"""
    2-D convolution with latent magnitude and direction noise on each output filter.

    Same model as :class:`DirMagLinear` with :math:`w_j` one output filter
    (``in_channels * kh * kw`` numbers); per-example direction noise uses one grouped
    convolution (the batch folded into groups), exact at the cost of one extra
    convolution.

    :param int in_channels: input channels.
    :param int out_channels: output channels (units).
    :param kernel_size: int or pair.
    :param stride: int or pair.
    :param padding: int or pair.
    :param dilation: int or pair.
    :param bool bias: learn an additive bias (point estimate).
    :param bool magnitude_noise: see :class:`DirMagLinear`.
    :param bool direction_noise: see :class:`DirMagLinear`.
    :param magnitude_prior: see :class:`DirMagLinear`.
    :param str phi: ``"per_example"`` (default), ``"shared"`` or ``"mean"``.
    :param str angle_prior: see :class:`DirMagLinear`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        *,
        magnitude_noise: bool = True,
        direction_noise: bool = True,
        magnitude_prior: dist.Distribution | None = None,
        phi: str | None = None,
        angle_prior: str = "uniform",
    ) -> None:
        check_positive_int(in_channels=in_channels, out_channels=out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = int_pair(kernel_size, "kernel_size")
        self.stride = int_pair(stride, "stride")
        self.padding = int_pair(padding, "padding", allow_zero=True)
        self.dilation = int_pair(dilation, "dilation")
        if direction_noise and in_channels * self.kernel_size[0] * self.kernel_size[1] < 2:
            raise ValueError("direction noise needs filters of dimension >= 2")
        super().__init__(
            (out_channels, in_channels) + self.kernel_size,
            bias,
            magnitude_noise,
            direction_noise,
            magnitude_prior,
            phi,
            False,
        )
        self.angle_prior = check_angle_prior(angle_prior)

    def _linear(self, x, weight):
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)

    def _per_example_term(self, x, u, s):
        # One kernel set per example, all examples in one grouped convolution.
        batch = x.shape[0]
        phi = tangent_uniform(u.reshape(u.shape[0], -1), (batch,))
        phi = phi.reshape((batch * u.shape[0],) + u.shape[1:])
        folded = x.reshape((1, batch * x.shape[1]) + x.shape[2:])
        out = F.conv2d(folded, phi, None, self.stride, self.padding, self.dilation, batch)
        return out.reshape(s.shape)

    def _check_input(self, x, v):
        self._check_dtype(x, v)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DirMagConv2d expects inputs of shape (batch, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
            f"magnitude_noise={self.magnitude_noise}, direction_noise={self.direction_noise}, "
            f"phi={self.phi!r}"
        )


@contextlib.contextmanager
def direction_noise(module: nn.Module, phi: str, share: bool = False) -> Iterator[None]:
    r"""
    Temporarily sets the :math:`\phi` mode of every DirMag layer in ``module``.

    :param torch.nn.Module module: a model containing DirMag layers.
    :param str phi: one of :data:`PHI_MODES`.
    :param bool share: with ``phi="shared"``, draw :math:`\Phi` once per layer and reuse
        it for every call inside the context (one network across input chunks).
    """
    if phi not in PHI_MODES:
        raise ValueError(f"phi must be one of {PHI_MODES}, got {phi!r}")
    layers = [m for m in module.modules() if isinstance(m, _DirMagLayer)]
    saved = [(m.phi, m._phi_cache) for m in layers]
    try:
        for m in layers:
            if m.reverse and phi == "per_example":
                continue
            m.phi = phi
            m._phi_cache = {} if share else None
        yield
    finally:
        for m, (mode, cache) in zip(layers, saved, strict=False):
            m.phi, m._phi_cache = mode, cache


def dirmag_layers(module: nn.Module) -> list[tuple[str, "_DirMagLayer"]]:
    """The DirMag layers of ``module`` in registration order, as ``(name, layer)``."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, _DirMagLayer)]
