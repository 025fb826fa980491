"""Property-based checks (hypothesis) of every law in ``pyro_dirmag.distributions.__all__``.

Each law's strategy draws broadcast-compatible parameter shapes (scalars, ``(k,)``,
``(k, 1)``, ``(1, k)``, ...), a dtype, and parameters at and near the edges (infinite
bounds, bounds equal to ``loc``, intervals 1e-6 wide, 40 standard deviations into a tail,
concentrations far below 1, unit vectors in dimensions 2 to 1000). Every method is then
checked for its documented shape, finiteness where the maths is finite, agreement with a
slow reference (scipy, mpmath-checked formulas, or the law's general path), expand,
pickling, validation, and NaN-free gradients.

The fast variants run in CI (``derandomize=True``: the same examples every run); the
``slow`` variants draw more examples and run under ``make test`` too.
"""

import math
import pickle

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributions import Uniform

import pyro_dirmag.distributions as pdd
from pyro_dirmag._shapes import broadcast_size
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

INF = math.inf
DTYPES = [torch.float32, torch.float64]
_BASE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
FAST = settings(_BASE, max_examples=12)
SLOW = settings(_BASE, max_examples=60)
# Relative tolerances against a reference computed in the same dtype.
RTOL = {torch.float32: 2e-4, torch.float64: 1e-9}


# ------------------------------------------------------------------------ strategies
@st.composite
def full_shapes(draw):
    """A batch shape that parameter shapes are cut from."""
    k = draw(st.integers(2, 3))
    return torch.Size(draw(st.sampled_from([(), (k,), (k, 1), (1, k), (2, k)])))


@st.composite
def sub_shapes(draw, full):
    """A shape broadcasting to ``full``: leading dimensions dropped, others kept or 1."""
    drop = draw(st.integers(0, len(full)))
    return torch.Size(draw(st.sampled_from([size, 1])) for size in full[drop:])


@st.composite
def arrays(draw, shape, elements):
    """A float64 numpy array of ``shape`` with entries drawn from ``elements``."""
    n = math.prod(shape)
    values = draw(st.lists(elements, min_size=n, max_size=n))
    return np.array(values, dtype=np.float64).reshape(tuple(shape))


def tensor(x, dtype, requires_grad=False):
    return torch.tensor(x, dtype=dtype).requires_grad_(requires_grad)


dtypes = st.sampled_from(DTYPES)
sample_shapes = st.sampled_from([(), (3,), (2, 1)])


# ------------------------------------------------------------------------ generic checks
def value_shapes(d, sample_shape):
    """Value shapes broadcasting with ``d``'s batch shape: scalar, the batch shape with
    dimensions set to 1, a sample shape in front."""
    batch = d.batch_shape
    return [
        torch.Size(),
        torch.Size([1] * len(batch)),
        torch.Size(sample_shape) + batch,
        torch.Size(sample_shape) + torch.Size([1] * len(batch)),
    ]


def check_no_nan_grads(output, inputs):
    inputs = [t for t in inputs if torch.is_tensor(t) and t.requires_grad]
    if not inputs:
        return
    grads = torch.autograd.grad(output.sum(), inputs, allow_unused=True)
    for t, g in zip(inputs, grads, strict=True):
        if g is not None:
            assert g.shape == t.shape
            assert not g.isnan().any(), g


def check_common(d, sample_shape, quiet):
    """Shapes, samples inside the support, expand, pickling, value validation.

    ``quiet`` is the same law without validation (values outside some law's support
    then score ``-inf``).
    """
    batch, event = d.batch_shape, d.event_shape
    sample_shape = torch.Size(sample_shape)
    x = d.sample(sample_shape)
    assert x.shape == sample_shape + batch + event and x.dtype == d_dtype(d)
    assert x.isfinite().all()
    assert d.support.check(x).all()
    if d.has_rsample:
        assert d.rsample(sample_shape).shape == x.shape
    lp = d.log_prob(x)
    assert lp.shape == sample_shape + batch and lp.dtype == x.dtype
    assert not lp.isnan().any()
    # values of every broadcastable shape (one sampled value, which may lie outside
    # another law's support: scored without validation)
    first = x.reshape((-1,) + event)[0]
    for shape in value_shapes(d, sample_shape):
        lpv = quiet.log_prob(first.expand(shape + event))
        assert lpv.shape == broadcast_size(shape, batch)
        assert not lpv.isnan().any()
    # expand: a new dimension in front of the batch scores as the original, broadcast
    e = d.expand((2,) + batch)
    assert e.batch_shape == (2,) + batch
    n = len(sample_shape)
    expected = lp.unsqueeze(n).expand(sample_shape + (2,) + batch)
    torch.testing.assert_close(e.log_prob(x.unsqueeze(n)), expected)
    assert e.sample().shape == (2,) + batch + event
    # pickling
    clone = pickle.loads(pickle.dumps(d))
    assert torch.equal(clone.log_prob(x), lp)
    # validation of values: wrong event or batch shapes raise ValueError
    if batch and batch[0] > 1:
        bad = torch.ones((batch[0] + 1,) + batch[1:] + event, dtype=x.dtype)
        with pytest.raises(ValueError):
            d.log_prob(bad)
    return x, lp


