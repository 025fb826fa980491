"""Generic contract over every distribution of the package.

The ``contract`` argument runs over ``FIXTURES`` of ``conftest.py`` in this folder.
"""

import math
import pickle

import numpy as np
import pytest
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Distribution

import pyro_dirmag.distributions

DTYPES = [torch.float32, torch.float64]
NUM_SAMPLES = 20000


def examples(contract, dtype):
    return [make(dtype) for make in contract.examples]


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def probe(d, sample_shape=(5,)):
    """Values at which to evaluate log_prob: samples, or for an improper law reals."""
    if d.has_rsample or _sampleable(d):
        return d.sample(sample_shape)
    return torch.randn(sample_shape + d.batch_shape + d.event_shape).exp()


def _sampleable(d):
    try:
        d.sample()
    except NotImplementedError:
        return False
    return True


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample_shape", [(), (4,), (2, 3)], ids=str)
def test_shapes_and_dtype(contract, dtype, sample_shape):
    for d in examples(contract, dtype):
        x = probe(d, sample_shape)
        assert x.shape == sample_shape + d.batch_shape + d.event_shape
        lp = d.log_prob(x.to(dtype))
        assert lp.shape == sample_shape + d.batch_shape
        assert lp.dtype == dtype
        assert not lp.isnan().any()
        if contract.sampleable:
            assert x.dtype == dtype
            if d.has_rsample:
                assert d.rsample(sample_shape).shape == x.shape


