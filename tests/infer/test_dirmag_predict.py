import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule

from pyro_dirmag.infer import (
    DirMagGuide,
    accuracy,
    expected_calibration_error,
    mean_weights,
    negative_log_likelihood,
    predict,
)
from pyro_dirmag.nn import DirMagConv2d, DirMagLinear


class Net(PyroModule):
    def __init__(self, num_data, conv=False):
        super().__init__()
        self.num_data = num_data
        self.conv = DirMagConv2d(1, 2, 3) if conv else None
        self.fc1 = DirMagLinear(8 if conv else 6, 5)
        self.fc2 = DirMagLinear(5, 3)

    def forward(self, x, y=None):
        with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
            h = F.relu(self.conv(x)).flatten(1) if self.conv is not None else x
            logits = self.fc2(F.relu(self.fc1(h)))
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def _setup(conv=False):
    net = Net(100, conv)
    guide = DirMagGuide(net, init_log_alpha=-2.0, init_angle_scale=0.4)
    x = torch.randn(23, 1, 4, 4) if conv else torch.randn(23, 6)
    guide(x[:5])
    return net, guide, x


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
@pytest.mark.parametrize("mode", ["mean", "sample", "ensemble"])
def test_shapes_and_normalization(mode, conv):
    net, guide, x = _setup(conv)
    p = predict(net, guide, x, mode=mode, num_samples=3, batch_size=7)
    assert p.shape == (23, 3)
    assert torch.allclose(p.sum(-1), torch.ones(23), atol=1e-5)
    assert (p >= 0).all()


def test_mean_mode_is_mean_network():
    net, guide, x = _setup()
    p1 = predict(net, guide, x, mode="mean", batch_size=7)
    p2 = predict(net, guide, x, mode="mean", batch_size=100)
    assert torch.allclose(p1, p2)
    weights = mean_weights(net, guide)
    h = F.relu(x @ weights["fc1"][0].T + weights["fc1"][1])
    logits = h @ weights["fc2"][0].T + weights["fc2"][1]
    assert torch.allclose(p1, logits.softmax(-1), atol=1e-6)


def test_sample_mode_is_one_network_across_chunks():
    net, guide, _ = _setup()
    row = torch.randn(1, 6)
    x = row.expand(20, 6).contiguous()
    p = predict(net, guide, x, mode="sample", batch_size=3)
    assert torch.allclose(p, p[:1].expand_as(p), atol=1e-6)
    # and it is random: another call draws another network
    q = predict(net, guide, x, mode="sample", batch_size=3)
    assert not torch.allclose(p, q)


def test_ensemble_averages_noise():
    net, guide, _ = _setup()
    x = torch.randn(1, 6).expand(40, 6).contiguous()
    p = predict(net, guide, x, mode="ensemble", num_samples=2, batch_size=8)
    assert not torch.allclose(p, p[:1].expand_as(p))  # per-example draws differ
    p_many = predict(net, guide, x[:2], mode="ensemble", num_samples=200, batch_size=8)
    single = torch.stack([predict(net, guide, x[:1], mode="sample") for _ in range(150)]).mean(0)
    assert torch.allclose(p_many[0], single[0], atol=0.05)


def test_bad_arguments():
    net, guide, x = _setup()
    with pytest.raises(ValueError, match="mode must be one of"):
        predict(net, guide, x, mode="median")
    with pytest.raises(ValueError, match="num_samples"):
        predict(net, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        predict(net, guide, x, batch_size=0)


def test_metrics_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1])
    assert accuracy(probs, labels) == pytest.approx(0.5)
    nll = -(math.log(0.9) + math.log(0.4) + math.log(0.3) + math.log(0.8)) / 4
    assert negative_log_likelihood(probs, labels) == pytest.approx(nll)
    # 2 bins: (0, .5], (.5, 1]: all confidences are in the upper bin
    conf = torch.tensor([0.9, 0.6, 0.7, 0.8])
    ece = abs(0.5 - conf.mean().item())
    assert expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(ece)
    # 10 bins, each example in its own bin
    ece10 = (abs(1 - 0.9) + abs(0 - 0.6) + abs(0 - 0.7) + abs(1 - 0.8)) / 4
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(ece10)
    with pytest.raises(ValueError, match="expected probs"):
        accuracy(probs, labels[:3])
    with pytest.raises(TypeError, match="integers"):
        accuracy(probs, labels.float())
