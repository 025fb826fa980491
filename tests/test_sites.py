"""The site protocol between the DirMag layers and the inference code (pyro_dirmag._sites)."""

import ast
import contextlib
import dataclasses
import os

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule, PyroSample
from torch.distributions import kl_divergence

import pyro_dirmag._sites
from pyro_dirmag._sites import (
    SITE_KINDS,
    DirMagSite,
    is_per_example_pair,
    sample_per_example,
    site_name,
    site_record,
)
from pyro_dirmag.distributions._per_example_copies import PerExampleCopies
from pyro_dirmag.infer import DirMagGuide
from pyro_dirmag.nn import DirMagConv2d, DirMagLinear


class Block(PyroModule):
    def __init__(self):
        super().__init__()
        self.conv = DirMagConv2d(1, 3, 3)
        self.fc = DirMagLinear(12, 4, direction_noise=False)


class Net(PyroModule):
    def __init__(self, num_data):
        super().__init__()
        self.num_data = num_data
        self.block = Block()
        self.out = DirMagLinear(4, 2, magnitude_noise=False)
        self.scale = PyroSample(dist.LogNormal(0.0, 1.0))

    def forward(self, x, y=None):
        with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
            h = F.relu(self.block.conv(x)).flatten(1)
            logits = self.out(F.relu(self.block.fc(h))) * self.scale.unsqueeze(-1)
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def _trace(net, batch=5):
    x = torch.randn(batch, 1, 4, 4)
    y = torch.randint(0, 2, (batch,))
    return poutine.trace(net).get_trace(x, y)


def _layers(net):
    return {"block.conv": net.block.conv, "block.fc": net.block.fc, "out": net.out}


def test_every_dirmag_site_carries_its_record_and_no_other_site_does():
    net = Net(100)
    trace = _trace(net)
    records = {}
    for name, site in trace.nodes.items():
        if site["type"] == "sample":
            record = site_record(site)
            if record is not None:
                records[name] = (record.kind, record.layer)
    layers = _layers(net)
    assert records == {
        "block.conv.magnitude": ("magnitude", layers["block.conv"]),
        "block.conv.angle": ("angle", layers["block.conv"]),
        "block.fc.magnitude": ("magnitude", layers["block.fc"]),
        "out.angle": ("angle", layers["out"]),
    }
    # the layers are the model's own modules, not copies
    assert all(records[n][1] is layers[n.rpartition(".")[0]] for n in records)


def test_site_name_is_the_name_of_the_layers_site_in_the_trace():
    net = Net(100)
    trace = _trace(net)
    for path, layer in _layers(net).items():
        for kind in SITE_KINDS:
            name = site_name(layer, kind)
            assert name == f"{path}.{kind}"
        sampled = [
            k for k in SITE_KINDS if trace.nodes.get(f"{path}.{k}", {}).get("type") == "sample"
        ]
        noisy = (layer.magnitude_noise, layer.direction_noise)
        assert sampled == [k for k, on in zip(SITE_KINDS, noisy, strict=True) if on]


def test_site_name_of_a_layer_called_alone():
    layer = DirMagLinear(3, 2)
    trace = poutine.trace(layer).get_trace(torch.randn(4, 3))
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert sites == [site_name(layer, "magnitude"), site_name(layer, "angle")]
    assert sites == ["magnitude", "angle"]


@pytest.mark.parametrize("kind", ["weight", "Magnitude", None])
def test_bad_kind_is_refused(kind):
    with pytest.raises(ValueError, match="kind must be one of"):
        DirMagSite(kind, DirMagLinear(3, 2))
    layer = DirMagLinear(3, 2)
    layer(torch.randn(2, 3))
    with pytest.raises(ValueError, match="kind must be one of"):
        site_name(layer, kind)


def test_record_is_frozen():
    record = DirMagSite("angle", DirMagLinear(3, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.kind = "magnitude"


def test_other_values_under_the_infer_key_are_not_records():
    # A site of another library (or of the old string protocol) is not a DirMag site.
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0), infer={"dirmag": "magnitude"})
        pyro.sample("b", dist.Normal(0.0, 1.0))

    trace = poutine.trace(model).get_trace()
    assert site_record(trace.nodes["a"]) is None
    assert site_record(trace.nodes["b"]) is None