def test_improper_laws_refuse_to_sample(contract):
    for d in examples(contract, torch.float64):
        assert _sampleable(d) == contract.sampleable


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_expand(contract, dtype):
    for d in examples(contract, dtype):
        new_shape = (3,) + d.batch_shape
        e = d.expand(new_shape)
        assert e.batch_shape == new_shape and e.event_shape == d.event_shape
        assert type(e) is type(d)
        x = probe(d, (2,)).to(dtype)
        expected = d.log_prob(x).unsqueeze(1).expand((2,) + new_shape)
        np.testing.assert_allclose(e.log_prob(x.unsqueeze(1)), expected, **tolerance(dtype))
        if contract.sampleable:
            assert e.sample((2,)).shape == (2,) + new_shape + d.event_shape
        assert d.expand(d.batch_shape).batch_shape == d.batch_shape


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_validate_args(contract, dtype):
    for make, name in contract.bad:
        with pytest.raises(ValueError, match=name):
            make(dtype)
    if contract.outside is None:
        return
    for make in contract.examples:
        d = make(dtype)
        d_quiet = d.expand(d.batch_shape)  # expand keeps validation; make a quiet copy:
        d_quiet._validate_args = False
        value = contract.outside(d).to(dtype)
        with pytest.raises(ValueError):
            d.log_prob(value)
        lp = d_quiet.log_prob(value)
        assert (lp == -math.inf).all(), lp


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_support(contract, dtype):
    if not contract.sampleable:
        pytest.skip("improper")
    for d in examples(contract, dtype):
        x = d.sample((1000,))
        assert d.support.check(x).all()
        assert d.log_prob(x).isfinite().all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scipy_reference(contract, dtype):
    if contract.scipy_logpdf is None:
        pytest.skip("no scipy reference")
    for d in examples(contract, dtype):
        x = d.sample((50,))
        expected = contract.scipy_logpdf(d, x.double().numpy())
        rtol = 1e-4 if dtype == torch.float32 else 1e-9
        np.testing.assert_allclose(d.log_prob(x).double().numpy(), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cdf_icdf_round_trip(contract, dtype):
    for d in examples(contract, dtype):
        try:
            d.cdf(d.sample()) if contract.sampleable else d.cdf(torch.ones(d.batch_shape))
        except NotImplementedError:
            pytest.skip("no cdf")
        u = torch.tensor([0.02, 0.25, 0.6, 0.97], dtype=dtype).reshape(
            (-1,) + (1,) * len(d.batch_shape)
        )
        u = u.expand((4,) + d.batch_shape)
        x = d.icdf(u)
        assert d.support.check(x).all()
        np.testing.assert_allclose(d.cdf(x), u, rtol=1e-4 if dtype == torch.float32 else 1e-9)
        # the cdf of samples is uniform: empirical quantiles
        samples = d.sample((NUM_SAMPLES,))
        empirical = (samples.unsqueeze(1) <= x).double().mean(0)
        np.testing.assert_allclose(empirical, u.double(), atol=0.015)


def test_moments(contract):
    if not contract.sampleable:
        pytest.skip("improper")
    for d in examples(contract, torch.float64):
        x = d.sample((NUM_SAMPLES,))
        for name, stat in [("mean", x.mean(0)), ("variance", x.var(0))]:
            try:
                expected = getattr(d, name)
            except NotImplementedError:
                continue
            # 5 standard errors of the estimate
            spread = x.var(0) if name == "mean" else (x - x.mean(0)).pow(4).mean(0)
            tol = 5 * (spread / NUM_SAMPLES).sqrt() + 1e-12
            assert ((stat - expected).abs() <= tol).all(), (name, stat, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pickle_round_trip(contract, dtype):
    for d in examples(contract, dtype):
        clone = pickle.loads(pickle.dumps(d))
        assert type(clone) is type(d) and clone.batch_shape == d.batch_shape
        x = probe(d, (3,)).to(dtype)
        assert torch.equal(clone.log_prob(x), d.log_prob(x))


def test_every_exported_law_has_a_fixture(contract_names):
    assert set(contract_names) == set(pyro_dirmag.distributions.__all__)


# ------------------------------------------------------------------ Pyro's generic checks
# The checks Pyro runs over its own laws (shapes of supports and scores, infer_shapes,
# the expand family and its errors), written for this package's fixtures.


def _arg_shape(value):
    """The shape ``infer_shapes`` takes for an argument: a tensor's shape, a
    distribution's batch shape, ``()`` for anything else (Python numbers)."""
    if torch.is_tensor(value):
        return value.shape
    if isinstance(value, Distribution):
        return value.batch_shape
    return torch.Size()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_infer_shapes(contract, dtype):
    if not contract.arguments:
        pytest.skip("no keyword-argument examples")
    for kwargs in contract.arguments:
        kwargs = kwargs(dtype)
        d = contract.cls(**kwargs)
        shapes = {name: _arg_shape(value) for name, value in kwargs.items()}
        if not contract.infers_shapes:
            with pytest.raises(NotImplementedError):
                contract.cls.infer_shapes(**shapes)
            continue
        batch_shape, event_shape = contract.cls.infer_shapes(**shapes)
        assert (batch_shape, event_shape) == (d.batch_shape, d.event_shape), shapes


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_support_shape(contract, dtype):
    for d in examples(contract, dtype):
        assert d.support.event_dim == d.event_dim
        assert not d.support.is_discrete
        x = probe(d, (3,))
        ok = d.support.check(x)
        assert ok.shape == (3,) + d.batch_shape
        assert ok.all()


def test_entropy_and_moment_shapes(contract):
    for d in examples(contract, torch.float64):
        for name, shape in [
            ("entropy", d.batch_shape),
            ("mean", d.batch_shape + d.event_shape),
            ("variance", d.batch_shape + d.event_shape),
        ]:
            try:
                value = d.entropy() if name == "entropy" else getattr(d, name)
            except NotImplementedError:
                continue
            assert value.shape == shape, name
            assert value.dtype == torch.float64, name


def test_score_errors_event_dim_mismatch(contract):
    for d in examples(contract, torch.float64):
        if not d.event_shape:
            continue
        with pytest.raises((ValueError, RuntimeError)):
            d.log_prob(torch.ones(d.shape() + (1,), dtype=torch.float64))


def test_score_errors_non_broadcastable_data_shape(contract):
    for d in examples(contract, torch.float64):
        shape = d.shape()
        if not d.batch_shape or shape[0] == 1:
            continue
        with pytest.raises((ValueError, RuntimeError)):
            d.log_prob(torch.ones((shape[0] + 1,) + shape[1:], dtype=torch.float64))


def _expand(d, batch_shape, default):
    """``d.expand``, or with ``default`` Pyro's generic expand (an ExpandedDistribution)."""
    return TorchDistribution.expand(d, batch_shape) if default else d.expand(batch_shape)


def check_sample_shapes(small, large):
    """The expanded law scores values as the original does, broadcast."""
    x = probe(small, ())
    expected = small.log_prob(x).expand(large.batch_shape)
    torch.testing.assert_close(large.log_prob(x), expected)
    x = probe(large, ())
    torch.testing.assert_close(large.log_prob(x), small.log_prob(x))
    if large.has_rsample or _sampleable(large):
        assert large.sample().shape == large.batch_shape + large.event_shape


@pytest.mark.parametrize("sample_shape", [(), (2,), (2, 3)], ids=str)
@pytest.mark.parametrize("shape_type", [torch.Size, tuple, list], ids=lambda t: t.__name__)
def test_expand_by(contract, sample_shape, shape_type):
    for small in examples(contract, torch.float64):
        large = small.expand_by(shape_type(sample_shape))
        assert large.batch_shape == sample_shape + small.batch_shape
        check_sample_shapes(small, large)


@pytest.mark.parametrize("default", [False, True], ids=["own", "default"])
@pytest.mark.parametrize("sample_shape", [(), (2,), (2, 3)], ids=str)
@pytest.mark.parametrize("shape_type", [torch.Size, tuple, list], ids=lambda t: t.__name__)
def test_expand_new_dim(contract, sample_shape, shape_type, default):
    for small in examples(contract, torch.float64):
        large = _expand(small, shape_type(sample_shape + tuple(small.batch_shape)), default)
        assert large.batch_shape == sample_shape + small.batch_shape
        check_sample_shapes(small, large)


@pytest.mark.parametrize("default", [False, True], ids=["own", "default"])
def test_expand_existing_dim(contract, default):
    for small in examples(contract, torch.float64):
        for dim, size in enumerate(small.batch_shape):
            if size != 1:
                continue
            batch_shape = list(small.batch_shape)
            batch_shape[dim] = 5
            large = _expand(small, torch.Size(batch_shape), default)
            assert large.batch_shape == torch.Size(batch_shape)
            check_sample_shapes(small, large)


@pytest.mark.parametrize("default", [False, True], ids=["own", "default"])
@pytest.mark.parametrize(
    "sample_shapes", [[(2, 1), (2, 3)], [(2, 1, 1), (2, 1, 3), (2, 5, 3)]], ids=str
)
def test_subsequent_expands_ok(contract, sample_shapes, default):
    for d in examples(contract, torch.float64):
        original = d.batch_shape
        for shape in sample_shapes:
            n = _expand(d, torch.Size(shape) + original, default)
            assert n.batch_shape == torch.Size(shape) + original
            check_sample_shapes(d, n)
            d = n


@pytest.mark.parametrize("default", [False, True], ids=["own", "default"])
@pytest.mark.parametrize(
    "initial_shape, proposed_shape",
    [((2, 1), (4, 3)), ((2, 4), (2, 2, 1)), ((1, 2, 1), (2, 1))],
    ids=str,
)
def test_expand_error(contract, initial_shape, proposed_shape, default):
    for small in examples(contract, torch.float64):
        large = _expand(small, torch.Size(initial_shape) + small.batch_shape, default)
        with pytest.raises((RuntimeError, ValueError)):
            large.expand(torch.Size(proposed_shape) + small.batch_shape)


@pytest.mark.parametrize("default", [False, True], ids=["own", "default"])
def test_expand_error_existing_dim(contract, default):
    # An existing dimension of size > 1 cannot change (LogUniform((3,)).expand((5,)), issue 14).
    for small in examples(contract, torch.float64):
        for dim, size in enumerate(small.batch_shape):
            if size == 1:
                continue
            batch_shape = list(small.batch_shape)
            batch_shape[dim] = size + 2
            with pytest.raises((RuntimeError, ValueError)):
                _expand(small, torch.Size(batch_shape), default)
