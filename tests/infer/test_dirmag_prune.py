import pytest
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pyro_dirmag._sites import site_name
from pyro_dirmag.infer import DirMagGuide, predict, prune
from pyro_dirmag.infer.prune import SelectFeatures
from pyro_dirmag.models import dirmag_model
from pyro_dirmag.nn.dirmag import dirmag_layers


def _fit_guide(model, x):
    guide = DirMagGuide(model, init_log_alpha=-2.0)
    guide(x[:4])
    return guide


def _set_log_alpha(guide, name, values):
    """Sets log lambda so that the site's log alpha equals ``values``."""
    parts = name.split(".")
    mod_loc, mod_scale = guide.magnitude_loc, guide.magnitude_log_scale
    for p in parts[:-1]:
        mod_loc, mod_scale = getattr(mod_loc, p), getattr(mod_scale, p)
    m = getattr(mod_loc, parts[-1]).detach()
    setattr(mod_scale, parts[-1], m.abs().log() + 0.5 * values)


def _zero_units(model, guide, drop):
    """Sets the dropped units' posterior magnitudes (and biases) to 0, in place."""
    layers = dict(dirmag_layers(model))
    with torch.no_grad():
        for name, idx in drop.items():
            layer = layers[name]
            site = site_name(layer, "magnitude")
            parts = site.split(".")
            mod = guide.magnitude_loc
            for p in parts[:-1]:
                mod = getattr(mod, p)
            m = getattr(mod, parts[-1]).detach().clone()
            m[idx] = 0.0
            setattr(mod, parts[-1], m)
            if not layer.reverse and layer.bias is not None:
                layer.bias[idx] = 0.0


