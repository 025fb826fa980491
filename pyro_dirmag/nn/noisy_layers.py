"""Weight-normalized layers with fixed-variance direction and magnitude noise (thesis section 3).

A layer computes ``y = g * (u . x) + b`` with ``u = v / ||v||`` per output unit
(weight normalization, Salimans and Kingma 2016) and perturbs it with

* ``noise``: Gaussian dropout ``"gaussian"`` or a direction noise (``"projected"``,
  ``"tangent"``, ``"rotation_normal"``, ``"rotation_beta"``), applied either to the
  layer's input activations (``on="activation"``, "signal rotation", thesis 3.5,
  table 1) or to its weights (``on="weight"``, table 2);
* ``magnitude``: multiplicative noise on ``g`` (``"normal"`` or ``"gamma"``), which
  combines with any ``noise``.

The noise laws and the mapping from ``alpha`` to their parameters live in
:mod:`pyro_dirmag.nn.noise`; the layers only decide *where* a draw enters.

Where the noise enters, and how many draws are made:

* activation noise is drawn independently per example: Gaussian dropout multiplies
  each input entry by ``N(1, alpha)``; a direction noise splits each example's input
  ``x = ||x|| x_norm`` (for a convolution, the whole ``C x H x W`` input of that
  example) and replaces ``x_norm`` by a draw around it;
* magnitude noise multiplies ``g_j`` and so ``y_j`` before the bias; it is drawn per
  example and unit (local reparameterization, thesis eq. 45): exact for dense and
  convolutional layers alike, since one example sees one ``g_j`` at every position;
* weight noise with ``per_example=True`` (default) is independent per example where an
  exact cheap form exists: Gaussian dropout on the weights of a dense layer by local
  reparameterization ``y_j ~ N(x . w_j, alpha sum_k x_k^2 w_jk^2)`` (thesis 3.4);
  the plane-rotation noises (``rotation_*`` and ``tangent``, whose angle is
  ``arctan(sqrt(alpha) r)``, ``r ~ chi(n - 1)``) on a dense layer through the
  one-matmul identity of docs/MATH.md section 5,

  .. math::

      y_{ij} = g_j \\left(\\cos\\epsilon_{ij}\\, u_j^\\top x_i + \\sin\\epsilon_{ij}
      \\sqrt{\\|x_i\\|^2 - (u_j^\\top x_i)^2}\\; t_{ij}\\right),\\quad
      \\frac{t_{ij} + 1}{2} \\sim \\mathrm{Beta}\\left(\\tfrac{n-2}{2}, \\tfrac{n-2}{2}\\right),

  which has the law of ``phi_j . x_i`` for ``phi_j`` uniform on the tangent sphere at
  ``u_j``. Other weight noises (projected, convolutional weights) are drawn
  once per mini-batch, as in the thesis's table 2; ``per_example=False`` forces one
  draw per mini-batch for every weight noise (magnitude included).

Noise is active in ``train()`` mode. In ``eval()`` mode the layer is the mean
network (mode ``"mean"``, the thesis's "deterministic network": every noise replaced by
a point mass at its location, so ``u``, ``g`` and ``x`` enter unperturbed) unless
sampling was switched on with :func:`~pyro_dirmag.nn.noise_mode` (see
:func:`~pyro_dirmag.nn.predict_probs` for the three evaluation modes of the thesis).

**References:**

[1] P. Kirichenko (2018) "Investigation of Bayesian Regularization Methods for Neural
    Networks" (BSc thesis, HSE; in Russian), sections 3.2-3.5, 4.2.
[2] Salimans, Kingma (2016) "Weight Normalization: A Simple Reparameterization to
    Accelerate Training of Deep Neural Networks".
[3] Kingma, Salimans, Welling (2015) "Variational Dropout and the Local
    Reparameterization Trick".
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._direction import tangent_term
from .noise import (
    DIRECTION_NOISES,
    MAGNITUDE_NOISES,
    NOISES,
    PLANE_ROTATION_NOISES,
    angle_distribution,
    check_alpha,
    check_choice,
    direction_distribution,
    gaussian_dropout_distribution,
    magnitude_distribution,
    rotation_beta_concentration,
)
from .weight_norm import WeightNormLayer, check_positive_int, int_pair

__all__ = ["NoisyConv2d", "NoisyLinear", "NoisyWeightNorm", "NOISE_TARGETS"]

NOISE_TARGETS = ("activation", "weight")


class NoisyWeightNorm(WeightNormLayer):
    """Shared body of :class:`NoisyLinear` and :class:`NoisyConv2d`: the magnitude
    ``g`` (a parameter) and the noise, on top of the direction ``v``, the bias, their
    init and the normalization of :class:`~pyro_dirmag.nn.weight_norm.WeightNormLayer`.

    Subclasses set ``example_dims`` (trailing dimensions of one example's input) and
    implement :meth:`_affine` (the bias-free ``F.linear`` or ``F.conv2d`` call).

    :param tuple weight_shape: shape of the direction parameter ``v``; output units first.
    :param bool bias: whether to learn an additive bias.
    :param str noise: ``None`` or one of :data:`~pyro_dirmag.nn.noise.NOISES`.
    :param float alpha: strength of ``noise`` (required with it).
    :param str magnitude: ``None`` or one of :data:`~pyro_dirmag.nn.noise.MAGNITUDE_NOISES`.
    :param float magnitude_alpha: variance of the magnitude noise (required with it).
    :param str on: ``"activation"`` or ``"weight"``: where ``noise`` enters.
    :param bool per_example: independent weight noise per example where exact (see the
        module docstring); ``False`` draws weight noise once per mini-batch.
    """

    example_dims = 1

    def __init__(
        self,
        weight_shape,
        bias=True,
        *,
        noise=None,
        alpha=None,
        magnitude=None,
        magnitude_alpha=None,
        on="activation",
        per_example=True,
    ):
        if noise is not None:
            check_choice(noise, NOISES, "noise")
            alpha = check_alpha(alpha, "alpha")
            if noise == "rotation_beta":
                rotation_beta_concentration(alpha)  # raises if alpha is out of its range
        elif alpha is not None:
            raise ValueError(
                "alpha was given without a noise; allowed noises: " + ", ".join(NOISES)
            )
        if magnitude is not None:
            check_choice(magnitude, MAGNITUDE_NOISES, "magnitude noise")
            magnitude_alpha = check_alpha(magnitude_alpha, "magnitude_alpha")
        elif magnitude_alpha is not None:
            raise ValueError(
                "magnitude_alpha was given without a magnitude noise; allowed magnitude noises: "
                + ", ".join(MAGNITUDE_NOISES)
            )
        check_choice(on, NOISE_TARGETS, "noise target 'on'")
        fan_in = math.prod(weight_shape[1:])
        if noise in DIRECTION_NOISES and on == "weight" and fan_in < 2:
            raise ValueError(
                f"direction noise {noise!r} on weights needs a fan-in of at least 2, got "
                f"{fan_in}; use noise='gaussian' or a magnitude noise on this layer"
            )
        super().__init__(weight_shape, bias)
        self.noise = noise
        self.alpha = alpha
        self.magnitude = magnitude
        self.magnitude_alpha = magnitude_alpha
        self.on = on
        self.per_example = bool(per_example)
        #: whether noise is drawn in ``eval()`` mode; set by :func:`~pyro_dirmag.nn.noise_mode`.
        self.sample_in_eval = False
        #: magnitudes, one per output unit; ``g = ||v||`` at the start, so ``w = v``
        self.g = nn.Parameter(self.unit_norms(self.v.detach()))

    @torch.no_grad()
    def _reset_magnitude(self, norms):
        self.g.copy_(norms)

    @property
    def direction(self):
        """Unit directions ``u = v / ||v||``, shape ``(out, fan_in)``."""
        return self.directions().flatten(1)

    @property
    def weight(self):
        """The mean weight ``g u`` in the layout of ``v``."""
        return self.g.reshape(self._weight_unit_shape()) * self.directions()

    @property
    def noise_active(self):
        """Whether the next forward pass draws noise."""
        has_noise = self.noise is not None or self.magnitude is not None
        return has_noise and (self.training or self.sample_in_eval)

    def _affine(self, x, weight):
        raise NotImplementedError

    def forward(self, x):
        if not self.noise_active:
            y = self._affine(x, self.weight)
        else:
            if self.noise is None:
                y = self._affine(x, self.weight)
            elif self.on == "activation":
                y = self._affine(self._perturb_activation(x), self.weight)
            else:
                y = self._weight_noise(x)
            if self.magnitude is not None:
                y = y * self._magnitude_noise(y)
        if self.bias is not None:
            y = y + self._bias_view(self.bias)
        return y

    def _perturb_activation(self, x):
        if self.noise == "gaussian":
            eps = gaussian_dropout_distribution(self.alpha, dtype=x.dtype, device=x.device)
            return x * eps.rsample(x.shape)
        # Direction noise on each example's input x = ||x|| x_norm (thesis 3.5).
        batch_shape = x.shape[: x.dim() - self.example_dims]
        flat = x.reshape(batch_shape + (-1,))
        if flat.shape[-1] < 2:
            raise ValueError(
                f"direction noise {self.noise!r} on activations needs inputs of dimension >= 2 "
                f"per example, got {flat.shape[-1]}; use noise='gaussian' on this layer"
            )
        norm = flat.norm(dim=-1, keepdim=True)
        # An all-zero input has no direction: rotate an arbitrary unit vector and scale by 0.
        zero = norm == 0
        basis = torch.zeros_like(flat)
        basis[..., 0] = 1
        loc = torch.where(zero, basis, flat / norm.clamp_min(torch.finfo(x.dtype).tiny))
        perturbed = direction_distribution(self.noise, loc, self.alpha).rsample()
        return (norm * perturbed).reshape(x.shape)

    def _weight_noise(self, x):
        u = self.direction
        if self.per_example and self.example_dims == 1:
            if self.noise == "gaussian":
                # Local reparameterization (thesis 3.4, case 1): exact for independent
                # per-example weight noise W * E, E_jk ~ N(1, alpha).
                weight = self.weight
                mean = F.linear(x, weight)
                var = F.linear(x.square(), weight.square()).mul(self.alpha)
                std = var.clamp_min(torch.finfo(x.dtype).tiny).sqrt()
                return mean + std * torch.randn_like(mean)
            if self.noise in PLANE_ROTATION_NOISES:
                return self.g * _rotated_projection(x, u, self.noise, self.alpha)
        if self.noise == "gaussian":
            eps = gaussian_dropout_distribution(self.alpha, dtype=u.dtype, device=u.device)
            return self._affine(x, self.weight * eps.rsample(self.v.shape))
        u_noisy = direction_distribution(self.noise, u, self.alpha).rsample()
        return self._affine(x, (self.g[:, None] * u_noisy).view_as(self.v))

    def _magnitude_noise(self, y):
        out_shape = y.shape[: y.dim() - self.example_dims + 1]
        if not (self.per_example or self.on == "activation"):
            out_shape = out_shape[-1:]
        noise = magnitude_distribution(
            self.magnitude, self.magnitude_alpha, dtype=y.dtype, device=y.device
        )
        return self._unit_view(noise.rsample(out_shape))

    def extra_repr(self):
        parts = [f"noise={self.noise!r}", f"on={self.on!r}"]
        if self.noise is not None:
            parts.append(f"alpha={self.alpha:g}")
        if self.magnitude is not None:
            parts += [f"magnitude={self.magnitude!r}", f"magnitude_alpha={self.magnitude_alpha:g}"]
        if self.on == "weight":
            parts.append(f"per_example={self.per_example}")
        return ", ".join(parts)


def _rotated_projection(x, u, noise, alpha):
    """``x . u_hat_ij`` for ``u_hat_ij`` a plane-rotation draw around ``u_j``, independent per
    example ``i`` and unit ``j``, without forming ``u_hat`` (docs/MATH.md section 5).

    :param torch.Tensor x: inputs, shape ``(..., n)``.
    :param torch.Tensor u: unit directions, shape ``(out, n)``.
    :returns: shape ``(..., out)``.
    """
    ux = F.linear(x, u)
    angle = angle_distribution(noise, alpha, u.shape[-1], dtype=x.dtype, device=x.device)
    eps = angle.rsample(ux.shape)
    # phi . x for phi uniform on the tangent sphere at u, per example (shared with the
    # DirMag layers).
    phi_x = tangent_term(x, ux)
    return torch.cos(eps) * ux + torch.sin(eps) * phi_x


class NoisyLinear(NoisyWeightNorm):
    """Weight-normalized dense layer ``y = g (u . x) + b`` with direction/magnitude noise.

    Usage::

        layer = NoisyLinear(784, 1024, noise="rotation_beta", alpha=0.1,
                            magnitude="normal", magnitude_alpha=0.1)
        y = layer(x)  # noisy in train() mode, deterministic in eval() mode

    :param int in_features: input size ``n`` (the dimension of each direction ``u_j``).
    :param int out_features: number of units.
    :param bool bias: learn an additive bias.

    The keyword arguments ``noise``, ``alpha``, ``magnitude``, ``magnitude_alpha``, ``on``
    and ``per_example`` are those of :class:`NoisyWeightNorm`.
    """

    example_dims = 1

    def __init__(self, in_features, out_features, bias=True, **noise_kwargs):
        check_positive_int(in_features=in_features, out_features=out_features)
        self.in_features = in_features
        self.out_features = out_features
        super().__init__((out_features, in_features), bias, **noise_kwargs)

    def _affine(self, x, weight):
        return F.linear(x, weight)

    def extra_repr(self):
        head = f"in_features={self.in_features}, out_features={self.out_features}, "
        return head + f"bias={self.bias is not None}, " + super().extra_repr()


class NoisyConv2d(NoisyWeightNorm):
    """Weight-normalized 2-D convolution with direction/magnitude noise.

    Each output channel's filter (``in_channels * kh * kw`` numbers) is one weight vector
    ``g_j u_j``. Activation direction noise perturbs each example's whole input
    ``C x H x W`` as one vector; weight direction noise is one draw per mini-batch.

    :param int in_channels: input channels.
    :param int out_channels: output channels (units).
    :param kernel_size: int or pair.
    :param stride: as in :class:`torch.nn.Conv2d`.
    :param padding: as in :class:`torch.nn.Conv2d`.
    :param dilation: as in :class:`torch.nn.Conv2d`.
    :param bool bias: learn an additive bias.

    The keyword arguments ``noise``, ``alpha``, ``magnitude``, ``magnitude_alpha``, ``on``
    and ``per_example`` are those of :class:`NoisyWeightNorm`.
    """

    example_dims = 3

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias=True,
        **noise_kwargs,
    ):
        check_positive_int(in_channels=in_channels, out_channels=out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = int_pair(kernel_size, "kernel_size")
        self.stride = int_pair(stride, "stride")
        self.padding = int_pair(padding, "padding", allow_zero=True)
        self.dilation = int_pair(dilation, "dilation")
        shape = (out_channels, in_channels) + self.kernel_size
        super().__init__(shape, bias, **noise_kwargs)

    def _affine(self, x, weight):
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        head = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
        )
        return head + super().extra_repr()
