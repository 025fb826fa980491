"""A DirMag net with latent variables of its own: DirMagGuide(other=...) and AutoGuideList."""

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuideList,
    AutoLowRankMultivariateNormal,
    AutoNormal,
)
from pyro.nn import PyroModule, PyroSample
from pyro.optim import Adam
from torch import nn

from pyro_dirmag.infer import DirMagELBO, DirMagGuide
from pyro_dirmag.nn import DirMagModel, to_dirmag


class NormalLikelihood(PyroModule):
    def __init__(self):
        super().__init__()
        self.scale = PyroSample(dist.LogNormal(-1.0, 1.0))

    def forward(self, out):
        return dist.Normal(out.squeeze(-1), self.scale)


def _model():
    net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    return DirMagModel(to_dirmag(net), NormalLikelihood(), 48)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, generator=g) * 2 - 1
    return x, torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(48, generator=g)


OTHERS = {
    "AutoNormal": AutoNormal,
    "AutoDelta": AutoDelta,
    "AutoLowRankMVN": functools.partial(AutoLowRankMultivariateNormal, rank=1),
}


@pytest.mark.parametrize("other", list(OTHERS), ids=str)
def test_other_autoguide_trains_with_any_batch_size(other):
    model = _model()
    guide = DirMagGuide(model, other=OTHERS[other])
    x, y = _data()
    svi = SVI(model, guide, Adam({"lr": 0.05}), DirMagELBO())
    losses = [svi.step(x[:16], y[:16])]
    before = {k: v.detach().clone() for k, v in guide.other.named_parameters()}
    assert before, "the other guide has parameters"
    for size in (20, 12, 16, 7):
        losses.append(svi.step(x[:size], y[:size]))
    assert all(math.isfinite(v) for v in losses)
    after = dict(guide.other.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    trace = poutine.trace(guide).get_trace(x[:5], y[:5])
    assert trace.nodes["likelihood.scale"]["value"].shape == ()  # one global scale
    assert trace.nodes["net.0.magnitude"]["value"].shape == (5, 8)
    assert set(guide.other.median(x[:5], y[:5])) == {"likelihood.scale"}


def test_without_other_the_latent_is_refused():
    model = _model()
    x, y = _data()
    with pytest.raises(ValueError, match=r"latent sites \['likelihood.scale'\].*other=AutoNormal"):
        DirMagGuide(model)(x[:4], y[:4])
    # a first run without observations cannot tell the likelihood from a latent: no error
    DirMagGuide(_model())(x[:4])
    guide = DirMagGuide(_model(), other=AutoNormal)
    with pytest.raises(ValueError, match="observations included"):
        guide(x[:4])
    with pytest.raises(ValueError, match="other must be an autoguide class"):
        DirMagGuide(model, other=3)


def test_elbo_names_a_latent_the_guide_misses():
    model = _model()
    x, y = _data()
    guide = DirMagGuide(poutine.block(model, hide=["likelihood.scale"]))
    with pytest.warns(UserWarning, match="Found vars in model but not guide"):
        with pytest.raises(ValueError, match="'likelihood.scale' is latent but the guide"):
            DirMagELBO().loss(model, guide, x[:8], y[:8])


def test_auto_guide_list():
    model = _model()
    x, y = _data()
    guide = AutoGuideList(model)
    guide.append(DirMagGuide(poutine.block(model, hide=["likelihood.scale"])))
    guide.append(AutoNormal(poutine.block(model, expose=["likelihood.scale"])))
    svi = SVI(model, guide, Adam({"lr": 0.05}), DirMagELBO())
    losses = [svi.step(x[i : i + 16], y[i : i + 16]) for i in (0, 16, 32)]
    assert all(math.isfinite(v) for v in losses)
    # the list's plates keep the batch size of its first run
    with pytest.raises(ValueError, match="subsample size 16 .* this batch has 10 rows"):
        svi.step(x[:10], y[:10])
    # unless the list is given plates that follow the batch
    pyro.clear_param_store()
    model = _model()
    guide = AutoGuideList(
        model, create_plates=lambda x, y=None: pyro.plate("data", 48, subsample_size=len(x))
    )
    guide.append(DirMagGuide(poutine.block(model, hide=["likelihood.scale"])))
    guide.append(AutoNormal(poutine.block(model, expose=["likelihood.scale"])))
    svi = SVI(model, guide, Adam({"lr": 0.05}), DirMagELBO())
    assert all(math.isfinite(svi.step(x[:n], y[:n])) for n in (16, 10, 5))


def test_predict_with_either_composition():
    from pyro_dirmag.infer import predict

    x, y = _data()
    model = _model()
    guide = DirMagGuide(model, other=AutoNormal)
    svi = SVI(model, guide, Adam({"lr": 0.05}), DirMagELBO())
    svi.step(x[:16], y[:16])
    scale = guide.other.median(x, y)["likelihood.scale"]
    mean, variance = predict(model, guide, x, mode="mean", batch_size=10)
    assert torch.allclose(variance, scale**2 * torch.ones(48), rtol=1e-5)
    pyro.clear_param_store()
    model = _model()
    guide = AutoGuideList(
        model, create_plates=lambda x, y=None: pyro.plate("data", 48, subsample_size=len(x))
    )
    guide.append(DirMagGuide(poutine.block(model, hide=["likelihood.scale"])))
    guide.append(AutoNormal(poutine.block(model, expose=["likelihood.scale"])))
    svi = SVI(model, guide, Adam({"lr": 0.05}), DirMagELBO())
    svi.step(x[:16], y[:16])
    scale = guide[1].median(x, y)["likelihood.scale"]
    for mode in ("mean", "sample", "ensemble"):
        mean, variance = predict(model, guide, x, mode=mode, num_samples=3, batch_size=10)
        assert mean.shape == variance.shape == (48,)
    mean, variance = predict(model, guide, x, mode="mean", batch_size=10)
    assert torch.allclose(variance, scale**2 * torch.ones(48), rtol=1e-5)
