import math

import pytest
import scipy.stats
import torch

from pyro_dirmag.distributions import TruncatedNormal
from pyro_dirmag.infer._angle_posterior import AngleTruncatedNormal

HALF_PI = math.pi / 2
CASES = [(0.0, 0.05), (0.7, 0.3), (2.5, 0.2), (-0.4, 0.02), (1.0, 5.0), (-3.0, 0.05)]


@pytest.mark.parametrize("loc,scale", CASES, ids=str)
def test_samples_match_scipy(loc, scale):
    torch.manual_seed(0)
    d = AngleTruncatedNormal(torch.tensor(loc), torch.tensor(scale), 0.0, HALF_PI)
    x = d.rsample((20000,)).double()
    assert (x >= 0).all() and (x <= d.high.double()).all()
    a, b = -loc / scale, (HALF_PI - loc) / scale
    ref = scipy.stats.truncnorm(a, b, loc, scale)
    assert scipy.stats.kstest(x.numpy(), ref.cdf).pvalue > 1e-3


@pytest.mark.parametrize("loc,scale", [(0.0, 0.05), (0.7, 0.3), (2.5, 0.2), (-0.4, 0.02)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pathwise_gradient_of_mean(loc, scale, dtype):
    # d/dtheta E[eps] by Monte Carlo over pathwise gradients equals the derivative of the
    # closed-form mean (computed by the parent class).
    torch.manual_seed(1)
    # (float32 laws away from the tails take the float32 path of the sampler)
    params = torch.tensor([loc, scale], dtype=dtype, requires_grad=True)
    d = AngleTruncatedNormal(params[0], params[1], 0.0, HALF_PI)
    x = d.rsample((200000,))
    mc = torch.autograd.grad(x.double().mean(), params)[0].double()
    p64 = params.detach().double().requires_grad_(True)
    exact = torch.autograd.grad(TruncatedNormal(p64[0], p64[1], 0.0, HALF_PI).mean, p64)[0]
    assert torch.allclose(mc, exact, atol=5e-3 + 0.02 * exact.abs().max().item()), (mc, exact)


def test_deep_tail_falls_back_to_parent():
    d = AngleTruncatedNormal(torch.tensor([-10.0, 0.5]), torch.tensor([0.1, 0.1]), 0.0, HALF_PI)
    x = d.rsample((1000,))
    assert torch.isfinite(x).all() and (x >= 0).all()
    # mean of the deep-tail law ~ scale^2 / |loc| = 1e-3
    assert abs(x[:, 0].mean().item() - 1e-3) < 2e-4
    assert isinstance(d.expand((3, 2)), AngleTruncatedNormal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_entropy_matches_parent_and_scipy(dtype):
    locs = torch.tensor([0.0, 0.7, 2.5, -0.4, 1.0, -3.0, 1.6, 4.0], dtype=dtype)
    scales = torch.tensor([0.05, 0.3, 0.2, 0.02, 5.0, 0.05, 0.01, 0.1], dtype=dtype)
    mine = AngleTruncatedNormal(locs, scales, 0.0, HALF_PI).entropy()
    parent = TruncatedNormal(locs, scales, 0.0, HALF_PI).entropy()
    tol = 1e-4 if dtype == torch.float32 else 1e-8
    assert torch.allclose(mine, parent, atol=tol), (mine, parent)
    for loc, scale, h in zip(locs.tolist(), scales.tolist(), mine.tolist(), strict=True):
        a, b = -loc / scale, (HALF_PI - loc) / scale
        if a > 8 or b < -8:
            continue  # scipy's entropy loses all precision with both bounds in one tail
        ref = scipy.stats.truncnorm(a, b, loc, scale).entropy()
        assert h == pytest.approx(ref, abs=tol * 10), (loc, scale)
    # gradients agree too
    p1 = torch.stack([locs, scales]).requires_grad_(True)
    g1 = torch.autograd.grad(AngleTruncatedNormal(p1[0], p1[1], 0.0, HALF_PI).entropy().sum(), p1)
    g2 = torch.autograd.grad(TruncatedNormal(p1[0], p1[1], 0.0, HALF_PI).entropy().sum(), p1)
    assert torch.allclose(g1[0], g2[0], atol=1e-3 if dtype == torch.float32 else 1e-6)
