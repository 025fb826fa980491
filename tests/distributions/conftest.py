"""Fixture list for the generic distribution contract (``test_contract.py``).

Like Pyro's ``tests/distributions/conftest.py``: each :class:`Fixture` names a
distribution of the package, builds examples in a requested dtype, and optionally
gives a scipy reference log density, invalid parameters with the name the error must
mention, and a value outside the support. Examples given as keyword arguments also
check ``infer_shapes`` against the shapes of the law they build.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.distributions import Uniform

from pyro_dirmag.distributions import (
    HemisphereAngle,
    LogUniform,
    PlaneRotation,
    StretchedSymmetricBeta,
    SymmetricLogUniform,
    TangentNormalAngle,
    TangentProjectedNormal,
    TruncatedNormal,
)


class Fixture:
    """
    :param type cls: the distribution class.
    :param str name: test id.
    :param list examples: callables ``dtype -> distribution``.
    :param list arguments: callables ``dtype -> dict`` of keyword arguments of ``cls``:
        more examples, built as ``cls(**kwargs)``, whose argument shapes are passed to
        ``cls.infer_shapes`` (a distribution argument by its batch shape).
    :param bool infers_shapes: whether ``cls.infer_shapes`` gives the shapes (else it
        must raise ``NotImplementedError``).
    :param callable scipy_logpdf: optional ``(distribution, numpy value) -> numpy
        log density`` built from scipy.
    :param list bad: ``(callable dtype -> distribution, parameter name)`` pairs that
        must raise a ``ValueError`` naming the parameter under ``validate_args=True``.
    :param callable outside: ``distribution -> value`` outside the support, or None.
    :param bool sampleable: whether the law can be sampled (False: improper).
    """

    def __init__(
        self,
        cls,
        examples,
        *,
        arguments=(),
        infers_shapes=True,
        scipy_logpdf=None,
        bad=(),
        outside,
        sampleable=True,
    ):
        self.cls = cls
        self.name = cls.__name__
        self.arguments = list(arguments)
        self.examples = list(examples) + [
            (lambda dtype, kwargs=kwargs: cls(**kwargs(dtype))) for kwargs in self.arguments
        ]
        self.infers_shapes = infers_shapes
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
    # scipy's beta(c, c, loc=-pi/2, scale=pi) forms (x + pi/2)/pi with the rounded pi/2:
    # within ~1e-15 of an end (c < 1 samples there) that costs u its relative precision
    # (0.2 nats at c = 0.1 against mpmath). Take u = (pi/2 - |x|)/pi (symmetry) with the
    # rounding error of pi/2 added back, exact to a few ulps.
    c = d.concentration.double().numpy()
    u = ((math.pi / 2 - np.abs(x)) + 6.123233995736766e-17) / math.pi
    return scipy.stats.beta(c, c).logpdf(u) - math.log(math.pi)


def _tangent_normal_angle_logpdf(d, x):
    # r = tan(t) / scale is chi with df degrees of freedom
    scale = d.scale.double().numpy()
    r = np.tan(x) / scale
    return scipy.stats.chi(d.df).logpdf(r) - np.log(scale) - 2 * np.log(np.cos(x))


def _hemisphere_angle_logpdf(d, x):
    # cos(theta) = |2B - 1|, B ~ Beta((n-1)/2, (n-1)/2): p(theta) = f_B((1 + cos) / 2) sin
    c = (d.dim - 1) / 2
    return scipy.stats.beta(c, c).logpdf((1 + np.cos(x)) / 2) + np.log(np.sin(x))


def _off_sphere(d):
    return 2 * d.loc


FIXTURES = [
    Fixture(
        LogUniform,
        [lambda dtype: LogUniform((2, 3)), lambda dtype: LogUniform((2, 1))],
        arguments=[lambda dtype: dict(batch_shape=(3,))],
        infers_shapes=False,  # the batch shape is the argument itself
        outside=None,  # the support is the real line
        sampleable=False,
    ),
    Fixture(
        SymmetricLogUniform,
        [
            lambda dtype: SymmetricLogUniform(_t([0.1, 1.0], dtype), _t([10.0, 2.0], dtype)),
            lambda dtype: SymmetricLogUniform(_t(1e-3, dtype), _t(1e3, dtype)),
        ],
        arguments=[lambda dtype: dict(low=_t([[0.1], [1.0]], dtype), high=_t(10.0, dtype))],
        scipy_logpdf=_symmetric_log_uniform_logpdf,
        bad=[
            (lambda dtype: SymmetricLogUniform(_t(-1.0, dtype), _t(1.0, dtype)), "low"),
            (lambda dtype: SymmetricLogUniform(_t(2.0, dtype), _t(1.0, dtype)), "high"),
        ],
        outside=lambda d: torch.zeros_like(d.low),
    ),
    Fixture(
        TruncatedNormal,
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
        arguments=[
            # one scalar and one tensor bound of different values (issue 13)
            lambda dtype: dict(
                loc=_t([[0.0], [0.5], [-1.5]], dtype),
                scale=_t([[1.0], [0.3], [2.0]], dtype),
                low=-1.0,
                high=_t([0.5, 1.0, 2.0, math.inf], dtype),
            ),
            # scalar loc and bounds, batched scale (issue 13)
            lambda dtype: dict(
                loc=_t(0.0, dtype),
                scale=torch.linspace(0.1, 3.0, 10, dtype=dtype),
                low=-1.0,
                high=_t(2.0, dtype),
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
        outside=lambda d: d.low - 1,
    ),
    Fixture(
        StretchedSymmetricBeta,
        [
            lambda dtype: StretchedSymmetricBeta(_t([0.5, 3.0], dtype)),
            lambda dtype: StretchedSymmetricBeta(_t(20.0, dtype)),
        ],
        # c < 1 puts many Beta draws within an ulp of 0 or 1: they must not round onto
        # the ends +-pi/2, where the density is infinite (issue 14).
        arguments=[lambda dtype: dict(concentration=_t([[0.1], [0.5]], dtype))],
        scipy_logpdf=_stretched_beta_logpdf,
        bad=[(lambda dtype: StretchedSymmetricBeta(_t(-1.0, dtype)), "concentration")],
        outside=lambda d: torch.full_like(d.concentration, 2.0),
    ),
    Fixture(
        TangentNormalAngle,
        [
            lambda dtype: TangentNormalAngle(_t([0.1, 1.0], dtype), 2),
            lambda dtype: TangentNormalAngle(_t(0.05, dtype), 99),
        ],
        arguments=[lambda dtype: dict(scale=_t([[0.3], [2.0]], dtype), df=1)],
        scipy_logpdf=_tangent_normal_angle_logpdf,
        bad=[
            (lambda dtype: TangentNormalAngle(_t(-1.0, dtype), 2), "scale"),
            (lambda dtype: TangentNormalAngle(_t(1.0, dtype), 0), "df"),
        ],
        outside=lambda d: torch.full_like(d.scale, -0.5),
    ),
    Fixture(
        HemisphereAngle,
        [
            lambda dtype: HemisphereAngle(3, dtype=dtype).expand([2]),
            lambda dtype: HemisphereAngle(2, dtype=dtype),
            lambda dtype: HemisphereAngle(784, dtype=dtype).expand([3, 1]),
        ],
        infers_shapes=False,
        scipy_logpdf=_hemisphere_angle_logpdf,
        bad=[
            (lambda dtype: HemisphereAngle(1, dtype=dtype), "dim"),
            (lambda dtype: HemisphereAngle(2.5, dtype=dtype), "dim"),
        ],
        outside=lambda d: torch.full(d.batch_shape, 2.0, dtype=d._zero.dtype),
    ),
    Fixture(
        PlaneRotation,
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
        arguments=[
            lambda dtype: dict(
                loc=_unit(3, dtype, (2, 1)),
                angle=TruncatedNormal(
                    _t(0.3, dtype), _t([0.1, 0.2, 0.3], dtype), _t(0.0, dtype), math.pi / 2
                ),
            ),
            lambda dtype: dict(loc=_unit(4, dtype), angle=StretchedSymmetricBeta(_t(0.1, dtype))),
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
        TangentProjectedNormal,
        [
            lambda dtype: TangentProjectedNormal(_unit(3, dtype), _t([0.1, 1.0], dtype)),
            lambda dtype: TangentProjectedNormal(_unit(50, dtype, (2,)), _t(0.05, dtype)),
        ],
        arguments=[
            lambda dtype: dict(loc=_unit(3, dtype, (2,)), scale=_t([0.1, 1.0], dtype)),
            lambda dtype: dict(loc=_unit(2, dtype, (4, 1)), scale=_t([0.3, 2.0], dtype)),
        ],
        bad=[
            (lambda dtype: TangentProjectedNormal(_unit(3, dtype), _t(-1.0, dtype)), "scale"),
            (lambda dtype: TangentProjectedNormal(3 * _unit(3, dtype), _t(1.0, dtype)), "loc"),
        ],
        outside=_off_sphere,
    ),
]


@pytest.fixture
def contract_names():
    """The names of the laws in ``FIXTURES``."""
    return [f.name for f in FIXTURES]


def pytest_generate_tests(metafunc):
    """Run every test that takes a ``contract`` argument over all fixtures."""
    if "contract" in metafunc.fixturenames:
        metafunc.parametrize("contract", FIXTURES, ids=repr)
