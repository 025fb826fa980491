import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_dirmag.infer import DirMagGuide
from pyro_dirmag.models import ARCHITECTURES, deterministic_model, dirmag_model, layers
from pyro_dirmag.nn import DirMagConv2d, DirMagLinear

UNITS = {
    "lenet300": [300, 100, 10],
    "lenet500": [500, 300, 10],
    "lenet5": [20, 50, 500, 10],
    "fc1024": [1024, 1024, 2048, 10],
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architectures(name):
    det = deterministic_model(name)
    bayes = dirmag_model(name, 60000)
    det_units = [m.weight.shape[0] for m in det.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    bayes_layers = [m for m in bayes.modules() if isinstance(m, (DirMagLinear, DirMagConv2d))]
    assert det_units == UNITS[name]
    assert [m.v.shape[0] for m in bayes_layers] == UNITS[name]
    # same architecture: same weight shapes layer by layer
    det_shapes = [
        tuple(m.weight.shape) for m in det.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    assert det_shapes == [tuple(m.v.shape) for m in bayes_layers]
    for x in (torch.randn(3, 784), torch.randn(3, 1, 28, 28)):
        assert det(x).shape == (3, 10)
        guide = DirMagGuide(bayes)
        tr = poutine.trace(guide).get_trace(x)
        out = poutine.replay(bayes, trace=tr)(x)
        assert out.shape == (3, 10)


def test_layer_factory_and_errors():
    calls = []

    def linear(i, o):
        calls.append((i, o))
        return nn.Linear(i, o)

    mods = layers("lenet300", linear)
    assert calls == [(784, 300), (300, 100), (100, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in mods) == 2
    with pytest.raises(ValueError, match="unknown architecture"):
        layers("vgg", linear)
    with pytest.raises(ValueError, match="conv layer factory"):
        layers("lenet5", linear)
    with pytest.raises(ValueError, match="num_data"):
        dirmag_model("lenet300", 0)


def test_reverse_and_options():
    model = dirmag_model("lenet300", 100, reverse=True, direction_noise=False)
    dense = [m for m in model.modules() if isinstance(m, DirMagLinear)]
    assert all(m.reverse and not m.direction_noise for m in dense)
    model = dirmag_model("lenet5", 100, reverse=True)
    assert not any(m.reverse for m in model.modules() if isinstance(m, DirMagConv2d))


UNUSED_OPTIONS = [
    ("gaussian-dropout", {"angle_prior": "hemisphere"}, "angle_prior"),
    ("projected", {"phi": "shared"}, "phi"),
    ("none", {"direction_noise": False}, "direction_noise"),
    ("none", {"alpha": 0.2}, "alpha"),
    ("dirmag", {"alpha": 0.1}, "alpha"),
    ("dirmag-reverse", {"magnitude": "normal", "magnitude_alpha": 0.1}, "magnitude"),
    ("dirmag", {"on": "weight"}, "on"),
]


@pytest.mark.parametrize("method, options, named", UNUSED_OPTIONS)
def test_build_refuses_options_the_method_does_not_use(method, options, named):
    from pyro_dirmag.models import build

    with pytest.raises(ValueError, match=f"parameter {named} .* method '{method}' has no"):
        build("lenet300", method, 10, **options)


def test_build_takes_the_options_each_method_uses():
    from pyro_dirmag.models import build
    from pyro_dirmag.nn import NoisyLinear

    model, _ = build("lenet300", "gaussian-dropout", 10, alpha=0.3, on="weight")
    layer = next(m for m in model.modules() if isinstance(m, NoisyLinear))
    assert layer.alpha == 0.3 and layer.on == "weight"
    model, _ = build("lenet300", "dirmag", 10, phi="shared", direction_noise=False)
    assert not any(m.direction_noise for m in model.modules() if isinstance(m, DirMagLinear))


def test_the_command_line_offers_every_build_option():
    from pyro_dirmag.cli import _METHOD_FLAGS
    from pyro_dirmag.models import DIRMAG_OPTIONS, NOISE_OPTIONS

    assert sorted(_METHOD_FLAGS) == sorted(DIRMAG_OPTIONS + NOISE_OPTIONS)
