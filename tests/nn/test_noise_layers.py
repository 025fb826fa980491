import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from pyro_dirmag.nn import NOISES, NoisyConv2d, NoisyLinear, noisy_mlp
from pyro_dirmag.nn.noise import PLANE_ROTATION_NOISES, direction_distribution
from pyro_dirmag.nn.noisy_layers import _rotated_projection

CONFIGS = [
    dict(noise=noise, alpha=0.1, on=on) for on in ("activation", "weight") for noise in NOISES
] + [
    dict(magnitude="normal", magnitude_alpha=0.2),
    dict(magnitude="gamma", magnitude_alpha=0.2),
    dict(noise="rotation_beta", alpha=0.1, magnitude="gamma", magnitude_alpha=0.2),
    dict(noise="rotation_normal", alpha=0.1, magnitude="normal", magnitude_alpha=0.2, on="weight"),
    dict(noise="tangent", alpha=0.1, on="weight", per_example=False),
    dict(noise="rotation_normal", alpha=0.1, on="weight", per_example=False),
    dict(noise="gaussian", alpha=0.1, on="weight", per_example=False),
]


def _id(config):
    return ",".join(f"{k}={v}" for k, v in config.items())


def _layers(config):
    return [NoisyLinear(6, 5, **config), NoisyConv2d(2, 3, 3, padding=1, **config)]


def _input(layer, batch=4):
    return torch.randn(batch, 6) if isinstance(layer, NoisyLinear) else torch.randn(batch, 2, 5, 5)


def _mean_forward(layer, x):
    if isinstance(layer, NoisyLinear):
        return F.linear(x, layer.weight, layer.bias)
    return F.conv2d(x, layer.weight, layer.bias, padding=1)