def d_dtype(d):
    for name in ("loc", "scale", "low", "concentration", "_zero"):
        t = getattr(d, name, None)
        if torch.is_tensor(t):
            return t.dtype
    raise AssertionError(f"no tensor parameter in {d!r}")


def close(actual, expected, dtype, scale=1.0):
    """``actual`` agrees with ``expected`` to the dtype's tolerance (``scale`` times it)."""
    tol = scale * RTOL[dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=tol, atol=tol, equal_nan=False
    )


def test_every_exported_law_has_a_property_test():
    assert set(pdd.__all__) == set(CHECKS)


# ------------------------------------------------------------------------ TruncatedNormal
TN_LOCS = [0.0, 0.5, -1.3, 2.0]
TN_SCALES = [1.0, 0.3, 2.0, 0.05, 0.025]
TN_BASES = [-2.0, -0.5, 0.0, 0.5, 1.5, 2.0]  # some equal to a loc
TN_WIDTHS = [1e-6, 1e-3, 0.7, 4.0, INF]  # relative to max(1, |bound|)
# the documented reach: the interval within 40 (float32) or 1000 (float64) sd of the mode
TN_REACH = {torch.float32: 40.0, torch.float64: 1000.0}


@st.composite
def truncated_normals(draw):
    """``(dtype, loc, scale, low, high)``: numpy arrays (or a Python float bound), with
    ``low < high`` in ``dtype`` and the interval within ``TN_REACH`` of the mode."""
    dtype = draw(dtypes)
    full = draw(full_shapes())
    loc = draw(arrays(draw(sub_shapes(full)), st.sampled_from(TN_LOCS)))
    scale = draw(arrays(draw(sub_shapes(full)), st.sampled_from(TN_SCALES)))
    # One bound is drawn, the other one a width away from it (or infinite, or finite
    # where the first is infinite), with a shape that broadcasts over the first's.
    sign = draw(st.sampled_from([1.0, -1.0]))  # 1: low is drawn first
    base_shape = draw(sub_shapes(full))
    base = draw(arrays(base_shape, st.sampled_from(TN_BASES + [-sign * INF])))
    other_shape = broadcast_size(base_shape, draw(sub_shapes(full)))
    width = draw(arrays(other_shape, st.sampled_from(TN_WIDTHS)))
    fallback = draw(arrays(other_shape, st.sampled_from(TN_BASES + [sign * INF])))
    b = np.broadcast_to(base, other_shape)
    with np.errstate(invalid="ignore"):
        other = np.where(np.isinf(b), fallback, b + sign * width * np.maximum(1.0, np.abs(b)))
    low, high = (base, other) if sign > 0 else (other, base)
    # the rounded bounds are ordered, and the interval within reach of every mode
    low_t, high_t = (torch.tensor(v, dtype=dtype).double() for v in (low, high))
    assume_all(low_t < high_t)
    loc_t, scale_t = (torch.tensor(v, dtype=dtype).double() for v in (loc, scale))
    alpha, beta = (low_t - loc_t) / scale_t, (high_t - loc_t) / scale_t
    near = torch.where(alpha > 0, alpha, torch.where(beta < 0, -beta, 0.0))
    assume_all(near <= TN_REACH[dtype])
    return dtype, loc, scale, low, high


def assume_all(mask):
    from hypothesis import assume

    assume(bool(mask.all()))


def _tn_params(dtype, arrays_, requires_grad):
    """Leaf tensors (a 0-d bound passed as a Python float half the time: the issue's
    ``TruncatedNormal(loc, scale, -1.0, tensor)``)."""
    out = []
    for i, a in enumerate(arrays_):
        if i >= 2 and a.ndim == 0 and hash(a.tobytes()) % 2:
            out.append(float(a))
        else:
            out.append(tensor(a, dtype, requires_grad))
    return out


