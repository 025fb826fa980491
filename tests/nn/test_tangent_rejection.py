"""The acceptance step of the tangent draw: thinning rejects each proposal with exactly the
probability of the full test, and the Bernoulli positions behind it are exact."""

import itertools
import math

import pytest
import scipy.stats
import torch

import pyro_dirmag.nn._direction as direction
from pyro_dirmag.nn._direction import bernoulli_positions, tangent_projection


def test_bernoulli_positions_subset_law():
    # n = 3, rate 0.3: each of the 8 subsets has probability 0.3^|S| 0.7^(3-|S|).
    torch.manual_seed(0)
    draws = 20000
    counts = dict.fromkeys(itertools.product((0, 1), repeat=3), 0)
    for _ in range(draws):
        pos = bernoulli_positions(3, 0.3)
        key = tuple(int(i in pos.tolist()) for i in range(3))
        counts[key] += 1
    expected = [draws * 0.3 ** sum(k) * 0.7 ** (3 - sum(k)) for k in counts]
    assert scipy.stats.chisquare(list(counts.values()), expected).pvalue > 1e-3


def test_bernoulli_positions_large():
    torch.manual_seed(1)
    n, rate = 300_000, 0.05
    pos = bernoulli_positions(n, rate)
    assert pos.dtype == torch.int64
    assert bool((pos[1:] > pos[:-1]).all()) and 0 <= int(pos[0]) and int(pos[-1]) < n
    assert scipy.stats.binomtest(pos.numel(), n, rate).pvalue > 1e-3
    # spread evenly over the range (the chunked gaps must not bunch up anywhere)
    hist = torch.bincount(pos * 20 // n, minlength=20).tolist()
    assert scipy.stats.chisquare(hist).pvalue > 1e-3
    assert bernoulli_positions(n, 0.0).numel() == 0
    assert bernoulli_positions(0, 0.5).numel() == 0
    with pytest.raises(ValueError, match="rate"):
        bernoulli_positions(10, 1.0)


def _rejection_rates(t, k, thin, monkeypatch, repeats):
    """Empirical rejection frequency of each column of ``t`` over ``repeats`` tests."""
    monkeypatch.setattr(direction, "_THIN_MIN", 1 if thin else 1 << 60)
    counts = torch.zeros(t.shape[-1])
    for _ in range(repeats):
        bad = direction._rejections(t.reshape(-1), k, t.shape[-1])
        if bad is not None:
            counts += torch.bincount(bad % t.shape[-1], minlength=t.shape[-1])
    return counts, repeats * t.shape[0]


@pytest.mark.parametrize("thin", [True, False])
def test_rejection_probability_is_exact(thin, monkeypatch):
    # Proposals on both sides of the thinning cut (3.5 proposal sd): each column holds
    # one value; its rejection count is Binomial(trials, q(t)).
    torch.manual_seed(2)
    k = 148.0
    z = torch.tensor([0.5, 2.0, -3.0, 3.4, 3.6, -4.5, 6.0])
    values = z / math.sqrt(2 * k)
    t = values.expand(4000, -1).contiguous()
    counts, trials = _rejection_rates(t, k, thin, monkeypatch, repeats=5)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        q = direction._rejection_probability(k, value * value)
        assert scipy.stats.binomtest(int(count), trials, q).pvalue > 1e-4, (value, count, q)


def test_thinning_draws_fewer_uniforms(monkeypatch):
    # The point of thinning: about `bound` uniforms a proposal, not one each.
    calls = []
    real_rand = torch.rand

    def counting_rand(*args, **kwargs):
        out = real_rand(*args, **kwargs)
        calls.append(out.numel())
        return out

    monkeypatch.setattr(torch, "rand", counting_rand)
    monkeypatch.setattr(torch, "rand_like", lambda t: counting_rand(t.shape, dtype=t.dtype))
    t = torch.randn(1000, 300) / math.sqrt(2 * 390.0)
    direction._rejections(t.reshape(-1), 390.0, 300)
    assert 0 < sum(calls) < 0.15 * t.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("n", [300, 784])
def test_tangent_projection_law_thinned(n, dtype):
    # A batch large enough for the thinned test, against the exact Beta law.
    k = 0.5 * (n - 4)
    cut = direction._TAIL_Z / math.sqrt(2 * k)
    assert direction._rejection_probability(k, cut * cut) <= direction._THIN_MAX
    torch.manual_seed(3)
    t = tangent_projection(n, (200, 500), dtype=dtype)
    assert t.numel() >= direction._THIN_MIN and t.dtype == dtype
    beta = scipy.stats.beta(0.5 * (n - 2), 0.5 * (n - 2))
    sample = ((t.reshape(-1).double() + 1) / 2).numpy()
    assert scipy.stats.kstest(sample, beta.cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [(), (0,), (0, 5), (3, 0), (2, 3)])
def test_tangent_projection_shapes(shape):
    t = tangent_projection(784, shape)
    assert t.shape == shape and t.dtype == torch.float32
    assert bool((t.abs() < 1).all())
