import math

import pytest
import scipy.stats
import torch
from pyro.distributions import ProjectedNormal

from pyro_dirmag.distributions import (
    PlaneRotation,
    StretchedSymmetricBeta,
    TangentNormalAngle,
    TangentProjectedNormal,
    TruncatedNormal,
)
from pyro_dirmag.nn import DIRECTION_NOISES, MAGNITUDE_NOISES, NOISES
from pyro_dirmag.nn.noise import (
    PLANE_ROTATION_NOISES,
    ROTATION_BETA_MAX_ALPHA,
    angle_distribution,
    check_alpha,
    direction_distribution,
    gaussian_dropout_distribution,
    magnitude_distribution,
    rotation_beta_concentration,
)

BAD_ALPHAS = [0.0, -0.1, math.nan, math.inf, None, "0.1", True, torch.tensor([0.1, 0.2])]


@pytest.mark.parametrize("alpha", BAD_ALPHAS, ids=str)
def test_check_alpha_rejects(alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        check_alpha(alpha)


def test_check_alpha_accepts():
    assert check_alpha(0.25) == 0.25
    assert check_alpha(torch.tensor(0.5)) == 0.5
    assert check_alpha(2) == 2.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: direction_distribution("vmf", torch.tensor([1.0, 0.0]), 0.1),
        lambda: angle_distribution("projected", 0.1, 3),
        lambda: magnitude_distribution("lognormal", 0.1),
    ],
    ids=["direction", "angle", "magnitude"],
)
def test_unknown_name_lists_allowed_values(call):
    with pytest.raises(ValueError, match="allowed values: "):
        call()


def test_allowed_values_in_message():
    with pytest.raises(ValueError) as info:
        magnitude_distribution("lognormal", 0.1)
    for name in MAGNITUDE_NOISES:
        assert name in str(info.value)


def test_rotation_beta_alpha_range():
    with pytest.raises(ValueError, match="pi\\^2/4"):
        rotation_beta_concentration(ROTATION_BETA_MAX_ALPHA)
    with pytest.raises(ValueError, match="pi\\^2/4"):
        angle_distribution("rotation_beta", 3.0)


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 1.0, 2.4])
def test_rotation_beta_angle_variance_is_alpha(alpha):
    d = angle_distribution("rotation_beta", alpha, dtype=torch.float64)
    assert isinstance(d, StretchedSymmetricBeta)
    c = rotation_beta_concentration(alpha)
    # Var(pi (B - 1/2)), B ~ Beta(c, c), from scipy.
    var = math.pi**2 * scipy.stats.beta(c, c).var()
    assert var == pytest.approx(alpha, rel=1e-12)
    assert d.variance.item() == pytest.approx(alpha, rel=1e-10)


def test_rotation_normal_angle_law():
    alpha = 0.2
    d = angle_distribution("rotation_normal", alpha, dtype=torch.float64)
    assert isinstance(d, TruncatedNormal)
    theta = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)
    sd = math.sqrt(alpha)
    expected = scipy.stats.truncnorm(-math.pi / 2 / sd, math.pi / 2 / sd, scale=sd).logpdf(theta)
    assert torch.allclose(d.log_prob(theta), torch.as_tensor(expected), atol=1e-10)


def test_tangent_angle_law():
    d = angle_distribution("tangent", 0.04, 11, dtype=torch.float64)
    assert isinstance(d, TangentNormalAngle)
    assert d.df == 10
    assert d.scale.item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="dimension"):
        angle_distribution("tangent", 0.04)


@pytest.mark.parametrize("noise", DIRECTION_NOISES)
def test_direction_distribution_types_and_samples(noise):
    loc = torch.nn.functional.normalize(torch.randn(4, 3, 7, dtype=torch.float64), dim=-1)
    d = direction_distribution(noise, loc, 0.05)
    expected = {
        "projected": ProjectedNormal,
        "tangent": TangentProjectedNormal,
        "rotation_normal": PlaneRotation,
        "rotation_beta": PlaneRotation,
    }[noise]
    assert isinstance(d, expected)
    assert d.batch_shape == (4, 3) and d.event_shape == (7,)
    x = d.rsample((5,))
    assert x.shape == (5, 4, 3, 7)
    assert torch.allclose(x.norm(dim=-1), torch.ones((), dtype=x.dtype), atol=1e-12)
    # The mean direction of the draws is loc (all laws are symmetric around it).
    mean = d.rsample((4000,)).mean(0)
    cos = torch.nn.functional.cosine_similarity(mean, loc, dim=-1)
    assert (cos > 0.99).all()


def test_projected_concentration():
    loc = torch.tensor([0.6, 0.8])
    d = direction_distribution("projected", loc, 0.04)
    assert torch.allclose(d.concentration, loc / 0.2)


def test_direction_distribution_rejects_dimension_one():
    with pytest.raises(ValueError, match="n >= 2"):
        direction_distribution("rotation_normal", torch.ones(3, 1), 0.1)


@pytest.mark.parametrize("noise", MAGNITUDE_NOISES)
@pytest.mark.parametrize("alpha", [0.01, 0.5])
def test_magnitude_mean_one_variance_alpha(noise, alpha):
    d = magnitude_distribution(noise, alpha, dtype=torch.float64)
    assert d.mean.item() == pytest.approx(1.0)
    assert d.variance.item() == pytest.approx(alpha)
    x = d.rsample((200000,))
    assert x.mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(alpha / 200000))
    if noise == "gamma":
        assert (x > 0).all()
        law = scipy.stats.gamma(1 / alpha, scale=alpha)
        assert scipy.stats.kstest(x.numpy(), law.cdf).pvalue > 1e-3


def test_gaussian_dropout_law():
    d = gaussian_dropout_distribution(0.3)
    assert d.mean.item() == 1.0 and d.variance.item() == pytest.approx(0.3)


def test_name_lists():
    assert set(PLANE_ROTATION_NOISES) < set(DIRECTION_NOISES) < set(NOISES)
    assert "gaussian" in NOISES