def check_truncated_normal(data):
    torch.manual_seed(0)
    dtype, *arrays_ = data.draw(truncated_normals())
    sample_shape = torch.Size(data.draw(sample_shapes))
    params = _tn_params(dtype, arrays_, requires_grad=True)
    d = TruncatedNormal(*params, validate_args=True)
    quiet = TruncatedNormal(*params, validate_args=False)
    batch = d.batch_shape
    x, lp = check_common(d, sample_shape, quiet)
    assert lp.isfinite().all()  # every sample inside, where the density is finite
    cdf = d.cdf(x)
    assert cdf.shape == x.shape and ((cdf >= 0) & (cdf <= 1)).all()
    u = torch.rand(sample_shape + batch, dtype=dtype).clamp(1e-6, 1 - 1e-6)
    q = d.icdf(u)
    assert q.shape == u.shape and q.isfinite().all() and d.support.check(q).all()
    h, mean, var = d.entropy(), d.mean, d.variance
    for t in (h, mean, var):
        assert t.shape == batch and t.dtype == dtype and t.isfinite().all()
    assert ((mean >= d.low) & (mean <= d.high)).all() and (var >= 0).all()
    # the general path: every parameter materialized at the batch shape
    if batch.numel() > 1:
        ref = TruncatedNormal(
            *(t.detach().expand(batch).clone() for t in (d.loc, d.scale, d.low, d.high)),
            validate_args=False,
        )
        close(lp, ref.log_prob(x), dtype)
        close(cdf, ref.cdf(x), dtype)
        close(q, ref.icdf(u), dtype)
        close(h, ref.entropy(), dtype)
        close(mean, ref.mean, dtype)
        close(var, ref.variance, dtype, scale=10)
    # scipy where it is accurate (moderate standardized bounds, float64)
    if dtype == torch.float64:
        loc, scale, low, high = (t.detach().numpy() for t in (d.loc, d.scale, d.low, d.high))
        a, b = (low - loc) / scale, (high - loc) / scale
        if np.all(np.where(np.isinf(a), 0, np.abs(a)) <= 6) and np.all(
            np.where(np.isinf(b), 0, np.abs(b)) <= 6
        ):
            ref = scipy.stats.truncnorm(a, b, loc=loc, scale=scale)
            xn = x.detach().numpy()
            np.testing.assert_allclose(lp.detach(), ref.logpdf(xn), rtol=1e-7, atol=1e-7)
            np.testing.assert_allclose(cdf.detach(), ref.cdf(xn), rtol=1e-7, atol=1e-12)
    # no NaN in any gradient
    check_no_nan_grads(d.rsample(sample_shape), params)
    xv = x.detach().requires_grad_()
    check_no_nan_grads(d.log_prob(xv), params + [xv])
    check_no_nan_grads(d.cdf(x.detach()), params)
    for t in (d.entropy(), d.mean, d.variance):
        check_no_nan_grads(t, params)


@FAST
@given(st.data())
def test_truncated_normal(data):
    check_truncated_normal(data)


# ------------------------------------------------------------------------ LogUniform
LU_VALUES = [0.0, -0.0, 1e-30, -2.0, 3.0, -1e30, 0.5]


def check_log_uniform(data):
    dtype = data.draw(dtypes)
    batch = data.draw(full_shapes())
    d = LogUniform(batch, validate_args=True)
    assert d.batch_shape == batch and d.event_shape == ()
    with pytest.raises(NotImplementedError):
        d.sample()
    with pytest.raises(NotImplementedError):
        LogUniform.infer_shapes(batch_shape=batch)
    shape = data.draw(sub_shapes(batch)) if data.draw(st.booleans()) else (3,) + batch
    value = tensor(data.draw(arrays(shape, st.sampled_from(LU_VALUES))), dtype, True)
    lp = d.log_prob(value)
    assert lp.shape == broadcast_size(shape, batch) and lp.dtype == dtype
    expected = -value.detach().double().abs().log()
    close(lp, expected.expand(lp.shape), dtype)
    (grad,) = torch.autograd.grad(lp.sum(), value)
    assert not grad.isnan().any()
    # d/dx (-log|x|) = -1/x (an infinity of the zero's sign at 0), summed over the batch
    copies = lp.numel() // value.numel()
    close(grad, -copies / value.detach().double(), dtype)
    first = value.detach().reshape(-1)[0]
    e = d.expand((2,) + batch)
    assert e.batch_shape == (2,) + batch
    torch.testing.assert_close(e.log_prob(first), d.log_prob(first).expand((2,) + batch))
    clone = pickle.loads(pickle.dumps(d))
    assert torch.equal(clone.log_prob(value.detach()), lp.detach())
    with pytest.raises(ValueError, match="value"):
        d.log_prob(torch.full(shape, math.nan, dtype=dtype))
    if batch and batch[-1] > 1:
        with pytest.raises(ValueError, match="batch_shape"):
            d.expand(batch[:-1] + (batch[-1] + 1,))


