"""Saving and loading a fitted model and guide (pyro_dirmag.save / load)."""

import io

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from torch import nn

import pyro_dirmag
from pyro_dirmag.checkpoint import check_params, example_inputs
from pyro_dirmag.infer import DirMagELBO, DirMagGuide, predict, prune
from pyro_dirmag.nn import DirMagModel, to_dirmag


def _build(seed):
    pyro.set_rng_seed(seed)
    plain = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)
    )
    model = DirMagModel(to_dirmag(plain), lambda z: dist.Categorical(logits=z), 40)
    guide = DirMagGuide(model, init_log_alpha=-1.0, init_angle_scale=0.3)
    return model, guide


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(40, 1, 4, 4, generator=g), torch.randint(0, 3, (40,), generator=g)


def _trained():
    model, guide = _build(0)
    x, y = _data()
    svi = SVI(model, guide, Adam({"lr": 0.05}), DirMagELBO())
    for i in range(4):
        svi.step(x[10 * i : 10 * i + 10], y[10 * i : 10 * i + 10])
    return model, guide


def _outputs(model, guide, x):
    out = {}
    for mode in ("mean", "sample", "ensemble"):
        pyro.set_rng_seed(5)
        out[mode] = predict(model, guide, x, mode=mode, num_samples=4, batch_size=16)
    pruned, report = prune(model, guide, threshold=0.2)
    out["pruned"] = pruned(x)
    out["report"] = str(report)
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "report":
            assert a[key] == b[key]
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("clear", [True, False], ids=["new_process", "same_process"])
def test_round_trip_every_mode_and_prune(tmp_path, clear):
    model, guide = _trained()
    x, _ = _data()
    before = _outputs(model, guide, x)
    assert "kept" in before["report"]
    path = tmp_path / "run.pt"
    pyro_dirmag.save(path, model, guide)
    if clear:
        pyro.clear_param_store()
    # a fresh model and guide, initialized differently; not run before loading
    model2, guide2 = _build(123)
    assert guide2.prototype_trace is None
    assert pyro_dirmag.load(path, model2, guide2) == (model2, guide2)
    check_params(model2, guide2)
    _assert_same(_outputs(model2, guide2, x), before)


def test_training_goes_on_after_loading():
    model, guide = _trained()
    buffer = io.BytesIO()
    pyro_dirmag.save(buffer, model, guide)
    pyro.clear_param_store()
    model2, guide2 = _build(7)
    buffer.seek(0)
    pyro_dirmag.load(buffer, model2, guide2)
    x, y = _data()
    bias = model2.net[5].bias.detach().clone()
    loc = guide2.posterior_mean()["net.3.magnitude"].clone()
    SVI(model2, guide2, Adam({"lr": 0.05}), DirMagELBO()).step(x[:10], y[:10])
    assert not torch.equal(model2.net[5].bias, bias)  # the loaded tensors train
    assert not torch.equal(guide2.posterior_mean()["net.3.magnitude"], loc)
    check_params(model2, guide2)


def test_param_store_route_raises_instead_of_predicting_at_chance():
    model, guide = _trained()
    x, _ = _data()
    state = pyro.get_param_store().get_state()
    pyro.clear_param_store()
    model2, guide2 = _build(123)
    pyro.get_param_store().set_state(state)
    with pytest.raises(ValueError, match="param store holds other tensors .*net.0.v"):
        predict(model2, guide2, x, mode="mean")
    with pytest.raises(ValueError, match="pyro_dirmag.load"):
        prune(model2, guide2)
    with pytest.raises(ValueError, match="param store"):
        pyro_dirmag.save(io.BytesIO(), model2, guide2)


def test_errors(tmp_path):
    model, guide = _build(0)
    with pytest.raises(ValueError, match="guide has not been run"):
        pyro_dirmag.save(tmp_path / "a.pt", model, guide)
    with pytest.raises(ValueError, match="guide has not been run"):
        example_inputs(guide)
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pyro_dirmag checkpoint"):
        pyro_dirmag.load(tmp_path / "other.pt", model, guide)
    trained, trained_guide = _trained()
    pyro_dirmag.save(tmp_path / "run.pt", trained, trained_guide)
    pyro.clear_param_store()
    other = DirMagModel(
        to_dirmag(nn.Sequential(nn.Flatten(), nn.Linear(16, 3))),
        lambda z: dist.Categorical(logits=z),
        40,
    )
    with pytest.raises(ValueError, match="model: the checkpoint does not fit it"):
        pyro_dirmag.load(tmp_path / "run.pt", other, DirMagGuide(other))


def test_version():
    from importlib.metadata import version

    assert pyro_dirmag.__version__ == version("pyro-dirmag")
