"""The weight-norm base shared by the DirMag and the Noisy layers (pyro_dirmag.nn.weight_norm)."""

import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from pyro_dirmag.nn import DirMagConv2d, DirMagLinear, NoisyConv2d, NoisyLinear
from pyro_dirmag.nn._direction import PERP_FLOOR, tangent_term
from pyro_dirmag.nn.noisy_layers import _rotated_projection
from pyro_dirmag.nn.weight_norm import (
    NORM_FLOOR,
    WeightNormLayer,
    check_positive_int,
    int_pair,
    unit_directions,
)


class _Plain(WeightNormLayer):
    """The base alone, with a parameter magnitude (as the Noisy layers store it)."""

    def __init__(self, weight_shape, bias=True, unit_dim=0):
        super().__init__(weight_shape, bias, unit_dim=unit_dim)
        self.g = nn.Parameter(self.unit_norms(self.v.detach()))

    def _reset_magnitude(self, norms):
        self.g.copy_(norms)


@pytest.mark.parametrize(
    "shape, unit_dim, units, fan_in",
    [((5, 3), 0, 5, 3), ((5, 3), 1, 3, 3), ((4, 2, 3, 3), 0, 4, 18), ((1, 2), 0, 1, 2)],
    ids=str,
)
def test_shapes(shape, unit_dim, units, fan_in):
    layer = _Plain(shape, unit_dim=unit_dim)
    assert layer.v.shape == shape and layer.bias.shape == (shape[0],)
    assert layer.num_units == units and layer.fan_in == fan_in
    u = layer.directions()
    assert u.shape == shape
    norm_dims = tuple(d for d in range(len(shape)) if d != unit_dim)
    norms = torch.linalg.vector_norm(u, dim=norm_dims)
    assert norms.shape == (units,)
    torch.testing.assert_close(norms, torch.ones(units))
    assert layer.unit_norms(layer.v).shape == (units,)
    # w = g u reproduces v at the start (g = ||v||), in either unit layout
    w = layer.g.reshape(layer._weight_unit_shape()) * u
    torch.testing.assert_close(w, layer.v.detach())
    assert _Plain(shape, bias=False).bias is None


def test_bad_weight_shapes():
    with pytest.raises(ValueError, match="weight_shape"):
        _Plain((5,))
    with pytest.raises(ValueError, match="unit_dim"):
        _Plain((4, 2, 3, 3), unit_dim=1)
    with pytest.raises(ValueError, match="unit_dim"):
        _Plain((4, 2), unit_dim=2)


def _families(torch_layer):
    """Constructors of the layers of both families shaped as ``torch_layer``."""
    if isinstance(torch_layer, nn.Linear):
        args = (torch_layer.in_features, torch_layer.out_features)
        return [
            lambda: NoisyLinear(*args),
            lambda: DirMagLinear(*args),
            lambda: DirMagLinear(*args, reverse=True),
        ]
    args = (torch_layer.in_channels, torch_layer.out_channels, torch_layer.kernel_size)
    return [lambda: NoisyConv2d(*args), lambda: DirMagConv2d(*args)]


@pytest.mark.parametrize("make", [lambda: nn.Linear(7, 5), lambda: nn.Conv2d(3, 4, (3, 2))])
def test_init_is_torchs_for_both_families(make):
    # Salimans & Kingma's init without the data-dependent step: v and the bias as torch's
    # own layer draws them (same random numbers, same order), g = ||v|| so w = v.
    torch.manual_seed(3)
    reference = make()
    for build in _families(reference):
        torch.manual_seed(3)
        layer = build()
        assert torch.equal(layer.v.detach(), reference.weight.detach()), type(layer)
        assert torch.equal(layer.bias.detach(), reference.bias.detach()), type(layer)
        norms = torch.linalg.vector_norm(reference.weight.detach(), dim=layer._norm_dims())
        stored = layer.g if isinstance(layer, (NoisyLinear, NoisyConv2d)) else layer.magnitude_init
        torch.testing.assert_close(stored.detach(), norms)


