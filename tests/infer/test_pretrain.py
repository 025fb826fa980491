"""Pre-training: the deterministic twin trains first and initializes the DirMag layers."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_dirmag.infer import NonFiniteLossError, Recipe, predict, pretrain_, train_deterministic
from pyro_dirmag.nn import DirMagLinear


class _DirMagNet(PyroModule):
    def __init__(self, num_data):
        super().__init__()
        self.num_data = num_data
        self.fc1 = DirMagLinear(6, 8)
        self.fc2 = DirMagLinear(8, 2)

    def forward(self, x, y=None):
        with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
            logits = self.fc2(torch.relu(self.fc1(x)))
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def _twin(hidden=8):
    return nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def _problem(n=128):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    return x, y


def test_train_deterministic_follows_its_schedule_and_learns():
    torch.manual_seed(0)
    x, y = _problem()
    net = _twin()
    before = nn.functional.cross_entropy(net(x), y).item()
    records = []
    history = train_deterministic(
        net,
        x,
        y,
        epochs=6,
        batch_size=32,
        recipe=Recipe(lr=0.05),
        callback=lambda e, r: records.append(e),
    )
    assert records == [1, 2, 3, 4, 5, 6]
    assert history[2]["lr"] == 0.05 and history[-1]["lr"] == 0.0  # flat, then down to 0
    after = nn.functional.cross_entropy(net(x), y).item()
    assert after < 0.5 * before
    assert not net.training


def test_train_deterministic_is_reproducible_with_a_generator():
    x, y = _problem()
    nets = []
    for _ in range(2):
        torch.manual_seed(1)
        net = _twin()
        train_deterministic(
            net, x, y, epochs=2, batch_size=16, generator=torch.Generator().manual_seed(5)
        )
        nets.append(net)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_train_deterministic_refuses_a_non_finite_step_without_updating():
    x, y = _problem()
    x[:] = math.nan
    net = _twin()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NonFiniteLossError, match="no parameter was updated"):
        train_deterministic(net, x, y, epochs=1)
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


@pytest.mark.parametrize(
    "bad, match",
    [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"n": 0}, "length")],
)
def test_train_deterministic_rejects_bad_sizes(bad, match):
    x, y = _problem()
    if "n" in bad:
        x, y = x[:0], y[:0]
    kwargs = {"epochs": 1, "batch_size": 8} | {k: v for k, v in bad.items() if k != "n"}
    with pytest.raises(ValueError, match=match):
        train_deterministic(_twin(), x, y, **kwargs)


def test_pretrain_copies_the_trained_twin_and_the_mean_network_reproduces_it():
    torch.manual_seed(0)
    pyro.clear_param_store()
    x, y = _problem()
    model, twin = _DirMagNet(len(x)), _twin()
    pretrain_(model, twin, x, y, epochs=5, batch_size=32, recipe=Recipe(lr=0.05))
    for layer, plain in ((model.fc1, twin[0]), (model.fc2, twin[2])):
        v, w = layer.v.detach(), plain.weight.detach()
        assert torch.allclose(v / v.norm(dim=1, keepdim=True), w / w.norm(dim=1, keepdim=True))
    guide = Recipe(init_angle_scale=1e-4, init_log_alpha=-10.0).guide(model)
    guide(x[:2], y[:2])  # first run after the copy: initial m from the layers
    mean = predict(model, guide, x, mode="mean")
    # the mean network is the twin up to cos E[angle], near 1 at this angle scale
    assert torch.allclose(mean, twin(x).softmax(-1), atol=1e-3)
    twin_accuracy = float((twin(x).argmax(-1) == y).float().mean())
    assert twin_accuracy > 0.9


def test_pretrain_checks_the_twin_before_training():
    x, y = _problem()
    model, twin = _DirMagNet(len(x)), _twin(hidden=5)  # hidden sizes differ
    before = [p.detach().clone() for p in twin.parameters()]
    with pytest.raises(ValueError, match="shape"):
        pretrain_(model, twin, x, y, epochs=3)
    for p, b in zip(twin.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)  # refused before any epoch
