"""predict follows the model's likelihood: probabilities, moments, or a clear error."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn
from torch.distributions.transforms import ExpTransform

from pyro_dirmag.infer import DirMagGuide, PredictiveMoments, mean_weights, predict
from pyro_dirmag.nn import DirMagModel, to_dirmag


class NormalLikelihood(PyroModule):
    def __init__(self):
        super().__init__()
        self.scale = PyroSample(dist.LogNormal(-1.0, 1.0))

    def forward(self, out):
        return dist.Normal(out.squeeze(-1), self.scale)


def _net(out=1):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, out))


def _setup(likelihood, out=1, **guide_kwargs):
    model = DirMagModel(to_dirmag(_net(out)), likelihood, 30)
    guide = DirMagGuide(model, init_log_alpha=-2.0, init_angle_scale=0.3, **guide_kwargs)
    x = torch.randn(11, 2)
    return model, guide, x


def _mean_network(model, guide, x):
    w = mean_weights(model, guide)
    h = torch.relu(x @ w["net.0"][0].T + w["net.0"][1])
    return (h @ w["net.2"][0].T + w["net.2"][1]).squeeze(-1)


def test_regression_returns_moments_not_a_softmax():
    model, guide, x = _setup(lambda out: dist.Normal(out.squeeze(-1), 0.3))
    for mode in ("mean", "sample", "ensemble"):
        result = predict(model, guide, x, mode=mode, num_samples=4, batch_size=4)
        assert isinstance(result, PredictiveMoments)
        assert result.mean.shape == result.variance.shape == (11,)
    mean, variance = predict(model, guide, x, mode="mean", batch_size=4)
    assert torch.allclose(mean, _mean_network(model, guide, x), atol=1e-5)
    assert torch.allclose(variance, torch.full((11,), 0.09))
    # ensemble: the networks' spread adds to the likelihood's variance
    mean_e, variance_e = predict(model, guide, x, num_samples=30)
    assert (variance_e > 0.09).all()


def test_ensemble_moments_are_the_mixture_moments():
    # the law of total variance over the very draws predict makes
    model, guide, x = _setup(lambda out: dist.Normal(out.squeeze(-1), 0.3))
    guide(x)
    pyro.set_rng_seed(3)
    mean, variance = predict(model, guide, x, num_samples=5)
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace(x[:1])  # check_params' run
    poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x[:1])
    outs = []
    for _ in range(5):
        tr = poutine.trace(guide).get_trace(x)
        outs.append(poutine.replay(model, trace=tr)(x).squeeze(-1))
    outs = torch.stack(outs)
    assert torch.allclose(mean, outs.mean(0), atol=1e-5)
    assert torch.allclose(variance, 0.09 + outs.var(0, unbiased=False), atol=1e-5)


def test_latent_noise_scale_enters_the_variance():
    model, guide, x = _setup(NormalLikelihood(), other=AutoNormal)
    y = torch.randn(11)
    guide(x, y)
    scale = guide.other.median(x, y)["likelihood.scale"]
    mean, variance = predict(model, guide, x, mode="mean")
    assert torch.allclose(variance, scale**2 * torch.ones(11), rtol=1e-5)
    assert torch.allclose(mean, _mean_network(model, guide, x), atol=1e-5)
    mean_s, variance_s = predict(model, guide, x, mode="sample")
    assert torch.allclose(variance_s, variance_s[:1].expand(11))  # one global scale


def test_probabilities_for_discrete_likelihoods():
    model, guide, x = _setup(lambda out: dist.Bernoulli(logits=out.squeeze(-1)))
    p = predict(model, guide, x, mode="ensemble", num_samples=3)
    assert p.shape == (11,) and ((p > 0) & (p < 1)).all()
    pm = predict(model, guide, x, mode="mean")
    assert torch.allclose(pm, torch.sigmoid(_mean_network(model, guide, x)), atol=1e-6)
    pyro.clear_param_store()
    model, guide, x = _setup(lambda z: dist.OneHotCategorical(logits=z), out=3)
    p = predict(model, guide, x, mode="sample")
    assert p.shape == (11, 3) and torch.allclose(p.sum(-1), torch.ones(11))


def test_student_t_and_vector_outputs():
    model, guide, x = _setup(lambda out: dist.StudentT(1.5, out.squeeze(-1), 1.0))
    mean, variance = predict(model, guide, x, mode="mean")
    assert torch.isinf(variance).all() and torch.isfinite(mean).all()
    pyro.clear_param_store()
    model, guide, x = _setup(lambda out: dist.Normal(out, 0.5).to_event(1), out=2)
    mean, variance = predict(model, guide, x, num_samples=2)
    assert mean.shape == variance.shape == (11, 2)


def test_unsupported_likelihood_and_sites():
    model, guide, x = _setup(
        lambda out: dist.TransformedDistribution(dist.Normal(out.squeeze(-1), 1.0), ExpTransform())
    )
    with pytest.raises(ValueError, match="cannot summarize a TransformedDistribution"):
        predict(model, guide, x, mode="mean")
    pyro.clear_param_store()

    def two_sites(out):
        pyro.sample("extra", dist.Normal(0.0, 1.0))
        return dist.Normal(out.squeeze(-1), 1.0)

    model, guide, x = _setup(two_sites)
    with pytest.raises(ValueError, match=r"2 sample sites .*\['extra', 'y'\]\); pass site="):
        predict(model, guide, x, mode="mean")
    mean, _ = predict(model, guide, x, mode="mean", site="y")
    assert mean.shape == (11,)
    with pytest.raises(ValueError, match="no sample site 'z'"):
        predict(model, guide, x, mode="mean", site="z")
    with pytest.raises(ValueError, match="need a DirMagGuide"):
        predict(model, AutoNormal(poutine.block(model, expose=["extra"])), x, mode="mean")