@FAST
@given(st.data())
def test_log_uniform(data):
    check_log_uniform(data)


# ------------------------------------------------------------------------ SymmetricLogUniform
SLU_LOWS = [1e-6, 1e-3, 0.5, 1.0]
SLU_RATIOS = [1 + 1e-6, 2.0, 1e3, 1e6]


@st.composite
def symmetric_log_uniforms(draw):
    """One bound drawn, the other a ratio away, with a shape broadcasting over the first's."""
    dtype = draw(dtypes)
    full = draw(full_shapes())
    base_shape = draw(sub_shapes(full))
    base = draw(arrays(base_shape, st.sampled_from(SLU_LOWS)))
    other_shape = broadcast_size(base_shape, draw(sub_shapes(full)))
    ratio = draw(arrays(other_shape, st.sampled_from(SLU_RATIOS)))
    if draw(st.booleans()):
        low, high = base, np.broadcast_to(base, other_shape) * ratio
    else:
        low, high = np.broadcast_to(base, other_shape) / ratio, base
    assume_all(torch.tensor(low, dtype=dtype) < torch.tensor(high, dtype=dtype))
    return dtype, low, high


def check_symmetric_log_uniform(data):
    torch.manual_seed(0)
    dtype, low, high = data.draw(symmetric_log_uniforms())
    sample_shape = torch.Size(data.draw(sample_shapes))
    params = [tensor(low, dtype, True), tensor(high, dtype, True)]
    d = SymmetricLogUniform(*params, validate_args=True)
    quiet = SymmetricLogUniform(*params, validate_args=False)
    batch = d.batch_shape
    x, lp = check_common(d, sample_shape, quiet)
    assert lp.isfinite().all()
    h, mean, var = d.entropy(), d.mean, d.variance
    for t in (h, mean, var):
        assert t.shape == batch and t.dtype == dtype and t.isfinite().all()
    u = torch.rand(sample_shape + batch, dtype=dtype)
    q = d.icdf(u)
    assert q.shape == u.shape and d.support.check(q).all()
    cdf = d.cdf(q)
    assert ((cdf >= 0) & (cdf <= 1)).all()
    # up to the cdf's step over a few ulps of the quantile (8 ulps wide intervals exist)
    slack = 4 * d.log_prob(q).exp() * q.abs() * torch.finfo(dtype).eps
    assert ((cdf - u).abs() <= 10 * RTOL[dtype] + slack).all()
    # scipy: |x| is log-uniform on [low, high], the sign a fair coin
    lo, hi = (t.detach().double().numpy() for t in (d.low, d.high))
    ref = scipy.stats.loguniform(lo, hi)
    xn = x.detach().double().numpy()
    close(lp, torch.as_tensor(ref.logpdf(np.abs(xn)) - math.log(2)), dtype, scale=10)
    close(h, torch.as_tensor(ref.entropy() + math.log(2)), dtype, scale=10)
    close(var, torch.as_tensor(ref.moment(2)), dtype, scale=10)
    check_no_nan_grads(d.rsample(sample_shape), params)
    xv = x.detach().requires_grad_()
    check_no_nan_grads(d.log_prob(xv), params + [xv])
    check_no_nan_grads(d.cdf(x.detach()), params)
    for t in (d.entropy(), d.variance):
        check_no_nan_grads(t, params)


@FAST
@given(st.data())
def test_symmetric_log_uniform(data):
    check_symmetric_log_uniform(data)


# ------------------------------------------------------------------------ StretchedSymmetricBeta
SSB_CONCENTRATIONS = [0.05, 0.1, 0.5, 1.0, 3.0, 100.0]


def _ssb_logpdf(c, x):
    """scipy's Beta at u = (pi/2 - |x|)/pi, formed exactly (see conftest.py)."""
    u = ((math.pi / 2 - np.abs(x)) + 6.123233995736766e-17) / math.pi
    return scipy.stats.beta(c, c).logpdf(u) - math.log(math.pi)