def test_init_statistics():
    # v and the bias uniform on [-1/sqrt(n), 1/sqrt(n)], n the fan-in, for a conv layer whose
    # fan-in (in_channels * kh * kw) differs from in_channels.
    torch.manual_seed(0)
    layer = _Plain((300, 6, 3, 3))
    bound = 1 / math.sqrt(54)
    law = scipy.stats.uniform(-bound, 2 * bound)
    v = layer.v.detach().flatten().double().numpy()
    assert abs(v).max() <= bound
    assert scipy.stats.kstest(v, law.cdf).pvalue > 1e-3
    assert scipy.stats.kstest(layer.bias.detach().double().numpy(), law.cdf).pvalue > 1e-3
    # not the bound of the fan-in of one channel (1/3): the test can fail
    wrong = scipy.stats.uniform(-1 / 3, 2 / 3)
    assert scipy.stats.kstest(v, wrong.cdf).pvalue < 1e-6


def test_reset_parameters_redraws_and_restarts_magnitudes():
    noisy = NoisyConv2d(2, 3, 3)
    dirmag = DirMagLinear(4, 3, magnitude_noise=False)
    for layer in (noisy, dirmag):
        before = layer.v.detach().clone()
        with torch.no_grad():
            layer.v.mul_(2.0)
        layer.reset_parameters()
        assert not torch.equal(layer.v.detach(), before)
        assert (layer.v.detach().abs() <= 1 / math.sqrt(layer.fan_in)).all()
    torch.testing.assert_close(noisy.weight.detach(), noisy.v.detach())
    norms = dirmag.v.detach().norm(dim=1)
    torch.testing.assert_close(dirmag.magnitude_init, norms)
    torch.testing.assert_close(dirmag.magnitude.detach(), norms)


def test_both_families_share_one_normalization():
    v = torch.randn(5, 2, 3, 3)
    noisy, dirmag = NoisyConv2d(2, 5, 3), DirMagConv2d(2, 5, 3)
    with torch.no_grad():
        noisy.v.copy_(v)
        dirmag.v.copy_(v)
    assert torch.equal(noisy.direction, dirmag.directions().flatten(1))
    assert torch.equal(noisy.weight, noisy.g[:, None, None, None] * dirmag.directions())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_norm_floor(dtype):
    # Rows of norm 1, below the floor, and 0: u = v / max(||v||, floor), as
    # F.normalize (eps = the floor) computes it, with the same gradient, never NaN.
    v = torch.tensor([[3.0, 4.0], [3e-14, -4e-14], [0.0, 0.0]], dtype=dtype, requires_grad=True)
    weight = torch.tensor([[0.5, -2.0], [1.5, 0.25], [-1.0, 3.0]], dtype=dtype)
    u = unit_directions(v, (1,))
    (grad,) = torch.autograd.grad((u * weight).sum(), v)
    expected = F.normalize(v, dim=1, eps=NORM_FLOOR)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), v)
    torch.testing.assert_close(u, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert torch.equal(u[2], torch.zeros(2, dtype=dtype))
    torch.testing.assert_close(grad[2], weight[2] / NORM_FLOOR)


def test_zero_unit_gives_bias_not_nan():
    for layer in (
        DirMagLinear(4, 3, magnitude_noise=False, direction_noise=False),
        NoisyLinear(4, 3),
    ):
        with torch.no_grad():
            layer.v[1] = 0.0
        y = layer(torch.randn(6, 4))
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y[:, 1], layer.bias.detach()[1].expand(6))


