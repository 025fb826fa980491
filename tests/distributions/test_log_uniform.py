import math

import numpy as np
import pytest
import scipy.integrate
import torch
from pyro.distributions.testing.gof import auto_goodness_of_fit

from pyro_dirmag.distributions import LogUniform, SymmetricLogUniform

TEST_FAILURE_RATE = 1e-3
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_log_uniform_log_prob(dtype):
    d = LogUniform()
    x = torch.tensor([0.0, -0.0, -2.0, 3.0, 1e-30, -1e30], dtype=dtype)
    lp = d.log_prob(x)
    assert lp.dtype == dtype
    assert lp[0] == math.inf and lp[1] == math.inf
    np.testing.assert_allclose(lp[2:].double(), -x[2:].double().abs().log(), rtol=1e-6)
    assert not lp.isnan().any()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_log_uniform_gradient_at_zero(dtype):
    # Issue 13: abs' subgradient 0 times log's infinite derivative gave a NaN gradient at
    # 0; the derivative of -log|x| is -1/x, an infinity of the zero's sign there.
    x = torch.tensor([0.0, -0.0, 2.0, -0.5], dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(LogUniform((4,)).log_prob(x).sum(), x)
    assert grad.tolist() == [-math.inf, math.inf, -0.5, 2.0]


def test_log_uniform_shapes_and_expand():
    d = LogUniform((2, 3))
    assert d.batch_shape == (2, 3) and d.event_shape == ()
    assert d.log_prob(torch.tensor(2.0)).shape == (2, 3)
    assert d.log_prob(torch.ones(4, 1, 3)).shape == (4, 2, 3)
    e = d.expand((5, 2, 3))
    assert e.batch_shape == (5, 2, 3) and e.log_prob(torch.ones(3)).shape == (5, 2, 3)
    with pytest.raises(ValueError):
        d.log_prob(torch.ones(4))  # does not broadcast with batch shape (2, 3)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor(float("nan")))


def test_log_uniform_is_improper():
    d = LogUniform((3,))
    for draw in (d.sample, d.rsample, lambda: d()):
        with pytest.raises(NotImplementedError, match="improper"):
            draw()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_symmetric_log_uniform_density(dtype):
    low, high = 1e-3, 10.0
    d = SymmetricLogUniform(
        torch.tensor(low, dtype=dtype), torch.tensor(high, dtype=dtype), validate_args=False
    )
    # normalization: 2 * int_low^high p(x) dx = 1
    value, _ = scipy.integrate.quad(
        lambda x: d.log_prob(torch.tensor(x, dtype=dtype)).exp().item(), low, high, limit=200
    )
    assert 2 * value == pytest.approx(1.0, rel=1e-5)
    lp = d.log_prob(torch.tensor([0.0, 5e-4, -20.0, -1.0, 1.0], dtype=dtype))
    assert lp[:3].eq(-math.inf).all()
    assert lp[3].item() == pytest.approx(-math.log(2 * math.log(high / low)), rel=1e-6)
    assert lp[3] == lp[4]


def test_symmetric_log_uniform_sampling():
    d = SymmetricLogUniform(torch.tensor(0.01, dtype=torch.float64), 100.0)
    x = d.sample((20000,))
    assert d.support.check(x).all()
    assert (x > 0).double().mean().item() == pytest.approx(0.5, abs=0.02)
    # log|x| is uniform on [log low, log high]
    u = (x.abs().log() - math.log(0.01)) / math.log(1e4)
    assert auto_goodness_of_fit(u, torch.ones_like(u)) > TEST_FAILURE_RATE
    assert auto_goodness_of_fit(x[x > 0], 2 * d.log_prob(x[x > 0]).exp()) > TEST_FAILURE_RATE
    # cdf / icdf
    q = torch.tensor([0.01, 0.3, 0.5, 0.7, 0.99], dtype=torch.float64)
    np.testing.assert_allclose(d.cdf(d.icdf(q)), q, rtol=1e-12)
    empirical = (x[:, None] <= d.icdf(q)).double().mean(0)
    np.testing.assert_allclose(empirical, q, atol=0.015)


def test_symmetric_log_uniform_rsample_gradient():
    # E|x| = (high - low) / log(high / low); reparametrized gradient w.r.t. high.
    low = torch.tensor(0.5, dtype=torch.float64)
    high = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    mc = torch.autograd.grad(SymmetricLogUniform(low, high).rsample((200000,)).abs().mean(), high)
    exact = torch.autograd.grad((high - low) / (high.log() - low.log()), high)
    assert mc[0].item() == pytest.approx(exact[0].item(), rel=0.02)


def test_symmetric_log_uniform_validation():
    with pytest.raises(ValueError, match="low"):
        SymmetricLogUniform(torch.tensor(-1.0), torch.tensor(2.0), validate_args=True)
    with pytest.raises(ValueError, match="high"):
        SymmetricLogUniform(torch.tensor(3.0), torch.tensor(2.0), validate_args=True)
    d = SymmetricLogUniform(torch.tensor(1.0), torch.tensor(2.0), validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor(0.5))
    quiet = SymmetricLogUniform(torch.tensor(1.0), torch.tensor(2.0), validate_args=False)
    assert quiet.log_prob(torch.tensor(0.5)).item() == -math.inf