def check_stretched_symmetric_beta(data):
    torch.manual_seed(0)
    dtype = data.draw(dtypes)
    shape = data.draw(sub_shapes(data.draw(full_shapes())))
    c = tensor(data.draw(arrays(shape, st.sampled_from(SSB_CONCENTRATIONS))), dtype, True)
    sample_shape = torch.Size(data.draw(sample_shapes))
    d = StretchedSymmetricBeta(c, validate_args=True)
    quiet = StretchedSymmetricBeta(c, validate_args=False)
    x, lp = check_common(d, sample_shape, quiet)
    assert lp.isfinite().all()
    assert (x.abs() < torch.tensor(math.pi / 2, dtype=dtype)).all()  # strictly inside
    h, mean, var = d.entropy(), d.mean, d.variance
    for t in (h, mean, var):
        assert t.shape == d.batch_shape and t.dtype == dtype and t.isfinite().all()
    cn = c.detach().double().numpy()
    close(lp, torch.as_tensor(_ssb_logpdf(cn, x.detach().double().numpy())), dtype, scale=10)
    ref = scipy.stats.beta(cn, cn, loc=-math.pi / 2, scale=math.pi)
    close(h, torch.as_tensor(ref.entropy()), dtype, scale=10)
    close(var, torch.as_tensor(ref.var()), dtype, scale=10)
    check_no_nan_grads(d.rsample(sample_shape), [c])
    xv = x.detach().requires_grad_()
    check_no_nan_grads(d.log_prob(xv), [c, xv])
    for t in (d.entropy(), d.variance):
        check_no_nan_grads(t, [c])


@FAST
@given(st.data())
def test_stretched_symmetric_beta(data):
    check_stretched_symmetric_beta(data)


# ------------------------------------------------------------------------ laws on the sphere
DIMS = [2, 3, 10, 1000]
TNA_SCALES = [1e-3, 0.1, 1.0, 5.0]


