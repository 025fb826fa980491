"""The hand-written backward passes are first-order only: asking for second derivatives
through them raises (``pyro_dirmag._autograd.first_order_only``) instead of returning
ones that miss the terms depending on their saved tensors, whether or not the incoming
gradient depends on the parameters. (The layers' output kernel has its own test in
``tests/nn/test_rotated_output.py``.)"""

import math

import pytest
import torch
from torch.distributions import Normal, Uniform, kl_divergence

from pyro_dirmag.distributions import LogUniform, TruncatedNormal
from pyro_dirmag.nn.weight_norm import unit_directions

SECOND = "second derivatives through {} are not supported"


def _params(*values):
    return [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]


def _assert_first_order_only(value, param, name):
    # a constant incoming gradient (sum) and one that depends on the parameters (square)
    for loss in (value.sum(), value.square().sum()):
        with pytest.raises(RuntimeError, match=SECOND.format(name)):
            torch.autograd.grad(loss, param, create_graph=True, retain_graph=True)
    # first derivatives are unaffected
    (grad,) = torch.autograd.grad(value.sum(), param)
    assert torch.isfinite(grad).all()


def test_truncated_normal_rsample():
    loc, scale = _params([0.1, 0.4], [0.2, 0.3])
    zero = torch.zeros((), dtype=torch.float64)
    d = TruncatedNormal(loc, scale, zero, zero + math.pi / 2)
    _assert_first_order_only(d.rsample((5,)), loc, "ImplicitICDF")


def test_truncated_normal_closed_form_entropy():
    loc, scale = _params([0.1, 0.4], [0.2, 0.3])
    zero = torch.zeros((), dtype=torch.float64)
    entropy = TruncatedNormal(loc, scale, zero, zero + math.pi / 2).entropy()
    _assert_first_order_only(entropy, scale, "ClosedFormEntropy")
    # the KL to the angle prior goes through it
    prior = Uniform(zero, zero + math.pi / 2)
    kl = kl_divergence(TruncatedNormal(loc, scale, zero, zero + math.pi / 2), prior)
    _assert_first_order_only(kl, loc, "ClosedFormEntropy")


def test_molchanov_kl():
    loc, scale = _params([0.5, -2.0], [0.1, 0.3])
    kl = kl_divergence(Normal(loc, scale), LogUniform())
    _assert_first_order_only(kl, scale, "MolchanovKL")


def test_unit_directions():
    (v,) = _params([[1.0, 2.0, 2.0], [0.5, -1.0, 0.0]])
    _assert_first_order_only(unit_directions(v, (1,)) * torch.arange(3.0), v, "Normalize")
