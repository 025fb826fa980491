import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule
from pyro.optim import ClippedAdam

from pyro_dirmag.infer import LOG_ALPHA_MAX, LOG_ALPHA_MIN, DirMagGuide
from pyro_dirmag.nn import DirMagLinear


class Net(PyroModule):
    def __init__(self, num_data):
        super().__init__()
        self.num_data = num_data
        self.fc1 = DirMagLinear(6, 5)
        self.fc2 = DirMagLinear(5, 3)

    def forward(self, x, y=None):
        with pyro.plate("data", self.num_data, subsample_size=x.shape[0]):
            logits = self.fc2(F.relu(self.fc1(x)))
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def _data(n=40):
    x = torch.randn(n, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def test_initialization():
    net = Net(100)
    guide = DirMagGuide(net, init_log_alpha=-6.0, init_angle_loc=0.1, init_angle_scale=0.02)
    x, y = _data(10)
    guide(x, y)
    assert guide.site_names == ["fc1.magnitude", "fc1.angle", "fc2.magnitude", "fc2.angle"]
    assert torch.allclose(guide.magnitude_loc.fc1.magnitude, net.fc1.v.detach().norm(dim=1))
    for la in guide.log_alpha().values():
        assert torch.allclose(la, torch.full_like(la, -6.0), atol=1e-5)
    q = guide.posterior("fc2.angle").base_dist
    assert torch.allclose(q.loc, torch.full((3,), 0.1))
    assert torch.allclose(q.scale, torch.full((3,), 0.02))


def test_bad_arguments():
    net = Net(10)
    with pytest.raises(ValueError, match="init_log_alpha"):
        DirMagGuide(net, init_log_alpha=20.0)
    with pytest.raises(ValueError, match="init_angle_scale"):
        DirMagGuide(net, init_angle_scale=0.0)
    guide = DirMagGuide(net)
    with pytest.raises(RuntimeError, match="not been run"):
        guide.log_alpha()
    guide(*_data(10))
    with pytest.raises(KeyError, match="unknown DirMag site"):
        guide.posterior("fc3.magnitude")


@pytest.mark.parametrize("elbo", [TraceMeanField_ELBO, Trace_ELBO], ids=lambda e: e.__name__)
def test_svi_trains(elbo):
    x, y = _data(200)
    net = Net(len(x))
    guide = DirMagGuide(net)
    svi = SVI(net, guide, ClippedAdam({"lr": 0.05}), elbo())
    losses = []
    for _step in range(80):
        idx = torch.randperm(len(x))[:50]
        losses.append(svi.step(x[idx], y[idx]))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-20:]) < 0.7 * sum(losses[:20])


def test_predictive_with_model_and_guide_any_batch_size():
    x, y = _data(40)
    net = Net(1000)
    guide = DirMagGuide(net)
    svi = SVI(net, guide, ClippedAdam({"lr": 0.01}), TraceMeanField_ELBO())
    svi.step(x[:8], y[:8])
    out = Predictive(net, guide=guide, num_samples=4, return_sites=["_RETURN", "y"])(x[:17])
    assert out["_RETURN"].shape == (4, 17, 3)
    assert out["y"].shape == (4, 17)
    # fresh guide first run through Predictive itself (prototype from the prior)
    pyro.clear_param_store()
    net2 = Net(1000)
    out = Predictive(net2, guide=DirMagGuide(net2), num_samples=2)(x[:5])
    assert out["y"].shape == (2, 5)
    assert out["fc1.magnitude"].shape == (2, 5, 5)


def _clip_guide():
    net = Net(10)
    guide = DirMagGuide(net)
    guide(*_data(4))
    return guide


def test_log_alpha_clipping():
    guide = _clip_guide()
    m = guide.magnitude_loc.fc1.magnitude.detach()
    with torch.no_grad():
        log_abs = m.abs().log()
        guide.magnitude_log_scale.fc1.magnitude = log_abs + torch.tensor(
            [-20.0, -3.0, 0.0, 4.0, 20.0]
        )
    la = guide.log_alpha()["fc1.magnitude"]
    expected = torch.tensor([LOG_ALPHA_MIN, -6.0, 0.0, 8.0, LOG_ALPHA_MAX])
    assert torch.allclose(la, expected, atol=1e-4)
    # the posterior scale used for samples and KL is the clipped one
    q = guide.posterior("fc1.magnitude").base_dist
    assert torch.allclose(q.scale.log() - log_abs, 0.5 * expected, atol=1e-4)
    # outside the range the gradient w.r.t. log lambda vanishes (the bound follows m)
    with torch.no_grad():
        guide.magnitude_log_scale.fc1.magnitude = log_abs + torch.tensor(
            [-20.0, -3.0, 0.0, 4.0, 20.0]
        )
    raw = guide.magnitude_log_scale.fc1.magnitude
    grad = torch.autograd.grad(guide.posterior("fc1.magnitude").base_dist.scale.sum(), raw)[0]
    assert grad[0] == 0 and grad[4] == 0 and (grad[1:4] > 0).all()


def test_log_alpha_clipping_zero_magnitude():
    guide = _clip_guide()
    with torch.no_grad():
        loc = guide.magnitude_loc.fc1.magnitude.detach().clone()
        loc[0] = 0.0
        guide.magnitude_loc.fc1.magnitude = loc
    q = guide.posterior("fc1.magnitude").base_dist
    assert (q.scale > 0).all() and torch.isfinite(q.scale).all()
    assert guide.log_alpha()["fc1.magnitude"][0] == LOG_ALPHA_MAX
    loss = TraceMeanField_ELBO().loss(guide.model, guide, *_data(4))
    assert math.isfinite(loss)


def test_guide_plate_follows_batch_and_scales_copies():
    x, y = _data(12)
    net = Net(1000)
    guide = DirMagGuide(net)
    guide(x[:4], y[:4])
    tr = poutine.trace(guide).get_trace(x[:9], y[:9])
    site = tr.nodes["fc1.magnitude"]
    assert site["value"].shape == (9, 5)
    assert site["scale"] == pytest.approx(1 / 9)
    assert site["fn"].batch_shape == (9,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_magnitude_posterior_matches_torch_normal(dtype):
    # The guide's Normal draws as torch's (same variates, fused), with the same gradients
    # and log densities.
    from pyro_dirmag.infer.guide import _MagnitudeNormal

    loc = torch.randn(6, dtype=dtype, requires_grad=True)
    scale = (torch.rand(6, dtype=dtype) + 0.1).requires_grad_()
    ours, ref = (
        _MagnitudeNormal(loc, scale).expand((40, 6)),
        dist.Normal(loc, scale).expand((40, 6)),
    )
    torch.manual_seed(4)
    x = ours.rsample()
    torch.manual_seed(4)
    x_ref = ref.rsample()
    assert x.shape == (40, 6) and x.dtype == dtype
    # (one rounding apart: fused multiply-add against multiply then add)
    ulp = torch.finfo(dtype).eps * (loc.abs() + 6 * scale).detach()
    assert ((x - x_ref).abs() <= 2 * ulp).all()
    for a, b in zip(
        torch.autograd.grad((x * x).sum(), (loc, scale)),
        torch.autograd.grad((x_ref * x_ref).sum(), (loc, scale)),
        strict=True,
    ):
        assert torch.allclose(a, b, rtol=1e-5 if dtype == torch.float32 else 1e-12)
    assert torch.allclose(ours.log_prob(x_ref), ref.log_prob(x_ref), rtol=1e-6, atol=1e-6)