def test_weight_normalization():
    layer = NoisyLinear(4, 3)
    # At initialization g = ||v||, so w = v.
    assert torch.allclose(layer.weight, layer.v.detach(), atol=1e-6)
    with torch.no_grad():
        layer.g.mul_(torch.tensor([1.0, 2.0, -3.0]))
    w = layer.weight
    assert torch.allclose(w.norm(dim=1), layer.g.abs(), atol=1e-6)
    assert torch.allclose(F.normalize(w, dim=1) * layer.g.sign()[:, None], layer.direction)


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_eval_is_deterministic_mean_network(config):
    for layer in _layers(config):
        x = _input(layer)
        layer.eval()
        assert not layer.noise_active
        y = layer(x)
        assert torch.equal(y, layer(x))
        assert torch.allclose(y, _mean_forward(layer, x), atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_train_is_noisy_and_differentiable(config):
    for layer in _layers(config):
        x = _input(layer)
        layer.train()
        assert layer.noise_active
        y1, y2 = layer(x), layer(x)
        assert y1.shape == _mean_forward(layer, x).shape
        assert not torch.allclose(y1, y2)
        (y1.square().sum() + y2.sum()).backward()
        for p in layer.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all()


def test_no_noise_layer_is_plain_weight_norm():
    layer = NoisyLinear(6, 5).train()
    x = torch.randn(4, 6)
    assert not layer.noise_active
    assert torch.allclose(layer(x), _mean_forward(layer, x), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise="dropout", alpha=0.1), "allowed values: gaussian, projected"),
        (dict(noise="gaussian", alpha=0.0), "alpha must be a finite number > 0"),
        (dict(noise="gaussian", alpha=-1.0), "alpha must be a finite number > 0"),
        (dict(noise="gaussian"), "alpha must be a finite number > 0"),
        (dict(alpha=0.1), "alpha was given without a noise"),
        (dict(magnitude="lognormal", magnitude_alpha=0.1), "allowed values: normal, gamma"),
        (dict(magnitude="normal", magnitude_alpha=0.0), "magnitude_alpha must be"),
        (dict(magnitude_alpha=0.1), "without a magnitude noise"),
        (dict(noise="gaussian", alpha=0.1, on="output"), "allowed values: activation, weight"),
        (dict(noise="rotation_beta", alpha=2.5), "pi\\^2/4"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoisyLinear(6, 5, **kwargs)


def test_direction_noise_needs_two_dimensions():
    with pytest.raises(ValueError, match="fan-in of at least 2.*noise='gaussian'"):
        NoisyLinear(1, 5, noise="rotation_normal", alpha=0.1, on="weight")
    with pytest.raises(ValueError, match="fan-in of at least 2"):
        NoisyConv2d(1, 2, 1, noise="tangent", alpha=0.1, on="weight")
    layer = NoisyLinear(1, 5, noise="projected", alpha=0.1).train()
    with pytest.raises(ValueError, match="dimension >= 2 per example.*noise='gaussian'"):
        layer(torch.randn(3, 1))
    # Gaussian dropout and magnitude noise apply to any layer.
    NoisyLinear(1, 5, noise="gaussian", alpha=0.1, magnitude="gamma", magnitude_alpha=0.1)(
        torch.randn(3, 1)
    )


def _ks(a, b):
    return scipy.stats.ks_2samp(a.numpy(), b.numpy()).pvalue


@pytest.mark.parametrize("noise", PLANE_ROTATION_NOISES)
@pytest.mark.parametrize("n", [2, 3, 6, 40])
def test_rotated_projection_matches_explicit_rotation(noise, n):
    # x . u_hat with u_hat drawn from the library's law, against the one-matmul identity.
    torch.manual_seed(1)
    alpha = 0.3
    u = F.normalize(torch.randn(2, n, dtype=torch.float64), dim=-1)
    x = torch.randn(n, dtype=torch.float64)
    x[0] = 3.0  # not orthogonal to u, so both terms matter
    num = 20000
    explicit = direction_distribution(noise, u, alpha).sample((num,)) @ x  # (num, 2)
    identity = _rotated_projection(x.expand(num, n), u, noise, alpha)
    for j in range(2):
        assert _ks(explicit[:, j], identity[:, j]) > 1e-3
    # The test can fail: an identity that ignored the tangent component would.
    ux = u @ x
    angle = direction_distribution(noise, u, alpha).angle.sample((num,))
    wrong = torch.cos(angle) * ux
    assert _ks(explicit[:, 0], wrong[:, 0]) < 1e-6


def test_rotated_projection_independent_per_example():
    u = F.normalize(torch.randn(3, 10), dim=-1)
    x = torch.randn(1, 10).expand(5000, 10)
    y = _rotated_projection(x, u, "rotation_normal", 0.2)
    corr = torch.corrcoef(y[:, :2].T)[0, 1]
    # Rows are the same input: one shared draw would make all rows equal.
    assert y[:, 0].std() > 0.01
    assert abs(corr) < 0.05


def test_weight_gaussian_local_reparameterization():
    # y_j ~ N(x . w_j, alpha sum_k x_k^2 w_jk^2) per example (thesis 3.4, case 1).
    alpha = 0.5
    layer = NoisyLinear(6, 3, bias=False, noise="gaussian", alpha=alpha, on="weight").train()
    x = torch.randn(6, dtype=torch.float64)
    layer = layer.double()
    num = 20000
    with torch.no_grad():
        y = layer(x.expand(num, 6))
        w = layer.weight
        explicit = (w * (1 + math.sqrt(alpha) * torch.randn(num, 3, 6, dtype=w.dtype))) @ x
    for j in range(3):
        assert _ks(y[:, j], explicit[:, j]) > 1e-3
    shared = NoisyLinear(6, 3, noise="gaussian", alpha=alpha, on="weight", per_example=False)
    with torch.no_grad():
        y = shared.train()(torch.randn(1, 6).expand(4, 6))
    assert torch.allclose(y, y[:1].expand(4, 3))


@pytest.mark.parametrize("magnitude, alpha", [("normal", 0.3), ("gamma", 0.3)])
def test_magnitude_noise_per_example_and_unit(magnitude, alpha):
    layer = NoisyLinear(6, 4, magnitude=magnitude, magnitude_alpha=alpha).double().train()
    x = torch.randn(1, 6, dtype=torch.float64).expand(20000, 6)
    with torch.no_grad():
        ratio = (layer(x) - layer.bias) / F.linear(x[:1], layer.weight)
    law = (
        scipy.stats.norm(1, math.sqrt(alpha))
        if magnitude == "normal"
        else scipy.stats.gamma(1 / alpha, scale=alpha)
    )
    for j in range(4):
        assert scipy.stats.kstest(ratio[:, j].numpy(), law.cdf).pvalue > 1e-3
    assert abs(torch.corrcoef(ratio[:, :2].T)[0, 1]) < 0.05


def test_conv_magnitude_noise_shared_across_positions():
    layer = NoisyConv2d(2, 3, 3, padding=1, magnitude="normal", magnitude_alpha=0.3).train()
    layer.bias.data.zero_()
    x = torch.rand(2, 2, 6, 6) + 0.5
    with torch.no_grad():
        ratio = layer(x) / F.conv2d(x, layer.weight, padding=1)
    flat = ratio.flatten(2)
    assert torch.allclose(flat, flat[..., :1].expand_as(flat), atol=1e-4)
    assert not torch.allclose(ratio[0], ratio[1])


@pytest.mark.parametrize("noise", ["projected", "tangent", "rotation_normal", "rotation_beta"])
def test_activation_direction_noise(noise):
    layer = NoisyLinear(50, 3, noise=noise, alpha=0.05).double().train()
    x = torch.randn(1, 50, dtype=torch.float64).expand(4000, 50).clone()
    x[0] = 0.0  # no direction: must stay zero, without NaN
    with torch.no_grad():
        z = layer._perturb_activation(x)
    assert torch.isfinite(z).all() and torch.equal(z[0], torch.zeros(50, dtype=z.dtype))
    z, x = z[1:], x[1:]
    # The norm is kept and the direction is a draw from the noise law around x / ||x||.
    assert torch.allclose(z.norm(dim=-1), x.norm(dim=-1))
    loc = x[0] / x[0].norm()
    reference = direction_distribution(noise, loc, 0.05).sample((len(z),))
    assert _ks((z / z.norm(dim=-1, keepdim=True)) @ loc, reference @ loc) > 1e-3
    # Independent per example.
    assert not torch.allclose(z[0], z[1])


def test_activation_gaussian_dropout():
    alpha = 0.4
    layer = NoisyConv2d(2, 3, 3, noise="gaussian", alpha=alpha).train()
    x = torch.rand(400, 2, 5, 5) + 0.1
    ratio = layer._perturb_activation(x) / x
    law = scipy.stats.norm(1, alpha**0.5)
    assert scipy.stats.kstest(ratio.flatten().numpy(), law.cdf).pvalue > 1e-3


def test_conv_activation_direction_noise_keeps_example_norm():
    layer = NoisyConv2d(2, 3, 3, noise="rotation_beta", alpha=0.2).train()
    x = torch.randn(4, 2, 5, 5)
    z = layer._perturb_activation(x)
    assert z.shape == x.shape
    assert torch.allclose(z.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-5)


def test_weight_direction_noise_per_batch_when_asked():
    x = torch.randn(1, 8).expand(3, 8)
    for noise in ("projected", "tangent", "rotation_beta"):
        layer = NoisyLinear(8, 4, noise=noise, alpha=0.1, on="weight", per_example=False).train()
        y = layer(x)
        assert torch.allclose(y, y[:1].expand_as(y))
    layer = NoisyLinear(8, 4, noise="rotation_beta", alpha=0.1, on="weight").train()
    y = layer(x)
    assert not torch.allclose(y[0], y[1])


def test_unbatched_and_extra_batch_dims():
    layer = NoisyLinear(6, 5, noise="rotation_normal", alpha=0.1, on="weight").train()
    assert layer(torch.randn(6)).shape == (5,)
    assert layer(torch.randn(2, 3, 6)).shape == (2, 3, 5)
    layer = NoisyLinear(6, 5, noise="tangent", alpha=0.1).train()
    assert layer(torch.randn(2, 3, 6)).shape == (2, 3, 5)


def test_noisy_mlp():
    model = noisy_mlp(
        12, (8, 7), 3, noise="rotation_beta", alpha=0.1, magnitude="gamma", magnitude_alpha=0.1
    )
    layers = [m for m in model if isinstance(m, NoisyLinear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(12, 8), (8, 7), (7, 3)]
    assert all(m.noise == "rotation_beta" and m.magnitude == "gamma" for m in layers)
    assert model(torch.randn(5, 12)).shape == (5, 3)
    assert "rotation_beta" in repr(model)
