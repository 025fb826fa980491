r"""
The weight-normalized parametrization shared by both layer families: the Bayesian
DirMag layers (:mod:`pyro_dirmag.nn.dirmag`) and the fixed-noise layers
(:mod:`pyro_dirmag.nn.noisy_layers`).

Unit :math:`j` of a layer has the weight vector

.. math::

    w_j = g_j\, u_j, \qquad u_j = \frac{v_j}{\max(\|v_j\|,\ \delta)},
    \qquad \delta = 10^{-12},

with :math:`v` the direction parameter (point estimate), :math:`g` the magnitude (a
parameter or a latent variable: the families differ there and store it themselves)
and :math:`\delta` a floor that maps an all-zero :math:`v_j` to :math:`u_j = 0`
instead of a NaN (the floor of :func:`torch.nn.functional.normalize`). A unit is an
output unit (:math:`v_j` a row, or one output filter of a convolution), or with
``unit_dim=1`` an input feature of a dense layer (:math:`v_j` a column).

*Initialization* (Salimans and Kingma [1], section 2.1 without the data-dependent
step): :math:`v` as torch initializes a dense or convolutional weight
(:func:`torch.nn.init.kaiming_uniform_` with ``a = sqrt(5)``, i.e.
:math:`\mathcal U(-1/\sqrt{n}, 1/\sqrt{n})`, :math:`n` the fan-in), the bias
:math:`\mathcal U(-1/\sqrt{n}, 1/\sqrt{n})` and :math:`g_j = \|v_j\|`, so that
:math:`w = v` at the start and the layer begins as torch's own.

**References:**

[1] T. Salimans, D. P. Kingma (2016) "Weight Normalization: A Simple
    Reparameterization to Accelerate Training of Deep Neural Networks"
"""

import math

import torch
from torch import nn

from .._autograd import first_order_only

__all__ = ["NORM_FLOOR", "WeightNormLayer", "check_positive_int", "int_pair", "unit_directions"]

#: Lower bound :math:`\delta` on :math:`\|v_j\|` in :func:`unit_directions`.
NORM_FLOOR = 1e-12


class _Normalize(torch.autograd.Function):
    r"""``u = v / max(||v||, NORM_FLOOR)`` over ``dims``, with the backward
    :math:`\bar v = (\bar u - u\, \langle u, \bar u\rangle) / \|v\|` (and
    :math:`\bar u / \delta` where the floor holds, the norm then being a constant):
    three passes over the weight where autograd's norm and division take seven."""

    @staticmethod
    def forward(ctx, v, dims):
        norm = torch.linalg.vector_norm(v, dim=dims, keepdim=True)
        floored = norm < NORM_FLOOR
        inv = norm.clamp_min_(NORM_FLOOR).reciprocal_()
        u = v * inv
        ctx.dims = dims
        ctx.save_for_backward(u, inv, floored)
        return u

    @staticmethod
    @first_order_only
    def backward(ctx, grad):
        u, inv, floored = ctx.saved_tensors
        # one value per unit: the mask costs nothing next to the passes over the weight
        radial = (grad * u).sum(ctx.dims, keepdim=True).masked_fill_(floored, 0.0)
        return grad.addcmul(u, radial, value=-1.0).mul_(inv), None


