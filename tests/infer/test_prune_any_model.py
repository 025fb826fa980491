"""prune returns a plain torch network for any convertible model, or says why not."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

from pyro_dirmag.infer import DirMagGuide, predict, prune
from pyro_dirmag.infer.prune import _is_generated, _torch_class
from pyro_dirmag.nn import DirMagLinear, DirMagModel, to_dirmag
from pyro_dirmag.nn.dirmag import dirmag_layers


class UserNet(nn.Module):
    """Registered out of call order (head first), with a conv and a nested block."""

    def __init__(self, activation=nn.ReLU):
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.conv = nn.Conv2d(1, 4, 3)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), activation())

    def forward(self, x):
        return self.head(self.body(torch.relu(self.conv(x))))


def _categorical(logits):
    return dist.Categorical(logits=logits)


def _fit(model, x, drop_every=2):
    """A guide whose log alpha is 5 (dropped at threshold 3) for every other unit."""
    guide = DirMagGuide(model, init_log_alpha=-2.0, init_angle_scale=0.2)
    guide(x)
    with torch.no_grad():
        for name, la in guide.log_alpha().items():
            values = torch.full_like(la, -2.0)
            values[::drop_every] = 5.0
            m = guide.magnitude_loc
            s = guide.magnitude_log_scale
            for part in name.split(".")[:-1]:
                m, s = getattr(m, part), getattr(s, part)
            leaf = name.split(".")[-1]
            setattr(s, leaf, getattr(m, leaf).abs().log() + 0.5 * values)
    return guide


def test_converted_user_net_prunes_to_the_user_class_and_exports():
    model = DirMagModel(to_dirmag(UserNet()), _categorical, 50)
    x = torch.randn(7, 1, 4, 4)
    guide = _fit(model, x)
    pruned, report = prune(model, guide)
    assert type(pruned) is UserNet
    assert not any(isinstance(m, PyroModule) for m in pruned.modules())
    assert type(pruned.conv) is nn.Conv2d and pruned.conv.out_channels == 2
    assert pruned.body[1].weight.shape == (3, 8)  # 8 = 2 channels x 2 x 2 kept inputs
    assert pruned.head.weight.shape == (3, 3)  # the outputs of the last layer are kept
    assert [r["name"] for r in report.layers] == ["head", "conv", "body.1"]
    assert [r["units_kept"] for r in report.layers] == [3, 2, 3]
    assert report.params_kept < report.params_total
    # pruned = mean network with dropped units zeroed (checked in prune); mean network
    # itself differs, so the units really mattered
    probs = predict(model, guide, x, mode="mean")
    with torch.no_grad():
        got = pruned(x).softmax(-1)
    assert got.shape == probs.shape and not torch.allclose(got, probs, atol=1e-4)
    exported = torch.export.export(pruned, (x,))
    assert torch.allclose(exported.module()(x), pruned(x))


def test_sequential_pyro_module():
    model = PyroModule[nn.Sequential](DirMagLinear(5, 6), nn.ReLU(), DirMagLinear(6, 2))
    x = torch.randn(4, 5)
    guide = _fit(model, x)
    pruned, _ = prune(model, guide)
    assert type(pruned) is nn.Sequential and pruned[0].out_features == 3
    assert not any(isinstance(m, PyroModule) for m in pruned.modules())
    torch.export.export(pruned, (x,))


class ReadmeNet(PyroModule):
    def __init__(self, num_data):
        super().__init__()
        self.num_data = num_data
        self.fc1 = DirMagLinear(5, 6)
        self.fc2 = DirMagLinear(6, 2)

    def forward(self, x, y=None):
        with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
            logits = self.fc2(torch.relu(self.fc1(x)))
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h) + h


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


def test_what_cannot_be_pruned_says_why():
    x = torch.randn(6, 5)
    model = ReadmeNet(20)
    with pytest.raises(ValueError, match="cannot prune model of class ReadmeNet.*DirMagModel"):
        prune(model, _fit(model, x))
    pyro.clear_param_store()
    xi = torch.randn(6, 1, 4, 4)
    model = DirMagModel(to_dirmag(UserNet(nn.Sigmoid)), _categorical, 20)
    with pytest.raises(ValueError, match="beyond zeroing them"):
        prune(model, _fit(model, xi))
    pyro.clear_param_store()
    model = DirMagModel(to_dirmag(Residual()), _categorical, 20)
    with pytest.raises(ValueError, match="breaks this network"):
        prune(model, _fit(model, torch.randn(6, 4)))
    pyro.clear_param_store()
    model = DirMagModel(to_dirmag(Unused()), _categorical, 20)
    with pytest.raises(ValueError, match=r"layers that a run does not call \['spare'\]"):
        prune(model, _fit(model, torch.randn(6, 4)))
    pyro.clear_param_store()
    relu = PyroModule[nn.ReLU]()
    relu.gain = PyroSample(dist.Normal(0.0, 1.0))
    model = DirMagModel(
        to_dirmag(nn.Sequential(nn.Linear(5, 6), relu, nn.Linear(6, 2))), _categorical, 20
    )
    guide = _fit(model, x)
    with pytest.raises(ValueError, match=r"submodule '1' \(PyroReLU\).*PyroSample"):
        prune(model, guide)


def test_pyro_mixin_classes_are_recognized():
    # prune's one use of Pyro's private cache of PyroModule[C] classes
    assert _is_generated(type(PyroModule[nn.Linear](2, 2)))
    assert not _is_generated(ReadmeNet)
    assert dirmag_layers(to_dirmag(nn.Linear(2, 2)))


def test_torch_class_of_generated_classes_only():
    class Sub(nn.Linear):
        pass

    class Mixed(nn.Linear, PyroModule):
        pass

    assert _torch_class(PyroModule[nn.Linear]) is nn.Linear
    assert _torch_class(PyroModule[Sub]) is Sub
    assert _torch_class(PyroModule[nn.Sequential]) is nn.Sequential
    assert _torch_class(PyroModule) is None
    assert _torch_class(Mixed) is None
    assert _torch_class(ReadmeNet) is None
    assert _torch_class(nn.Linear) is None
    assert _torch_class(type(to_dirmag(nn.Linear(2, 2)))) is None