def test_perp_floor_is_shared_and_stops_the_gradient():
    # x parallel to u_0 up to 1e-7: ||x_perp||^2 = 1e-14 lies under the shared floor
    # (1e-12), so phi . x is the constant sqrt(floor) * t there, with no gradient through
    # the square root. Without it the weights' gradient would carry
    # d||x_perp|| / d(u . x) = -(u . x) / ||x_perp||, about 3e7 here.
    torch.manual_seed(0)
    u = F.normalize(torch.randn(3, 8, dtype=torch.float64), dim=-1)
    e = torch.randn(8, dtype=torch.float64)
    e = F.normalize(e - (e @ u[0]) * u[0], dim=0)
    x = (3.0 * u[0] + 1e-7 * e).expand(200, 8)
    u.requires_grad_()
    term = tangent_term(x, F.linear(x, u))
    assert term[:, 0].abs().max() <= math.sqrt(PERP_FLOOR)
    (grad,) = torch.autograd.grad(term[:, 0].mean(), u)
    assert torch.equal(grad, torch.zeros_like(grad))
    # the Noisy layers' per-example rotation uses that same floor: its gradient is that of
    # cos(eps) (u . x) alone, at most |x| = 3 per coordinate
    _rotated_projection(x, u, "rotation_normal", 0.3)[:, 0].mean().backward()
    assert u.grad.abs().max() <= 3.0


@pytest.mark.parametrize(
    "value, allow_zero, expected",
    [(3, False, (3, 3)), ((1, 2), False, (1, 2)), ([2, 5], False, (2, 5)), (0, True, (0, 0))],
    ids=str,
)
def test_int_pair(value, allow_zero, expected):
    assert int_pair(value, "stride", allow_zero=allow_zero) == expected


@pytest.mark.parametrize(
    "value, allow_zero",
    [(0, False), (-1, True), ((1, 2, 3), False), ((2,), False), (True, False), ((1, True), False)]
    + [(2.5, False), ((1, 2.0), False), ("3", False), ("33", False), (None, False)],
    ids=repr,
)
def test_int_pair_errors_name_the_argument(value, allow_zero):
    with pytest.raises(ValueError, match=r"Expected parameter dilation \(.*\) to be an int or a"):
        int_pair(value, "dilation", allow_zero=allow_zero)


@pytest.mark.parametrize("conv", [DirMagConv2d, NoisyConv2d], ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(kernel_size=0), "kernel_size"),
        (dict(kernel_size=(3, 3, 3)), "kernel_size"),
        (dict(kernel_size=3, stride=0), "stride"),
        (dict(kernel_size=3, padding=-1), "padding"),
        (dict(kernel_size=3, padding=(1, 0.5)), "padding"),
        (dict(kernel_size=3, dilation=(1, 0)), "dilation"),
    ],
    ids=str,
)
def test_conv_arguments_named_in_both_families(conv, kwargs, name):
    with pytest.raises(ValueError, match=f"Expected parameter {name} "):
        conv(2, 3, **kwargs)


@pytest.mark.parametrize("make", [DirMagLinear, NoisyLinear, DirMagConv2d, NoisyConv2d])
def test_sizes_named_in_both_families(make):
    first, second = ("in_features", "out_features")
    if make in (DirMagConv2d, NoisyConv2d):
        first, second = ("in_channels", "out_channels")
        conv = make
        make = lambda i, o: conv(i, o, 3)  # noqa: E731
    with pytest.raises(ValueError, match=f"{first} must be a positive int, got 0"):
        make(0, 3)
    with pytest.raises(ValueError, match=f"{second} must be a positive int, got True"):
        make(2, True)


def test_check_positive_int():
    check_positive_int(a=1, b=7)
    with pytest.raises(ValueError, match="b must be a positive int, got 2.0"):
        check_positive_int(a=1, b=2.0)


def test_conv_pairs_are_stored_and_used():
    layer = NoisyConv2d(2, 3, 3, stride=2, padding=(1, 0), dilation=1)
    assert (layer.stride, layer.padding, layer.dilation) == ((2, 2), (1, 0), (1, 1))
    x = torch.randn(1, 2, 9, 9)
    assert layer.eval()(x).shape == (1, 3, 5, 4)
