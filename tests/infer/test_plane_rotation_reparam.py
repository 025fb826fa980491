import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_value
from pyro.optim import Adam
from torch.distributions import Uniform

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    TangentProjectedNormal,
)
from pyro_dirmag.distributions._sphere import geodesic_angle
from pyro_dirmag.infer.reparam import PlaneRotationReparam

TEST_FAILURE_RATE = 1e-3


def unit(n, index=0):
    x = torch.zeros(n, dtype=torch.float64)
    x[index] = 1.0
    return x


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlaneRotation(unit(3), StretchedSymmetricBeta(torch.tensor(2.0).double())),
        lambda: PlaneRotation(unit(3), Uniform(torch.tensor(0.2).double(), 1.2)),
        lambda: TangentProjectedNormal(unit(3), torch.tensor(0.5).double()),
    ],
    ids=["beta", "uniform", "tangent_normal"],
)
def test_reparametrized_samples_have_the_same_law(make):
    d = make()

    @poutine.reparam(config={"x": PlaneRotationReparam()})
    def model():
        with pyro.plate("data", 4000):
            return pyro.sample("x", d)

    trace = poutine.trace(model).get_trace()
    assert {"x", "x_angle", "x_normal"} <= set(trace.nodes)
    x = trace.nodes["x"]["value"]
    assert x.shape == (4000, 3) and d.support.check(x).all()
    # geodesic angle against the angle law ...
    theta, _, _ = geodesic_angle(d.loc, x)
    assert auto_goodness_of_fit(theta, d.angle_log_prob(theta).exp()) > TEST_FAILURE_RATE
    # ... and the direction around loc uniform (azimuth in the tangent plane)
    azimuth = torch.atan2(x[:, 2], x[:, 1])
    probs = torch.full_like(azimuth, 1 / (2 * math.pi))
    assert auto_goodness_of_fit(azimuth, probs) > TEST_FAILURE_RATE


def test_reparam_rejects_observed_and_wrong_sites():
    @poutine.reparam(config={"x": PlaneRotationReparam()})
    def observed():
        pyro.sample("x", PlaneRotation(unit(3), Uniform(0.0, 1.0)), obs=unit(3))

    with pytest.raises(NotImplementedError):
        observed()

    @poutine.reparam(config={"x": PlaneRotationReparam()})
    def wrong():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="PlaneRotation"):
        wrong()


def test_autonormal_svi_recovers_direction():
    # Prior: rotation of e1 by an angle Uniform(0, pi/2); data: noisy copies of a unit
    # vector at angle 0.6 from e1. The posterior concentrates at that vector.
    n = 3
    loc = unit(n)
    truth = torch.tensor([math.cos(0.6), math.sin(0.6) * 0.6, math.sin(0.6) * 0.8]).double()
    data = truth + 0.3 * torch.randn(50, n, dtype=torch.float64)

    @poutine.reparam(config={"x": PlaneRotationReparam()})
    def model(data):
        angle = Uniform(torch.tensor(0.0).double(), math.pi / 2)
        x = pyro.sample("x", PlaneRotation(loc, angle))
        with pyro.plate("data", len(data)):
            pyro.sample("y", dist.Normal(x, 0.3).to_event(1), obs=data)

    # A mean-field guide started at a random tangent direction can fall into the local
    # optimum eps -> 0 (the direction gets no gradient once sin(eps) ~ 0), so the site
    # is initialized at the normalized data mean, through the reparametrizer's inverse.
    init = init_to_value(values={"x": data.mean(0) / data.mean(0).norm()})
    guide = AutoNormal(model, init_loc_fn=init)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(300)]
    assert sum(losses[-50:]) < sum(losses[:50])
    x = Predictive(model, guide=guide, num_samples=500, return_sites=["x"])(data)["x"]
    x = x.reshape(500, n)
    posterior_mean = data.mean(0) / data.mean(0).norm()
    assert (x @ posterior_mean).mean().item() > 0.99
    assert (x @ truth).mean().item() > 0.95
    # the angle site's posterior sits at the data direction's angle from loc
    expected_angle = math.acos(posterior_mean @ loc)
    assert guide.median()["x_angle"].item() == pytest.approx(expected_angle, abs=0.05)
