import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.nn import PyroModule
from pyro.optim import Adam
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from pyro_dirmag._sites import site_name
from pyro_dirmag.infer import DirMagELBO, DirMagGuide, mean_weights, predict
from pyro_dirmag.models import deterministic_model, dirmag_model
from pyro_dirmag.nn import DirMagConv2d, DirMagLinear, DirMagModel, load_deterministic_, to_dirmag
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
        cos = means[site_name(layer, "angle")].cos()
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


class _Custom(nn.Module):
    """A user's module: children registered out of call order, nested, with a conv."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.conv = weight_norm(nn.Conv2d(1, 2, 3))
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

    def forward(self, x):
        return self.head(self.body(torch.relu(self.conv(x)).flatten(1)))


def _categorical(logits):
    return dist.Categorical(logits=logits)


def test_to_dirmag_keeps_structure_order_and_predictions():
    plain = _Custom()
    before = _snapshot(plain)
    bnn = to_dirmag(plain)
    assert isinstance(bnn, PyroModule) and isinstance(bnn.body, PyroModule)
    assert [n for n, _ in dirmag_layers(bnn)] == [n for n, _ in plain_layers(plain)]
    assert [type(m) for _, m in dirmag_layers(bnn)] == [DirMagLinear, DirMagConv2d, DirMagLinear]
    assert [n for n, _ in bnn.named_children()] == ["head", "conv", "body"]
    # the user's module is untouched
    assert not isinstance(plain, PyroModule) and isinstance(plain.head, nn.Linear)
    assert _unchanged(plain, before)
    model = DirMagModel(bnn, _categorical, 100)
    guide = DirMagGuide(model, init_angle_scale=1e-6)
    x = torch.randn(5, 1, 4, 4)
    p = predict(model, guide, x, mode="mean")
    assert torch.allclose(p, plain(x).softmax(-1), atol=1e-6)
    assert set(guide.site_names) == {
        f"net.{n}.{kind}" for n in ("head", "conv", "body.0") for kind in ("magnitude", "angle")
    }
    # converting back: the same weights
    load_deterministic_(to_dirmag(plain), plain)


def test_to_dirmag_of_a_pyro_module_keeps_order():
    # setattr on a PyroModule moves the child to the end; the conversion must not.
    plain = PyroModule[nn.Sequential](nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    bnn = to_dirmag(plain)
    assert [n for n, _ in bnn.named_children()] == ["0", "1", "2"]
    assert [n for n, _ in dirmag_layers(bnn)] == ["0", "2"]
    layer = to_dirmag(nn.Linear(3, 2))
    assert isinstance(layer, DirMagLinear)


def test_subset_and_point_estimates_train():
    plain = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    bnn = to_dirmag(plain, layers=["2"])
    assert isinstance(bnn[0], nn.Linear) and isinstance(bnn[0], PyroModule)
    assert isinstance(bnn[2], DirMagLinear)
    model = DirMagModel(bnn, lambda out: dist.Normal(out.squeeze(-1), 0.1), 64)
    guide = DirMagGuide(model)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), DirMagELBO())
    x = torch.linspace(-1, 1, 32)[:, None]
    y = torch.sin(3 * x).squeeze(-1)
    w0 = bnn[0].weight.detach().clone()
    v0 = bnn[2].v.detach().clone()
    losses = [svi.step(x, y) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    # the deterministic first layer and the DirMag layer both train, each param once
    assert not torch.equal(bnn[0].weight, w0) and not torch.equal(bnn[2].v, v0)
    names = set(pyro.get_param_store().keys())
    assert {"net.0.weight", "net.0.bias", "net.2.v", "net.2.bias"} <= names
    assert not any("$$$" in n for n in names)


def test_dimension_one_gets_magnitude_noise_only():
    plain = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1), nn.Conv2d(1, 2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bnn = to_dirmag(plain)
    assert [m.direction_noise for _, m in dirmag_layers(bnn)] == [False, True, False]
    assert all(m.magnitude_noise for _, m in dirmag_layers(bnn))
    with pytest.warns(UserWarning, match=r"\['0', '3'\] have unit vectors of dimension 1"):
        to_dirmag(plain, direction_noise=True)
    # reverse layers rotate columns: dimension 4 for Linear(1, 4), 1 for Linear(4, 1)
    with pytest.warns(UserWarning, match=r"layers \['2'\] have"):
        bnn = to_dirmag(plain, layers=["0", "2"], direction_noise=True, reverse=True)
    assert [m.reverse for _, m in dirmag_layers(bnn)] == [True, True]
    assert bnn[0].direction_noise and not bnn[2].direction_noise
    bnn = to_dirmag(plain, direction_noise=False, reverse=True)
    assert not any(m.direction_noise for _, m in dirmag_layers(bnn))
    assert not bnn[3].reverse  # reverse applies to dense layers only


def test_to_dirmag_errors():
    plain = nn.Sequential(nn.Linear(3, 4), nn.Conv2d(2, 4, 3, groups=2))
    with pytest.raises(ValueError, match="'fc' is not an nn.Linear/nn.Conv2d"):
        to_dirmag(plain, layers=["fc"])
    with pytest.raises(ValueError, match="'1' cannot be converted: groups=2"):
        to_dirmag(plain, layers=["1"])
    with pytest.raises(ValueError, match="the string"):
        to_dirmag(plain, layers="0")
    with pytest.raises(ValueError, match="distinct"):
        to_dirmag(plain, layers=["0", "0"])
    with pytest.raises(ValueError, match="unknown keyword.*'bias'"):
        to_dirmag(plain, bias=False)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        to_dirmag(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="module must be a torch.nn.Module"):
        to_dirmag(lambda x: x)
    shared = nn.Linear(3, 3)
    with pytest.raises(ValueError, match=r"used at several places \['0', '1'\]"):
        to_dirmag(nn.Sequential(shared, shared))
    # subclasses with a forward of their own are left alone by default
    attention = nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 1))
    assert [n for n, _ in dirmag_layers(to_dirmag(attention))] == ["0"]
    with pytest.raises(ValueError, match="a subclass with a forward of its own"):
        to_dirmag(attention, layers=["1.out_proj"])
    with pytest.raises(ValueError, match="num_data must be a positive int"):
        DirMagModel(to_dirmag(plain, layers=["0"]), _categorical, 0)
    with pytest.raises(ValueError, match="likelihood must be callable"):
        DirMagModel(to_dirmag(plain, layers=["0"]), None, 10)


# ----- to_noisy: the same architecture with new weights and weight noise ----------------
def test_to_noisy_keeps_shapes_and_structure_with_new_weights():
    from pyro_dirmag.nn import NoisyConv2d, NoisyLinear, to_noisy

    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Sequential(nn.Linear(4 * 4 * 4, 5, bias=False)),
        nn.Tanh(),
    ).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    noisy = to_noisy(net, noise="gaussian", alpha=0.3)
    conv, linear = noisy[0], noisy[3][0]
    assert isinstance(conv, NoisyConv2d) and isinstance(linear, NoisyLinear)
    assert (conv.stride, conv.padding, conv.kernel_size) == ((2, 2), (1, 1), (3, 3))
    assert (linear.in_features, linear.out_features, linear.bias) == (64, 5, None)
    assert conv.alpha == linear.alpha == 0.3 and conv.v.dtype == torch.float64
    assert isinstance(noisy[1], nn.ReLU) and isinstance(noisy[4], nn.Tanh)
    # new weights, the module itself unchanged
    assert not torch.allclose(conv.v, net[0].weight)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    noisy.eval()
    assert noisy(x).shape == net(x).shape == (3, 5)
    noisy.train()
    torch.manual_seed(0)
    first = noisy(x)
    assert not torch.allclose(first, noisy(x))  # the noise is active in train mode


def test_to_noisy_errors():
    from pyro_dirmag.nn import NoisyLinear, to_noisy

    layer = nn.Linear(3, 2)
    assert isinstance(to_noisy(layer, noise="gaussian", alpha=0.1), NoisyLinear)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        to_noisy(nn.Sequential(nn.ReLU()), noise="gaussian", alpha=0.1)
    with pytest.raises(ValueError, match="several places"):
        to_noisy(nn.Sequential(layer, nn.ReLU(), layer), noise="gaussian", alpha=0.1)
    with pytest.raises(ValueError, match="torch.nn.Module"):
        to_noisy("net", noise="gaussian", alpha=0.1)
    with pytest.raises((ValueError, TypeError)):
        to_noisy(nn.Sequential(layer), noise="gaussian")  # alpha is required