def _assert_macs_counted(pruned, report, x):
    """The report's multiply-accumulates are half of torch's FLOP count of one row."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pruned(x[:1])
    assert 2 * report.macs_kept == counter.get_total_flops()
    assert report.macs_kept < report.macs_total
    assert report.as_dict()["mac_reduction"] == report.macs_total / report.macs_kept


def _random_log_alpha(guide, rng_gen, threshold):
    drop = {}
    for name, la in guide.log_alpha().items():
        values = torch.where(torch.rand(la.shape, generator=rng_gen) < 0.4, 5.0, -2.0)
        values[0] = threshold  # exactly at the threshold: kept ("exceeds" only)
        _set_log_alpha(guide, name, values)
        drop[name.rpartition(".")[0]] = (values > threshold).nonzero().squeeze(-1)
    return drop


@pytest.mark.parametrize(
    "arch,reverse", [("lenet300", False), ("lenet5", False), ("lenet300", True)]
)
def test_prune_removes_exactly_units_above_threshold(arch, reverse):
    threshold = 3.0
    model = dirmag_model(arch, 1000, reverse=reverse)
    x = torch.randn(9, 784)
    guide = _fit_guide(model, x)
    drop = _random_log_alpha(guide, torch.Generator().manual_seed(0), threshold)
    last = dirmag_layers(model)[-1][0]
    if not reverse:
        drop[last] = torch.zeros(0, dtype=torch.long)  # the logits are never dropped
    pruned, report = prune(model, guide, threshold)
    # really smaller tensors, plain torch modules
    assert not any(isinstance(m, PyroModule) for m in pruned.modules())
    assert type(pruned) is nn.Sequential
    plain = [m for m in pruned.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    layers = dirmag_layers(model)
    assert len(plain) == len(layers)
    for (name, layer), row in zip(layers, report.layers, strict=False):
        n_drop = len(drop[name])
        assert row["units_total"] == layer.num_units
        assert row["units_kept"] == layer.num_units - n_drop
    for (name, layer), p in zip(layers, plain, strict=False):
        if not layer.reverse:
            assert p.weight.shape[0] == layer.v.shape[0] - len(drop[name])
        else:
            assert p.weight.shape[1] == layer.v.shape[1] - len(drop[name])
    assert report.params_kept < report.params_total
    assert "compression" in str(report)
    _assert_macs_counted(pruned, report, x)
    # the pruned net computes the mean network with the dropped units zeroed
    unzeroed = predict(model, guide, x, mode="mean")
    _zero_units(model, guide, drop)
    expected = predict(model, guide, x, mode="mean")
    with torch.no_grad():
        got = pruned(x).softmax(-1)
    assert torch.allclose(got, expected, atol=1e-5)
    # and differs from the mean network without zeroing (the test can fail)
    assert not torch.allclose(unzeroed, expected, atol=1e-5)


def test_prune_conv_then_reverse_dense():
    """LeNet5 with ``reverse`` dense layers: the first dense layer drops single flattened
    positions of conv filters that stay (a feature selection inside the network), and a
    filter whose positions it drops all of is removed from the conv layer too."""
    threshold = 3.0
    model = dirmag_model("lenet5", 1000, reverse=True)
    x = torch.randn(9, 784)
    guide = _fit_guide(model, x)
    drop = _random_log_alpha(guide, torch.Generator().manual_seed(1), threshold)
    conv2, dense1 = "net.4", "net.8"
    kept_filters = sorted(set(range(50)) - set(drop[conv2].tolist()))
    gone = kept_filters[0]  # a kept filter whose 16 positions dense1 drops, all of them
    la = guide.log_alpha()[site_name(dict(dirmag_layers(model))[dense1], "magnitude")].detach()
    la[gone * 16 : (gone + 1) * 16] = 5.0
    _set_log_alpha(guide, site_name(dict(dirmag_layers(model))[dense1], "magnitude"), la)
    drop[dense1] = (la > threshold).nonzero().squeeze(-1)
    pruned, report = prune(model, guide, threshold)
    filters = torch.ones(50, dtype=torch.bool)
    filters[drop[conv2]] = False
    filters[gone] = False
    features = filters.repeat_interleave(16)
    features[drop[dense1]] = False
    rows = {r["name"]: r for r in report.layers}  # names relative to model.net
    assert rows["4"]["units_kept"] == int(filters.sum())
    assert rows["8"]["units_kept"] == int(features.sum())
    plain = [m for m in pruned.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert plain[1].weight.shape[0] == int(filters.sum())
    assert plain[2].weight.shape[1] == int(features.sum())
    assert any(isinstance(m, SelectFeatures) for m in pruned.modules())
    _assert_macs_counted(pruned, report, x)
    # the pruned net computes the mean network with the dropped units zeroed
    _zero_units(model, guide, drop)
    expected = predict(model, guide, x, mode="mean")
    with torch.no_grad():
        got = pruned(x).softmax(-1)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_prune_report_counts_multiply_accumulates_per_example(reverse):
    """LeNet5 on a 28 x 28 image: conv1 20 filters of 5 x 5 at 24 x 24 positions, conv2
    50 of 20 x 5 x 5 at 8 x 8, then 800 x 500 and 500 x 10 (counted by hand)."""
    model = dirmag_model("lenet5", 1000, reverse=reverse)
    guide = _fit_guide(model, torch.randn(9, 784))
    _, report = prune(model, guide, float("inf"))
    macs = [r["macs_total"] for r in report.layers]
    assert macs == [20 * 25 * 24 * 24, 50 * 20 * 25 * 8 * 8, 800 * 500, 500 * 10]
    assert [r["macs_kept"] for r in report.layers] == macs
    assert report.mac_reduction == 1.0


def test_prune_threshold_keeps_everything_when_high():
    model = dirmag_model("lenet300", 1000)
    x = torch.randn(5, 784)
    guide = _fit_guide(model, x)
    pruned, report = prune(model, guide, threshold=100.0)
    assert report.params_kept == report.params_total
    with torch.no_grad():
        got = pruned(x).softmax(-1)
    assert torch.allclose(got, predict(model, guide, x, mode="mean"), atol=1e-5)
