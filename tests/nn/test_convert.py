import pyro
import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from pyro_dirmag.infer import DirMagGuide, mean_weights, predict
from pyro_dirmag.models import deterministic_model, dirmag_model
from pyro_dirmag.nn import DirMagConv2d, DirMagLinear, load_deterministic_
from pyro_dirmag.nn.convert import plain_layers
from pyro_dirmag.nn.dirmag import dirmag_layers


def _trained(name):
    """A deterministic model whose weight-norm magnitudes and biases are not at their
    init (as after training), so the effective weight differs from the direction."""
    plain = deterministic_model(name)
    with torch.no_grad():
        for _, layer in plain_layers(plain):
            g = layer.parametrizations.weight.original0
            g.copy_(torch.rand_like(g) * 2 + 0.1)
            layer.bias.normal_()
    return plain.eval()


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_mean_network_equals_plain_network(name):
    plain = _trained(name)
    model = dirmag_model(name, 100)
    assert load_deterministic_(model, plain) is model
    x = torch.randn(9, 784)
    # A tiny angle posterior: cos E[eps] = 1 to float precision.
    guide = DirMagGuide(model, init_angle_scale=1e-6)
    expected = plain(x).softmax(-1)
    for batch_size in (4, 256):
        p = predict(model, guide, x, mode="mean", batch_size=batch_size)
        assert torch.allclose(p, expected, atol=1e-5, rtol=1e-4)
    # The plain layers' effective (weight-normalized) weight was copied, not their v.
    for (_, layer), (_, dense) in zip(dirmag_layers(model), plain_layers(plain), strict=True):
        assert torch.allclose(layer.v, dense.weight)
        assert not torch.allclose(layer.v, dense.parametrizations.weight.original1)


def test_mean_network_weights_at_the_default_guide():
    # The documented relation w_mean = cos(E[eps]) w, per unit.
    plain = _trained("lenet300")
    model = load_deterministic_(dirmag_model("lenet300", 100), plain)
    guide = DirMagGuide(model)
    x = torch.randn(5, 784)
    guide(x)
    means = guide.posterior_mean()
    weights = mean_weights(model, guide)
    for (name, layer), (_, dense) in zip(dirmag_layers(model), plain_layers(plain), strict=True):
        cos = means[f"{layer._pyro_get_fullname('angle')}"].cos()
        assert (cos > 0.999).all() and (cos < 1).all()
        assert torch.allclose(weights[name][0], cos[:, None] * dense.weight, atol=1e-6)
        assert torch.equal(weights[name][1], dense.bias)
    p = predict(model, guide, x, mode="mean")
    assert torch.allclose(p, plain(x).softmax(-1), atol=2e-3)


def test_without_direction_noise_is_exact_and_reverse_works():
    plain = _trained("lenet300")
    x = torch.randn(6, 784)
    for kwargs in ({"direction_noise": False}, {"reverse": True}):
        pyro.clear_param_store()
        model = load_deterministic_(dirmag_model("lenet300", 100, **kwargs), plain)
        scale = 0.05 if "direction_noise" in kwargs else 1e-6
        guide = DirMagGuide(model, init_angle_scale=scale)
        p = predict(model, guide, x, mode="mean")
        assert torch.allclose(p, plain(x).softmax(-1), atol=1e-5, rtol=1e-4)


def test_magnitude_parameter_layers():
    plain = _trained("lenet300")
    model = load_deterministic_(dirmag_model("lenet300", 100, magnitude_noise=False), plain)
    for (_, layer), (_, dense) in zip(dirmag_layers(model), plain_layers(plain), strict=True):
        assert torch.allclose(layer.magnitude, dense.weight.norm(dim=1))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    after = model.state_dict()
    return all(torch.equal(before[k], after[k]) for k in before)


def test_mismatches_raise_and_change_nothing():
    model = dirmag_model("lenet300", 100)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="3 DirMag layers .* 4 nn.Linear/nn.Conv2d"):
        load_deterministic_(model, deterministic_model("lenet5"))
    with pytest.raises(ValueError, match="different weight shapes"):
        load_deterministic_(model, deterministic_model("lenet500"))
    convs = nn.Sequential(nn.Conv2d(1, 300, 1), nn.Linear(300, 100), nn.Linear(100, 10))
    with pytest.raises(ValueError, match="DirMagLinear takes its weights from Linear"):
        load_deterministic_(model, convs)
    no_bias = nn.Sequential(nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10, False))
    with pytest.raises(ValueError, match="'net.5' and plain layer '2'.* has bias"):
        load_deterministic_(model, no_bias)
    # a dead unit in the LAST layer: the first two layers must not have been changed
    dead = _trained("lenet300")
    with torch.no_grad():
        dead[5].parametrizations.weight.original0[3] = 0.0
    with pytest.raises(ValueError, match="'net.5' has 1 all-zero"):
        load_deterministic_(model, dead)
    nan = _trained("lenet300")
    with torch.no_grad():
        nan[3].parametrizations.weight.original1[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'net.3' must be finite"):
        load_deterministic_(model, nan)
    assert _unchanged(model, before)
    with pytest.raises(ValueError, match="no DirMag layers"):
        load_deterministic_(nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="plain_module must be a torch.nn.Module"):
        load_deterministic_(model, {"weight": 1})


def test_conv_settings_must_match():
    model = nn.Sequential(DirMagConv2d(2, 3, 3, padding=1))
    with pytest.raises(ValueError, match="padding \\(1, 1\\) and \\(0, 0\\)"):
        load_deterministic_(model, nn.Conv2d(2, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        load_deterministic_(model, nn.Conv2d(2, 3, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match="padding_mode zeros and reflect"):
        load_deterministic_(model, nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="groups"):
        load_deterministic_(nn.Sequential(DirMagConv2d(1, 4, 3)), nn.Conv2d(2, 4, 3, groups=2))
    plain = weight_norm(nn.Conv2d(2, 3, 3, padding=1))
    load_deterministic_(model, plain)
    assert torch.allclose(model[0].v, plain.weight)
    layer = DirMagLinear(4, 2)
    load_deterministic_(layer, nn.Linear(4, 2))
