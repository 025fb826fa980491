"""The fused dense DirMag output against autograd on the plain expression, and its
compiled form (pyro_dirmag.kernels) against the hand-written one."""

import shutil

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.nn import PyroModule

from pyro_dirmag.infer import DirMagGuide
from pyro_dirmag.kernels import compiled_kernels
from pyro_dirmag.nn import DirMagLinear
from pyro_dirmag.nn._rotated_output import compiled_rotated_output, rotated_output


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


# ----- the compiled kernel (pyro_dirmag.kernels), which needs a C++ compiler ---------
needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler",
)


def _grads(fn, args, weights):
    leaves = [
        a.detach().clone().requires_grad_() if a is not None and i != 4 else a
        for i, a in enumerate(args)
    ]
    y = fn(*leaves)
    (y * weights).sum().backward()
    return y.detach(), [a.grad for i, a in enumerate(leaves) if a is not None and i != 4]


@needs_compiler
@pytest.mark.parametrize(
    "dtype, bias, rtol", [(torch.float64, True, 1e-12), (torch.float32, False, 2e-5)]
)
def test_compiled_kernel_matches_hand_written(dtype, bias, rtol):
    args = _inputs(13, 5, True, bias, dtype, seed=3)
    if dtype == torch.float64:
        # examples 0 and 1 parallel to unit 0: ||x||^2 - s^2 is floored there
        gen = torch.Generator().manual_seed(4)
        u = torch.nn.functional.normalize(torch.randn(5, 7, dtype=dtype, generator=gen), dim=-1)
        x = torch.randn(13, 7, dtype=dtype, generator=gen)
        x[:2] = torch.tensor([[3.0], [-0.5]], dtype=dtype) * u[0]
        args[0], args[1] = x @ u.T, x.square().sum(-1, keepdim=True)
        assert (args[1] - args[0].square())[:2, 0].abs().max() < 1e-12
    weights = torch.randn(13, 5, dtype=dtype)
    y_hand, g_hand = _grads(lambda *a: rotated_output(*a, floor=1e-12), args, weights)
    kernel = compiled_rotated_output
    with compiled_kernels():
        y_comp, g_comp = _grads(lambda *a: rotated_output(*a, floor=1e-12), args, weights)
    assert not kernel.failed
    assert any(key[1][0] == (13, 5) and key[1][1] == dtype for key in kernel._signatures)
    torch.testing.assert_close(y_comp, y_hand, rtol=rtol, atol=rtol)
    for a, b in zip(g_comp, g_hand, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol)


@needs_compiler
def test_compiled_kernel_in_an_elbo_gradient():
    # The same draws (same seed) give the same loss and gradients with the kernel on.
    class Net(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = DirMagLinear(6, 3)

        def forward(self, x, y=None):
            with pyro.plate("data", 100, subsample_size=x.shape[0]):
                logits = self.fc(x)
                pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    net = Net().double()
    guide = DirMagGuide(net)
    x = torch.randn(9, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    elbo = TraceMeanField_ELBO()
    elbo.differentiable_loss(net, guide, x, y)  # sets the guide's parameters up
    params = [p for _, p in sorted(pyro.get_param_store().named_parameters())]

    def loss_and_grads():
        pyro.set_rng_seed(5)
        loss = elbo.differentiable_loss(net, guide, x, y)
        return loss.detach(), torch.autograd.grad(loss, params)

    eager = loss_and_grads()
    with compiled_kernels():
        compiled = loss_and_grads()
    assert not compiled_rotated_output.failed
    assert any(key[1][0] == (9, 3) for key in compiled_rotated_output._signatures)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-12, atol=0)
    for a, b in zip(compiled[1], eager[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_compiled_kernel_only_for_learned_angles(monkeypatch):
    # prototype traces and predictions (angles without gradients) stay eager
    calls = []
    monkeypatch.setattr(compiled_rotated_output, "_compiled", lambda *a: calls.append(a))
    monkeypatch.setattr(compiled_rotated_output, "_signatures", set())
    s, xsq, g, eps, t, b = _inputs(4, 3, True, True, torch.float64)
    with compiled_kernels():
        y = rotated_output(s.requires_grad_(), xsq, g.requires_grad_(), eps, t, b)
        assert calls == []
        torch.testing.assert_close(y, _plain(s, xsq, g, eps, t, b, 1e-12))
        rotated_output(s, xsq, g, eps.requires_grad_(), t, b)
    assert len(calls) == 1


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_compiler)])
def test_second_derivatives_raise(compiled):
    # the backward is not itself differentiable: asking for second derivatives raises
    # instead of returning ones that miss terms
    args = _inputs(4, 3, True, True, torch.float64, seed=2)
    args = [a.requires_grad_() if a is not None and i != 4 else a for i, a in enumerate(args)]
    with compiled_kernels(compiled):
        y = rotated_output(*args, floor=1e-12)
    if compiled:  # AOTAutograd's own error, at the second backward
        (grad_s,) = torch.autograd.grad(y.square().sum(), args[0], create_graph=True)
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(grad_s.sum(), args[3])
    else:
        with pytest.raises(RuntimeError, match="through RotatedOutput are not supported"):
            torch.autograd.grad(y.square().sum(), args[0], create_graph=True)


@needs_compiler
def test_compiled_kernel_keeps_distribution_validation():
    """The first torch.compile of a process switches torch's distribution validation
    off for the whole process (Dynamo's patching); the kernels restore it, so bad
    parameters still raise instead of flowing on as NaN."""
    from pyro_dirmag.kernels import CompiledKernel

    kernel = CompiledKernel(lambda a: a.sin() * 2)  # a fresh kernel: a new compilation
    with compiled_kernels():
        assert kernel(torch.randn(4, dtype=torch.float64)) is not None
    assert not kernel.failed
    assert torch.distributions.Distribution._validate_args
    with pytest.raises(ValueError, match="loc"):
        torch.distributions.Normal(torch.tensor(float("nan")), 1.0)
