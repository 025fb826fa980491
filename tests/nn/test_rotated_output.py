"""The fused dense DirMag output against autograd on the plain expression."""

import pytest
import torch

from pyro_dirmag.nn._rotated_output import rotated_output


def _plain(s, xsq, g, eps, t, bias, floor):
    rho = (xsq - s * s).clamp_min(floor).sqrt()
    y = g * (eps.cos() * s + eps.sin() * rho * t)
    return y if bias is None else y + bias


def _inputs(batch, units, per_example, bias, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 7, dtype=dtype, generator=gen)
    u = torch.nn.functional.normalize(torch.randn(units, 7, dtype=dtype, generator=gen), dim=-1)
    s = x @ u.T
    xsq = x.square().sum(-1, keepdim=True)
    shape = (batch, units) if per_example else (units,)
    g = torch.randn(shape, dtype=dtype, generator=gen)
    eps = torch.rand(shape, dtype=dtype, generator=gen)
    t = torch.rand(batch, units, dtype=dtype, generator=gen) * 2 - 1
    b = torch.randn(units, dtype=dtype, generator=gen) if bias else None
    return [s, xsq, g, eps, t, b]


@pytest.mark.parametrize("per_example", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_autograd(per_example, bias):
    args = _inputs(11, 4, per_example, bias, torch.float64)
    leaves = [
        a.clone().requires_grad_() if a is not None and i != 4 else a for i, a in enumerate(args)
    ]
    leaves2 = [
        a.detach().clone().requires_grad_() if a is not None and i != 4 else a
        for i, a in enumerate(args)
    ]
    y1 = rotated_output(*leaves, floor=1e-12)
    y2 = _plain(*leaves2, 1e-12)
    torch.testing.assert_close(y1, y2, rtol=1e-14, atol=1e-14)
    w = torch.randn_like(y1)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    for i, (a, b) in enumerate(zip(leaves, leaves2, strict=True)):
        if a is not None and i != 4:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    args = _inputs(3, 2, True, True, torch.float64, seed=1)
    args = [a.requires_grad_() if a is not None and i != 4 else a for i, a in enumerate(args)]
    assert torch.autograd.gradcheck(lambda *a: rotated_output(*a, floor=1e-12), tuple(args))


def test_clamped_norm_passes_no_gradient():
    # x parallel to u: ||x||^2 - s^2 = 0 is floored, and no gradient flows through it
    x = torch.tensor([[3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    u = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    g = torch.ones(1, 1, dtype=torch.float64)
    eps = torch.full((1, 1), 0.5, dtype=torch.float64)
    t = torch.ones(1, 1, dtype=torch.float64)
    y = rotated_output(x @ u.T, x.square().sum(-1, keepdim=True), g, eps, t, floor=1e-12)
    y.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    _plain(x2 @ u.T, x2.square().sum(-1, keepdim=True), g, eps, t, None, 1e-12).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    assert torch.isfinite(x.grad).all()
