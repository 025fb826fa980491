"""
Pins the upstream behaviour behind the private torch and Pyro names this package uses
(pyro_dirmag/_upstream.py, whose TracePairELBO overrides Pyro's ``_get_trace``): each
test fails when torch or Pyro changes what the package relies on.
"""

import inspect
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import nn
from torch.distributions import constraints, kl_divergence

from pyro_dirmag._upstream import (
    TracePairELBO,
    check_mean_field_requirement,
    compile_recompile_limit,
    kl_is_registered,
    plain_module_state,
    pyro_fullname,
    pyro_module_latents,
)
from pyro_dirmag.infer import DirMagELBO

_LAWS = [
    dist.Normal(0.0, 1.0),
    dist.Laplace(0.0, 1.0),
    dist.Gamma(2.0, 1.0),
    dist.Beta(2.0, 3.0),
    dist.Uniform(-1.0, 1.0),
    dist.Exponential(1.0),
    dist.Poisson(2.0),
    dist.Bernoulli(0.3),
]


def test_kl_is_registered_is_whether_kl_divergence_dispatches():
    # Unregistered pairs raise torch's own "No KL(p || q) is implemented" error; a
    # registered function may still raise NotImplementedError itself (torch's KL of two
    # different exponential families does).
    registered = 0
    for p in _LAWS:
        for q in _LAWS:
            try:
                kl_divergence(p, q)
                dispatched = True
            except NotImplementedError as e:
                dispatched = "No KL(p || q) is implemented" not in str(e)
            assert kl_is_registered(type(p), type(q)) == dispatched, (p, q)
            registered += dispatched
    assert 0 < registered < len(_LAWS) ** 2
    assert kl_is_registered(dist.Normal, dist.Normal)
    assert not kl_is_registered(dist.Normal, dist.StudentT)


def test_check_mean_field_requirement_warns_on_a_different_site_order():
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("b", dist.Normal(0.0, 1.0))
        pyro.sample("a", dist.Normal(0.0, 1.0))

    model_trace = pyro.poutine.trace(model).get_trace()
    guide_trace = pyro.poutine.trace(guide).get_trace()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_mean_field_requirement(model_trace, model_trace)
    with pytest.warns(UserWarning, match="[Oo]rder"):
        check_mean_field_requirement(model_trace, guide_trace)


def test_pyro_fullname_is_the_site_name_pyro_gives():
    class Inner(PyroModule):
        def __init__(self):
            super().__init__()
            self.w = PyroSample(dist.Normal(0.0, 1.0))

    class Outer(PyroModule):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self):
            return self.inner.w

    outer = Outer()
    trace = pyro.poutine.trace(outer).get_trace()
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert sites == ["inner.w"] == [pyro_fullname(outer.inner, "w")]


def test_pyro_routes_every_mean_field_loss_through_get_trace():
    # DirMagELBO overrides TraceMeanField_ELBO._get_trace; if Pyro renamed or bypassed
    # the hook, DirMagELBO would silently become TraceMeanField_ELBO.
    params = inspect.signature(TraceMeanField_ELBO._get_trace).parameters
    assert list(params) == ["self", "model", "guide", "args", "kwargs"]

    calls = []

    class Spy(DirMagELBO):
        def _get_trace(self, *args):
            calls.append(1)
            return super()._get_trace(*args)

    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.3))
        pyro.sample("z", dist.Normal(loc, 1.0))

    pyro.clear_param_store()
    elbo = Spy()
    for method in (elbo.loss, elbo.differentiable_loss, elbo.loss_and_grads):
        before = len(calls)
        method(model, guide)
        assert len(calls) == before + 1, method.__name__


def test_compile_recompile_limit_sets_dynamos_limit():
    config = torch._dynamo.config
    before = config.recompile_limit
    with compile_recompile_limit(before + 5):
        assert config.recompile_limit == before + 5
    assert config.recompile_limit == before


def _normal_model_and_guide():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("w", dist.Gamma(2.0, 1.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.3))
        pyro.sample("z", dist.Normal(loc, 1.0))
        pyro.sample("w", dist.Gamma(loc.exp(), 1.0))

    return model, guide


def test_trace_pair_elbo_routes_every_loss_and_particle_through_trace_pair():
    calls = []

    class Spy(TracePairELBO):
        def trace_pair(self, *args):
            calls.append(1)
            return super().trace_pair(*args)

    model, guide = _normal_model_and_guide()
    for particles, vectorize in ((1, False), (3, False), (3, True)):
        elbo = Spy(num_particles=particles, vectorize_particles=vectorize, max_plate_nesting=0)
        for method in (elbo.loss, elbo.differentiable_loss, elbo.loss_and_grads):
            before = len(calls)
            method(model, guide)
            assert len(calls) == before + (1 if vectorize else particles), method.__name__


def test_trace_pair_elbo_is_trace_mean_field_elbo_by_default():
    model, guide = _normal_model_and_guide()
    loc = pyro.param("loc", torch.tensor(0.3)).unconstrained()
    results = []
    for elbo in (TraceMeanField_ELBO(), TracePairELBO()):
        pyro.set_rng_seed(1)
        loss = elbo.differentiable_loss(model, guide)
        results.append((loss, torch.autograd.grad(loss, loc)))
    (l1, (g1,)), (l2, (g2,)) = results
    assert l1 == l2 and g1 == g2


def test_pyro_module_latents_lists_pyro_sample_and_pyro_param_attributes():
    m = PyroModule[nn.Linear](3, 2)
    assert pyro_module_latents(m) == []
    assert pyro_module_latents(nn.Linear(3, 2)) == []
    m.weight = PyroSample(dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    m.bias = PyroParam(torch.ones(2), constraints.positive)
    assert sorted(pyro_module_latents(m)) == ["bias", "weight"]
    assert pyro_module_latents(PyroModule[nn.ReLU]()) == []


def test_plain_module_state_is_a_torch_modules_state():
    torch.manual_seed(0)
    m = PyroModule[nn.Linear](3, 2)
    pyro.poutine.trace(m).get_trace(torch.randn(4, 3))  # once run: Pyro's naming state set
    state = plain_module_state(m)
    assert set(state) == set(nn.Linear(3, 2).__dict__)
    plain = nn.Linear.__new__(nn.Linear)
    plain.__dict__.update(state)
    assert not isinstance(plain, PyroModule)
    x = torch.randn(4, 3)
    assert torch.equal(plain(x), m(x))
    assert plain.weight is m.weight


def test_keep_distribution_validation_restores_the_default():
    """Dynamo switches torch's distribution validation off for the whole process the
    first time something compiles (``torch._dynamo`` patching); ``keep_distribution_
    validation`` must undo exactly that, reading the private default it changes."""
    from torch.distributions import Distribution

    from pyro_dirmag._upstream import keep_distribution_validation

    assert Distribution._validate_args is True  # the default these tests rely on
    with keep_distribution_validation():
        Distribution.set_default_validate_args(False)
    assert Distribution._validate_args is True