def unit_directions(v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    r"""
    :math:`v / \max(\|v\|, \delta)`, the norm taken over ``dims``, with a short backward.

    :param torch.Tensor v: the direction parameter.
    :param tuple dims: the dimensions of one unit's vector.
    :rtype: torch.Tensor
    """
    return _Normalize.apply(v, tuple(dims))


def int_pair(value, name: str, allow_zero: bool = False) -> tuple[int, int]:
    """
    A convolution argument as a pair: ``(value, value)`` for an int, else ``tuple(value)``,
    checked to be two ints at least 1 (at least 0 with ``allow_zero``).

    :param value: an int or a pair of ints.
    :param str name: the argument's name, for the error message.
    :raises ValueError: naming ``name`` otherwise (bools, floats, strings and pairs of
        the wrong length included).
    """
    low = 0 if allow_zero else 1
    if _is_int(value):
        pair = (value, value)
    elif isinstance(value, (tuple, list, torch.Size)):
        pair = tuple(value)
    else:
        pair = None
    if pair is None or len(pair) != 2 or not all(_is_int(v) and v >= low for v in pair):
        raise ValueError(
            f"Expected parameter {name} ({value!r}) to be an int or a pair of ints >= {low}"
        )
    return pair


def check_positive_int(**kwargs) -> None:
    """
    Checks that every keyword argument is a positive int (not a bool).

    :raises ValueError: naming the first argument that is not.
    """
    for name, value in kwargs.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class WeightNormLayer(nn.Module):
    r"""
    The direction parameter ``v``, the bias and the normalization of a
    weight-normalized layer (see the module notes); subclasses store the magnitude
    :math:`g` and supply the linear map.

    It owns ``v`` (shape ``weight_shape``, the layout of torch's weight) and ``bias``
    (shape ``(weight_shape[0],)`` or ``None``) and initializes both on construction;
    a subclass then sets its magnitudes to :meth:`unit_norms` of ``v`` and implements
    :meth:`_reset_magnitude` so that :meth:`reset_parameters` restarts the whole layer.

    :param tuple weight_shape: shape of ``v``, output units first (as torch's weight).
    :param bool bias: whether to learn an additive bias (one per output unit).
    :param int unit_dim: ``0``: a unit is an output unit (a row of ``v``, or a filter);
        ``1``: a unit is an input feature (a column of a 2-D ``v``).
    """

    def __init__(self, weight_shape, bias: bool = True, *, unit_dim: int = 0) -> None:
        super().__init__()
        weight_shape = tuple(weight_shape)
        if len(weight_shape) < 2:
            raise ValueError(f"weight_shape must have at least 2 dimensions, got {weight_shape}")
        if unit_dim not in (0, 1) or (unit_dim == 1 and len(weight_shape) != 2):
            raise ValueError(
                f"unit_dim must be 0, or 1 for a 2-D weight, got {unit_dim!r} for a weight of "
                f"shape {weight_shape}"
            )
        # Shapes as plain attributes: a PyroModule's parameter access goes through the
        # Pyro stack, so forward passes read ``self.v`` once and the shapes from these.
        self._weight_shape = weight_shape
        self._ndim = len(weight_shape)
        self._unit_dim = unit_dim
        self.v = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.empty(weight_shape[0])) if bias else None
        self._init_direction_and_bias()

    @property
    def fan_in(self) -> int:
        """Inputs of one output unit: ``in_features``, or ``in_channels * kh * kw``."""
        return math.prod(self._weight_shape[1:])

    @property
    def num_units(self) -> int:
        """Number of units, each with its own magnitude."""
        return self._weight_shape[self._unit_dim]

    @torch.no_grad()
    def _init_direction_and_bias(self):
        # torch's default init of nn.Linear / nn.Conv2d, in the same order (so the same
        # random numbers give the same start as the torch layer)
        nn.init.kaiming_uniform_(self.v, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draws ``v`` and the bias again and sets the magnitudes to ``||v_j||`` (``w = v``)."""
        self._init_direction_and_bias()
        self._reset_magnitude(self.unit_norms(self.v))

    def _reset_magnitude(self, norms):
        """Sets the subclass's magnitudes (parameter, buffer) to ``norms``."""
        raise NotImplementedError

    def _norm_dims(self):
        return tuple(d for d in range(self._ndim) if d != self._unit_dim)

    def unit_norms(self, weight: torch.Tensor) -> torch.Tensor:
        r""":math:`\|w_j\|` of every unit of a tensor laid out as ``v``, shape ``(units,)``."""
        return torch.linalg.vector_norm(weight, dim=self._norm_dims())

    def directions(self, v: torch.Tensor | None = None) -> torch.Tensor:
        r"""
        Unit directions :math:`u_j = v_j / \max(\|v_j\|, \delta)` in the layout of ``v``.

        :param torch.Tensor v: the direction parameter (default ``self.v``; pass the
            value already read to save a second parameter access in a Pyro model).
        """
        v = self.v if v is None else v
        return unit_directions(v, self._norm_dims())

    def _weight_unit_shape(self):
        """Shape that makes per-unit values ``(units,)`` broadcast against ``v``."""
        if self._unit_dim == 1:
            return (1, -1)
        return (-1,) + (1,) * (self._ndim - 1)

    def _unit_view(self, t):
        """Reshapes per-unit values ``(..., units)`` to broadcast against the output
        (units of input features multiply the layer's input and are returned as is)."""
        if self._unit_dim == 1:
            return t
        return t.reshape(t.shape + (1,) * (self._ndim - 2))

    def _bias_view(self, bias):
        """The bias shaped to broadcast against the output ``(..., out, *spatial)``."""
        return bias.reshape((-1,) + (1,) * (self._ndim - 2))