def unit_vectors(shape, n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(shape) + (n,), generator=g, dtype=torch.float64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


def check_tangent_normal_angle(data):
    torch.manual_seed(0)
    dtype = data.draw(dtypes)
    shape = data.draw(sub_shapes(data.draw(full_shapes())))
    scale = tensor(data.draw(arrays(shape, st.sampled_from(TNA_SCALES))), dtype, True)
    df = data.draw(st.sampled_from([n - 1 for n in DIMS]))
    sample_shape = torch.Size(data.draw(sample_shapes))
    d = TangentNormalAngle(scale, df, validate_args=True)
    quiet = TangentNormalAngle(scale, df, validate_args=False)
    x, lp = check_common(d, sample_shape, quiet)
    # atan(scale r) < pi/2 in the real numbers; rounding may reach float32's pi/2
    assert (x < math.pi / 2).all() or dtype == torch.float32
    finite = x.double() < math.pi / 2
    assert lp[finite].isfinite().all()
    # scipy: r = tan(t) / scale ~ chi_df, so log p(t) = log chi(r) - log scale - 2 log cos t
    t, s_ = x.detach().double().numpy(), scale.detach().double().numpy()
    ref = scipy.stats.chi(df).logpdf(np.tan(t) / s_) - np.log(s_) - 2 * np.log(np.cos(t))
    keep = finite.numpy() & (np.abs(ref) < 1e4)
    close(lp[torch.as_tensor(keep)], torch.as_tensor(ref[keep]), dtype, scale=100)
    check_no_nan_grads(d.rsample(sample_shape), [scale])
    xv = x.detach().requires_grad_()
    check_no_nan_grads(d.log_prob(xv), [scale, xv])
    assert TangentNormalAngle.infer_shapes(scale=scale.shape) == (d.batch_shape, ())


@FAST
@given(st.data())
def test_tangent_normal_angle(data):
    check_tangent_normal_angle(data)


def check_hemisphere_angle(data):
    torch.manual_seed(0)
    dtype = data.draw(dtypes)
    shape = torch.Size(data.draw(full_shapes()))
    n = data.draw(st.sampled_from(DIMS))
    sample_shape = torch.Size(data.draw(sample_shapes))
    d = HemisphereAngle(n, dtype=dtype, validate_args=True).expand(shape)
    quiet = HemisphereAngle(n, dtype=dtype, validate_args=False).expand(shape)
    x, lp = check_common(d, sample_shape, quiet)
    # scipy: cos(theta) = |2B - 1|, B ~ Beta((n-1)/2, (n-1)/2)
    t = x.double().numpy()
    c = (n - 1) / 2
    with np.errstate(divide="ignore"):
        ref = scipy.stats.beta(c, c).logpdf((1 + np.cos(t)) / 2) + np.log(np.sin(t))
    keep = np.isfinite(ref) & (t > 1e-3)
    close(lp[torch.as_tensor(keep)], torch.as_tensor(ref[keep]), dtype, scale=100)
    xv = x.detach().requires_grad_()
    check_no_nan_grads(d.log_prob(xv), [xv])


@FAST
@given(st.data())
def test_hemisphere_angle(data):
    check_hemisphere_angle(data)


@st.composite
def angle_laws(draw, shape, dtype):
    """An angle law of batch shape ``shape``: Beta on [-pi/2, pi/2], a truncated normal on
    [0, pi/2] or [-pi/2, pi/2], or a uniform law."""
    kind = draw(st.sampled_from(["beta", "tn", "tn_sym", "uniform"]))
    if kind == "beta":
        c = draw(arrays(shape, st.sampled_from(SSB_CONCENTRATIONS)))
        return StretchedSymmetricBeta(tensor(c, dtype, True))
    if kind == "uniform":
        high = draw(arrays(shape, st.sampled_from([1e-3, 0.5, math.pi / 2])))
        return Uniform(torch.zeros((), dtype=dtype), tensor(high, dtype, True))
    # (mu -0.02 with sigma 1e-3: 20 sd outside, within TruncatedNormal's float32 reach)
    mu = tensor(draw(arrays(shape, st.sampled_from([0.0, 0.3, 1.5, -0.02]))), dtype, True)
    sigma = tensor(draw(arrays(shape, st.sampled_from([1e-3, 0.1, 1.0]))), dtype, True)
    low = -math.pi / 2 if kind == "tn_sym" else 0.0
    return TruncatedNormal(mu, sigma, low, math.pi / 2)


def _angle_params(angle):
    names = {"StretchedSymmetricBeta": ["concentration"], "Uniform": ["high"]}
    return [getattr(angle, n) for n in names.get(type(angle).__name__, ["loc", "scale"])]


def check_entropy_monte_carlo(d, h, num_samples=2000):
    """``h`` agrees with ``-E[log p(x)]`` to 5 standard errors (and the float32 rounding
    of sums of ~n terms)."""
    with torch.no_grad():
        lp = d.log_prob(d.sample((num_samples,))).double()
    estimate, se = -lp.mean(0), lp.std(0) / math.sqrt(num_samples)
    rounding = 1e-3 if h.dtype == torch.float32 else 1e-6
    h = h.detach().double()
    tol = 5 * se + rounding * h.abs() + 1e-6
    assert ((h - estimate).abs() <= tol).all(), (h, estimate, se)


def _unresolved_beta(angle):
    """A Beta angle with c < 0.1 (c < 0.5 in float32): a share of its mass lies closer
    to +-pi/2 than the dtype resolves, so the (clamped) draws cannot estimate its
    entropy. (Its entropy is checked against mpmath in test_plane_rotation.py.)"""
    if not isinstance(angle, StretchedSymmetricBeta):
        return False
    c = angle.concentration
    return bool((c < (0.5 if c.dtype == torch.float32 else 0.1)).any())


def check_sphere_samples(d, x, dtype):
    norm = x.double().norm(dim=-1)
    torch.testing.assert_close(norm, torch.ones_like(norm), rtol=0, atol=10 * RTOL[dtype])


def check_plane_rotation(data):
    torch.manual_seed(0)
    dtype = data.draw(dtypes)
    full = data.draw(full_shapes())
    n = data.draw(st.sampled_from(DIMS))
    loc = unit_vectors(data.draw(sub_shapes(full)), n, dtype, seed=n).requires_grad_()
    angle = data.draw(angle_laws(data.draw(sub_shapes(full)), dtype))
    sample_shape = torch.Size(data.draw(sample_shapes))
    d = PlaneRotation(loc, angle, validate_args=True)
    quiet = PlaneRotation(loc, angle, validate_args=False)
    assert PlaneRotation.infer_shapes(loc=loc.shape, angle=angle.batch_shape) == (
        d.batch_shape,
        d.event_shape,
    )
    x, lp = check_common(d, sample_shape, quiet)
    check_sphere_samples(d, x, dtype)
    assert not (lp == -math.inf).any()
    h, mean = d.entropy(), d.mean
    assert h.shape == d.batch_shape and mean.shape == d.batch_shape + (n,)
    assert not h.isnan().any() and mean.isfinite().all()
    assert (mean.double().norm(dim=-1) <= 1 + 10 * RTOL[dtype]).all()
    if not _unresolved_beta(angle):
        check_entropy_monte_carlo(d, h)
    params = [loc] + _angle_params(angle)
    check_no_nan_grads(d.rsample(sample_shape), params)
    check_no_nan_grads(d.log_prob(x.detach()), params)
    check_no_nan_grads(d.mean, params)


@pytest.mark.parametrize("c", [0.1, 0.3])
def test_plane_rotation_entropy_of_singular_beta_angle(c):
    # (a Gauss-Legendre rule in the angle missed the singular ends: 4.3 nats off at c = 0.1)
    torch.manual_seed(0)
    loc = unit_vectors((), 3, torch.float64, seed=0)
    d = PlaneRotation(loc, StretchedSymmetricBeta(torch.tensor(c, dtype=torch.float64)))
    check_entropy_monte_carlo(d, d.entropy(), num_samples=20000)


@FAST
@given(st.data())
def test_plane_rotation(data):
    check_plane_rotation(data)


def check_tangent_projected_normal(data):
    torch.manual_seed(0)
    dtype = data.draw(dtypes)
    full = data.draw(full_shapes())
    n = data.draw(st.sampled_from(DIMS))
    loc = unit_vectors(data.draw(sub_shapes(full)), n, dtype, seed=n).requires_grad_()
    scale = tensor(
        data.draw(arrays(data.draw(sub_shapes(full)), st.sampled_from(TNA_SCALES))), dtype, True
    )
    sample_shape = torch.Size(data.draw(sample_shapes))
    d = TangentProjectedNormal(loc, scale, validate_args=True)
    quiet = TangentProjectedNormal(loc, scale, validate_args=False)
    assert TangentProjectedNormal.infer_shapes(loc=loc.shape, scale=scale.shape) == (
        d.batch_shape,
        d.event_shape,
    )
    x, lp = check_common(d, sample_shape, quiet)
    check_sphere_samples(d, x, dtype)
    assert lp.isfinite().all()
    h = d.entropy()
    assert h.shape == d.batch_shape and h.isfinite().all()
    # the general path: the plane rotation by the angle law atan(scale chi_{n-1})
    general = PlaneRotation(
        d.loc, TangentNormalAngle(d.scale, n - 1, validate_args=False), validate_args=False
    )
    close(lp, general.log_prob(x), dtype, scale=100)
    # (PlaneRotation's quadrature in the angle is too coarse for the narrow angle laws of
    # high dimensions, as documented: the entropy is checked by Monte Carlo instead)
    check_entropy_monte_carlo(d, h)
    check_no_nan_grads(d.rsample(sample_shape), [loc, scale])
    check_no_nan_grads(d.log_prob(x.detach()), [loc, scale])
    check_no_nan_grads(d.entropy(), [scale])


@FAST
@given(st.data())
def test_tangent_projected_normal(data):
    check_tangent_projected_normal(data)


# ------------------------------------------------------------------------ bad input
def _vec(k, dtype, value=0.5, at=None, bad=None):
    """A ``(k,)`` tensor of ``value`` with ``bad`` at index ``at``."""
    t = torch.full((k,), value, dtype=dtype)
    if at is not None:
        t[at % k] = bad
    return t


def _unit_vecs(k, n, dtype):
    return unit_vectors((k,), n, dtype, seed=k)


# name -> [(builder(dtype, k, at, bad value), parameter the error must name)]
BAD_INPUTS = {
    "TruncatedNormal": [
        (lambda dt, k, i, b: TruncatedNormal(_vec(k, dt, 0, i, b), 1.0, -1.0, 1.0), "loc"),
        (lambda dt, k, i, b: TruncatedNormal(0.0, _vec(k, dt, 1, i, -abs(b)), -1.0, 1.0), "scale"),
        (lambda dt, k, i, b: TruncatedNormal(0.0, _vec(k, dt, 1, i, b), -1.0, 1.0), "scale"),
        (lambda dt, k, i, b: TruncatedNormal(0.0, 1.0, _vec(k, dt, -1, i, b), 1.0), "low"),
        (lambda dt, k, i, b: TruncatedNormal(0.0, 1.0, -1.0, _vec(k, dt, 1, i, b)), "high"),
        # bounds reversed (or equal) at one law
        (lambda dt, k, i, b: TruncatedNormal(0.0, 1.0, _vec(k, dt, -1, i, 1.0), 1.0), "low"),
        (lambda dt, k, i, b: TruncatedNormal(_vec(k + 1, dt), 1.0, -1.0, _vec(k + 2, dt)), "high"),
    ],
    "SymmetricLogUniform": [
        (lambda dt, k, i, b: SymmetricLogUniform(_vec(k, dt, 1, i, -abs(b)), 2.0), "low"),
        (lambda dt, k, i, b: SymmetricLogUniform(_vec(k, dt, 1, i, b), 2.0), "low"),
        (lambda dt, k, i, b: SymmetricLogUniform(1.0, _vec(k, dt, 2, i, b)), "high"),
        (lambda dt, k, i, b: SymmetricLogUniform(1.0, _vec(k, dt, 2, i, 0.5)), "high"),
        (lambda dt, k, i, b: SymmetricLogUniform(_vec(k + 1, dt, 1), _vec(k + 2, dt, 2)), "high"),
    ],
    "StretchedSymmetricBeta": [
        (lambda dt, k, i, b: StretchedSymmetricBeta(_vec(k, dt, 1, i, -abs(b))), "concentration"),
        (lambda dt, k, i, b: StretchedSymmetricBeta(_vec(k, dt, 1, i, b)), "concentration"),
    ],
    "TangentNormalAngle": [
        (lambda dt, k, i, b: TangentNormalAngle(_vec(k, dt, 1, i, -abs(b)), 3), "scale"),
        (lambda dt, k, i, b: TangentNormalAngle(_vec(k, dt, 1, i, b), 3), "scale"),
        (lambda dt, k, i, b: TangentNormalAngle(_vec(k, dt, 1), 0), "df"),
        (lambda dt, k, i, b: TangentNormalAngle(_vec(k, dt, 1), 2.5), "df"),
    ],
    "PlaneRotation": [
        (
            lambda dt, k, i, b: PlaneRotation(
                2 * _unit_vecs(k, 3, dt), StretchedSymmetricBeta(_vec(k, dt, 2))
            ),
            "loc",
        ),
        (
            lambda dt, k, i, b: PlaneRotation(
                torch.full((k, 3), b, dtype=dt), StretchedSymmetricBeta(_vec(k, dt, 2))
            ),
            "loc",
        ),
        (lambda dt, k, i, b: PlaneRotation(_vec(k, dt), Uniform(0.0, 1.0)), "loc"),
        (
            lambda dt, k, i, b: PlaneRotation(
                _unit_vecs(k, 3, dt), Uniform(_vec(k, dt, -4.0), _vec(k, dt, 1.0))
            ),
            "angle",
        ),
        (
            lambda dt, k, i, b: PlaneRotation(
                _unit_vecs(k + 1, 3, dt), StretchedSymmetricBeta(_vec(k + 2, dt, 2))
            ),
            "angle",
        ),
        (lambda dt, k, i, b: PlaneRotation(_unit_vecs(k, 3, dt), 0.3), "angle"),
        (lambda dt, k, i, b: PlaneRotation.infer_shapes(loc=(k + 1, 3), angle=(k + 2,)), "angle"),
    ],
    "TangentProjectedNormal": [
        (
            lambda dt, k, i, b: TangentProjectedNormal(_unit_vecs(k, 4, dt), _vec(k, dt, 1, i, b)),
            "scale",
        ),
        (
            lambda dt, k, i, b: TangentProjectedNormal(
                _unit_vecs(k, 4, dt), _vec(k, dt, 1, i, -abs(b))
            ),
            "scale",
        ),
        (lambda dt, k, i, b: TangentProjectedNormal(3 * _unit_vecs(k, 4, dt), 1.0), "loc"),
        (lambda dt, k, i, b: TangentProjectedNormal(_unit_vecs(k, 1, dt), 1.0), "loc"),
        (
            lambda dt, k, i, b: TangentProjectedNormal.infer_shapes(loc=(k + 1, 4), scale=(k + 2,)),
            "scale",
        ),
        (
            lambda dt, k, i, b: TangentProjectedNormal(_unit_vecs(k + 1, 4, dt), _vec(k + 2, dt)),
            "scale",
        ),
    ],
    "LogUniform": [
        (lambda dt, k, i, b: LogUniform((k, -1)), "batch_shape"),
        (lambda dt, k, i, b: LogUniform((k + 1, 1)).expand((k + 2, 1)), "batch_shape"),
    ],
}


@st.composite
def bad_inputs(draw):
    name = draw(st.sampled_from(sorted(BAD_INPUTS)))
    build, param = draw(st.sampled_from(BAD_INPUTS[name]))
    k = draw(st.integers(1, 4))
    at = draw(st.integers(0, 3))
    value = draw(st.sampled_from([math.nan, 0.0, -2.0]))
    return name, build, param, draw(dtypes), k, at, value


@settings(FAST, max_examples=60)
@given(bad_inputs())
def test_bad_input_raises_value_error_naming_the_parameter(case):
    name, build, param, dtype, k, at, value = case
    # NaN, 0 and -2 are all bad for a positive parameter; a real one takes NaN
    if name == "TruncatedNormal" and param in ("loc", "low", "high"):
        value = math.nan
    with pyro_validation(True), pytest.raises(ValueError, match=param):
        build(dtype, k, at, value)


def pyro_validation(enabled):
    import pyro

    return pyro.validation_enabled(enabled)


CHECKS = {
    "HemisphereAngle": check_hemisphere_angle,
    "LogUniform": check_log_uniform,
    "PlaneRotation": check_plane_rotation,
    "StretchedSymmetricBeta": check_stretched_symmetric_beta,
    "SymmetricLogUniform": check_symmetric_log_uniform,
    "TangentNormalAngle": check_tangent_normal_angle,
    "TangentProjectedNormal": check_tangent_projected_normal,
    "TruncatedNormal": check_truncated_normal,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_more_examples(name):
    @SLOW
    @given(st.data())
    def run(data):
        CHECKS[name](data)

    run()