def _site(infer=None, plates=()):
    """Site ``z`` declared through ``sample_per_example`` inside ``plates``."""

    def model():
        with contextlib.ExitStack() as stack:
            for args, kwargs in plates:
                stack.enter_context(pyro.plate(*args, **kwargs))
            sample_per_example("z", dist.Normal(torch.zeros(3), 1.0).to_event(1), infer=infer)

    return poutine.trace(model).get_trace().nodes["z"]


def test_outside_any_plate_a_site_is_one_unscaled_draw():
    site = _site()
    assert not isinstance(site["fn"], PerExampleCopies)
    assert site["value"].shape == (3,)
    assert site["scale"] == 1.0


def test_per_example_copies_are_scaled_to_sum_to_one_kl():
    # plate of 200 subsampled to 8: each copy weighs (200 / 8) * (1 / 200) = 1 / 8
    site = _site(plates=[(("data", 200), {"subsample_size": 8})])
    fn = site["fn"]
    assert isinstance(fn, PerExampleCopies)
    assert fn.batch_shape == (8,) and fn.event_shape == (3,)
    assert site["value"].shape == (8, 3)
    assert site["scale"] == pytest.approx(1 / 8)
    q = PerExampleCopies(dist.Normal(torch.full((3,), 0.5), 2.0).to_event(1), fn.batch_shape)
    assert is_per_example_pair(q, fn)
    one = kl_divergence(q.base_dist, fn.base_dist)
    assert torch.allclose(site["scale"] * kl_divergence(q, fn).sum(), one)


def test_per_example_copies_in_two_plates():
    site = _site(
        plates=[
            (("outer", 6), {"subsample_size": 2, "dim": -2}),
            (("inner", 5), {"dim": -1}),
        ]
    )
    assert site["fn"].batch_shape == (2, 5)
    assert site["value"].shape == (2, 5, 3)
    # scale (6 / 2) from the subsampled plate times 1 / (6 * 5): the 10 copies sum to one
    assert site["scale"] == pytest.approx(1 / 10)


def test_infer_dict_is_kept():
    site = _site(infer={"is_auxiliary": True})
    assert site["infer"] == {"is_auxiliary": True}


def test_is_per_example_pair_needs_both():
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    copies = PerExampleCopies(base, torch.Size([4]))
    assert is_per_example_pair(copies, copies)
    assert not is_per_example_pair(copies, base.expand([4]))
    assert not is_per_example_pair(base.expand([4]), copies)


def test_initial_magnitude_is_the_norm_of_the_starting_weight():
    layer = DirMagLinear(5, 3)
    assert torch.allclose(layer.initial_magnitude(), layer.v.detach().norm(dim=1))
    weight = torch.randn(3, 5, dtype=layer.v.dtype)
    layer.load_weight_(weight)
    init = layer.initial_magnitude()
    assert torch.allclose(init, weight.norm(dim=1))
    init.zero_()  # a copy: the layer keeps its value
    assert torch.allclose(layer.initial_magnitude(), weight.norm(dim=1))
    reverse = DirMagLinear(5, 3, reverse=True)
    assert torch.allclose(reverse.initial_magnitude(), reverse.v.detach().norm(dim=0))
    conv = DirMagConv2d(2, 4, 3).double()
    assert conv.initial_magnitude().dtype == torch.float64
    assert torch.allclose(conv.initial_magnitude(), conv.v.detach().flatten(1).norm(dim=1))


def test_guide_starts_from_the_layers_initial_magnitude():
    class Shifted(DirMagLinear):
        def initial_magnitude(self):
            return super().initial_magnitude() + 1.0

    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = Shifted(4, 3)

        def forward(self, x):
            with pyro.plate("data", 10, subsample_size=x.shape[0]):
                return self.fc(x)

    model = Model()
    guide = DirMagGuide(model)
    guide(torch.randn(2, 4))
    expected = model.fc.v.detach().norm(dim=1) + 1.0
    assert torch.allclose(guide.posterior_mean()["fc.magnitude"], expected)


def test_the_protocol_sits_below_nn_and_infer():
    # Its package imports are the fenced upstream names and the distributions only.
    with open(pyro_dirmag._sites.__file__) as f:
        tree = ast.parse(f.read())
    relative = sorted(
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level
    )
    assert relative == ["_upstream", "distributions._per_example_copies"]
    absolute = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if "pyro_dirmag" in (getattr(node, "module", None) or alias.name)
    ]
    assert absolute == []
    assert os.path.dirname(pyro_dirmag._sites.__file__) == os.path.dirname(pyro_dirmag.__file__)
