import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.nn import PyroModule
from pyro.optim import ClippedAdam

from pyro_dirmag.infer import DirMagGuide, FiniteSVI, NonFiniteLossError
from pyro_dirmag.nn import DirMagLinear


class Regression(PyroModule):
    def __init__(self):
        super().__init__()
        self.fc = DirMagLinear(3, 1)

    def forward(self, x, y=None):
        with pyro.plate("data", 100, subsample_size=x.shape[0]):
            f = self.fc(x).squeeze(-1)
            pyro.sample("obs", dist.Normal(f, 1.0), obs=y)
        return f


def _params():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def test_non_finite_loss_stops_before_update():
    model = Regression()
    guide = DirMagGuide(model)
    svi = FiniteSVI(model, guide, ClippedAdam({"lr": 0.01}), TraceMeanField_ELBO())
    x, y = torch.randn(10, 3), torch.randn(10)
    for _ in range(2):
        assert math.isfinite(svi.step(x, y))
    before = _params()
    bad = y.clone()
    bad[3] = math.inf  # log p(y) = -inf
    with pytest.raises(NonFiniteLossError, match=r"step 3: .*'obs'.*no parameter was updated"):
        svi.step(x, bad)
    # An overflow inside the network (x * x): an infinite output or a NaN, caught at the
    # likelihood or where a distribution rejects it, before any update
    huge = x.clone()
    huge[3, 0] = 3e38
    with pytest.raises(
        NonFiniteLossError, match=r"step 3: (non-finite values|loss = inf; .*'obs')"
    ):
        svi.step(huge, y)
    after = _params()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
    # training goes on from the last good step
    assert math.isfinite(svi.step(x, y))
    assert svi.num_steps == 3


def test_plain_svi_would_corrupt_parameters():
    # The failure FiniteSVI prevents: one bad step turns parameters into NaN.
    model = Regression()
    guide = DirMagGuide(model)
    svi = SVI(model, guide, ClippedAdam({"lr": 0.01}), TraceMeanField_ELBO())
    x, y = torch.randn(10, 3), torch.randn(10)
    svi.step(x, y)
    bad = y.clone()
    bad[3] = math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svi.step(x, bad)
    assert any(not torch.isfinite(v).all() for v in pyro.get_param_store().values())
