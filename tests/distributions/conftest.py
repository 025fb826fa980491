"""Fixture list for the generic distribution contract (``test_contract.py``).

Like Pyro's ``tests/distributions/conftest.py``: each :class:`Fixture` names a
distribution of the package, builds examples in a requested dtype, and optionally
gives a scipy reference log density, invalid parameters with the name the error must
mention, and a value outside the support.
"""

import math

import numpy as np
import scipy.stats
import torch
from torch.distributions import Uniform

from pyro_dirmag.distributions import (
    LogUniform,
    PlaneRotation,
    StretchedSymmetricBeta,
    SymmetricLogUniform,
    TangentProjectedNormal,
    TruncatedNormal,
)


class Fixture:
    """
    :param str name: test id.
    :param list examples: callables ``dtype -> distribution``.
    :param callable scipy_logpdf: optional ``(distribution, numpy value) -> numpy
        log density`` built from scipy.
    :param list bad: ``(callable dtype -> distribution, parameter name)`` pairs that
        must raise a ``ValueError`` naming the parameter under ``validate_args=True``.
    :param callable outside: ``distribution -> value`` outside the support, or None.
    :param bool sampleable: whether the law can be sampled (False: improper).
    """

    def __init__(self, name, examples, *, scipy_logpdf=None, bad=(), outside, sampleable=True):
        self.name = name
        self.examples = examples
        self.scipy_logpdf = scipy_logpdf
        self.bad = bad
        self.outside = outside
        self.sampleable = sampleable

    def __repr__(self):
        return self.name


def _t(x, dtype):
    return torch.tensor(x, dtype=dtype)


def _unit(n, dtype, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch + (n,), generator=g, dtype=torch.float64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


def _symmetric_log_uniform_logpdf(d, x):
    low, high = d.low.double().numpy(), d.high.double().numpy()
    return scipy.stats.loguniform(low, high).logpdf(np.abs(x)) - math.log(2)


def _truncated_normal_logpdf(d, x):
    loc, scale, low, high = (v.double().numpy() for v in (d.loc, d.scale, d.low, d.high))
    a, b = (low - loc) / scale, (high - loc) / scale
    return scipy.stats.truncnorm(a, b, loc=loc, scale=scale).logpdf(x)


def _stretched_beta_logpdf(d, x):
    c = d.concentration.double().numpy()
    return scipy.stats.beta(c, c, loc=-math.pi / 2, scale=math.pi).logpdf(x)


def _off_sphere(d):
    return 2 * d.loc


FIXTURES = [
    Fixture(
        "LogUniform",
        [lambda dtype: LogUniform((2, 3))],
        outside=None,  # the support is the real line
        sampleable=False,
    ),
    Fixture(
        "SymmetricLogUniform",
        [
            lambda dtype: SymmetricLogUniform(_t([0.1, 1.0], dtype), _t([10.0, 2.0], dtype)),
            lambda dtype: SymmetricLogUniform(_t(1e-3, dtype), _t(1e3, dtype)),
        ],
        scipy_logpdf=_symmetric_log_uniform_logpdf,
        bad=[
            (lambda dtype: SymmetricLogUniform(_t(-1.0, dtype), _t(1.0, dtype)), "low"),
            (lambda dtype: SymmetricLogUniform(_t(2.0, dtype), _t(1.0, dtype)), "high"),
        ],
        outside=lambda d: torch.zeros_like(d.low),
    ),
    Fixture(
        "TruncatedNormal",
        [
            lambda dtype: TruncatedNormal(
                _t([0.0, 0.5], dtype),
                _t([1.0, 0.3], dtype),
                _t([-1.0, 0.0], dtype),
                _t([1.0, math.pi / 2], dtype),
            ),
            lambda dtype: TruncatedNormal(
                _t(0.0, dtype), _t(0.3, dtype), _t(-math.pi / 2, dtype), _t(math.pi / 2, dtype)
            ),
        ],
        scipy_logpdf=_truncated_normal_logpdf,
        bad=[
            (
                lambda dtype: TruncatedNormal(
                    _t(0.0, dtype), _t(-1.0, dtype), _t(-1.0, dtype), _t(1.0, dtype)
                ),
                "scale",
            ),
            (
                lambda dtype: TruncatedNormal(
                    _t(0.0, dtype), _t(1.0, dtype), _t(1.0, dtype), _t(-1.0, dtype)
                ),
                "low",
            ),
        ],
        outside=lambda d: d.high + 1,
    ),
    Fixture(
        "StretchedSymmetricBeta",
        [
            lambda dtype: StretchedSymmetricBeta(_t([0.5, 3.0], dtype)),
            lambda dtype: StretchedSymmetricBeta(_t(20.0, dtype)),
        ],
        scipy_logpdf=_stretched_beta_logpdf,
        bad=[(lambda dtype: StretchedSymmetricBeta(_t(-1.0, dtype)), "concentration")],
        outside=lambda d: torch.full_like(d.concentration, 2.0),
    ),
    Fixture(
        "PlaneRotation",
        [
            lambda dtype: PlaneRotation(
                _unit(3, dtype), StretchedSymmetricBeta(_t([4.0, 1.5], dtype))
            ),
            lambda dtype: PlaneRotation(
                _unit(2, dtype, (2,)),
                TruncatedNormal(_t(0.4, dtype), _t(0.2, dtype), _t(0.0, dtype), _t(1.5, dtype)),
            ),
            lambda dtype: PlaneRotation(
                _unit(10, dtype), Uniform(_t(0.0, dtype), _t(math.pi / 2, dtype))
            ),
        ],
        bad=[
            (
                lambda dtype: PlaneRotation(
                    2 * _unit(3, dtype), StretchedSymmetricBeta(_t(2.0, dtype))
                ),
                "loc",
            ),
            (
                lambda dtype: PlaneRotation(
                    _unit(3, dtype), Uniform(_t(-4.0, dtype), _t(1.0, dtype))
                ),
                "angle",
            ),
        ],
        outside=_off_sphere,
    ),
    Fixture(
        "TangentProjectedNormal",
        [
            lambda dtype: TangentProjectedNormal(_unit(3, dtype), _t([0.1, 1.0], dtype)),
            lambda dtype: TangentProjectedNormal(_unit(50, dtype, (2,)), _t(0.05, dtype)),
        ],
        bad=[
            (lambda dtype: TangentProjectedNormal(_unit(3, dtype), _t(-1.0, dtype)), "scale"),
            (lambda dtype: TangentProjectedNormal(3 * _unit(3, dtype), _t(1.0, dtype)), "loc"),
        ],
        outside=_off_sphere,
    ),
]


def pytest_generate_tests(metafunc):
    """Run every test that takes a ``contract`` argument over all fixtures."""
    if "contract" in metafunc.fixturenames:
        metafunc.parametrize("contract", FIXTURES, ids=repr)
