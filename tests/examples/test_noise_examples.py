"""Smoke tests of the noise examples, and the goodness of fit of the angle study."""

import importlib.util
import math
import os

import numpy as np
import pytest
import scipy.integrate
import torch
from pyro.distributions.testing.gof import density_goodness_of_fit

from pyro_dirmag.data import default_data_root

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
TEST_FAILURE_RATE = 1e-3

needs_mnist = pytest.mark.skipif(default_data_root() is None, reason="MNIST not found")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def angle_study():
    return _load("angle_study")


@needs_mnist
@pytest.mark.parametrize(
    "noise_args",
    [
        [
            "--noise",
            "rotation_beta",
            "--alpha",
            "0.1",
            "--magnitude",
            "gamma",
            "--magnitude-alpha",
            "0.1",
        ],
        ["--noise", "tangent", "--alpha", "0.01", "--on", "weight"],
    ],
    ids=["activation", "weight"],
)
def test_train_noise_mnist_smoke(noise_args, capsys):
    script = _load("train_noise_mnist")
    tiny = [
        "--train-size",
        "64",
        "--test-size",
        "100",
        "--hidden",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--num-samples",
        "2",
        "--log-every",
        "1",
    ]
    acc = script.main(tiny + noise_args)
    assert set(acc) == {"mean", "sample", "ensemble"}
    assert all(0.0 <= a <= 1.0 for a in acc.values())
    out = capsys.readouterr().out
    assert "epoch    2" in out and "ensemble(S=2)" in out


def test_train_noise_mnist_rejects_bad_noise():
    script = _load("train_noise_mnist")
    with pytest.raises(SystemExit):
        script.make_parser().parse_args(["--noise", "dropout"])


def test_angle_study_smoke(angle_study, tmp_path, capsys):
    output = tmp_path / "sub" / "angles.png"
    results = angle_study.main(
        ["--dim", "20", "--num-samples", "500", "--alphas", "0.01", "2.5", "--output", str(output)]
    )
    assert output.exists() and output.stat().st_size > 0
    # rotation_beta has no alpha >= pi^2/4, the other three noises have both.
    assert len(results) == 7
    for r in results:
        assert r["theta"].shape == (500,)
        assert ((r["theta"] >= 0) & (r["theta"] <= math.pi)).all()
        assert np.isfinite(r["density"]).all()
    assert "saved" in capsys.readouterr().out


CASES = [
    ("projected", 1e-4),
    ("projected", 0.1),
    ("tangent", 1e-3),
    ("tangent", 1.0),
    ("rotation_normal", 1e-3),
    ("rotation_normal", 1.0),
    ("rotation_beta", 1e-2),
    ("rotation_beta", 0.5),
]


@pytest.mark.parametrize("noise, alpha", CASES, ids=str)
def test_angle_histogram_matches_overlay(angle_study, noise, alpha):
    # As in the thesis: 10,000 perturbed unit vectors in R^1000.
    theta = angle_study.perturbation_angles(noise, alpha, dim=1000, num_samples=10000, seed=3)
    density = angle_study.angle_density(noise, alpha, theta, dim=1000)
    assert density_goodness_of_fit(theta, density) > TEST_FAILURE_RATE


@pytest.mark.parametrize("noise, alpha", CASES, ids=str)
def test_angle_overlay_integrates_to_one(angle_study, noise, alpha):
    # Simpson's rule with ~9 nodes per standard deviation of the narrowest peak (tangent,
    # alpha = 1: sd ~7e-4 rad); the rotation densities peak at theta = 0, an endpoint.
    grid = torch.linspace(0, math.pi, 40001, dtype=torch.float64)
    density = angle_study.angle_density(noise, alpha, grid, dim=1000).numpy()
    assert np.isfinite(density).all()
    total = scipy.integrate.simpson(density, x=grid.numpy())
    assert total == pytest.approx(1.0, abs=1e-5)


def test_angle_goodness_of_fit_can_fail(angle_study):
    # The same samples against the overlay for a 20 % different alpha must be rejected.
    theta = angle_study.perturbation_angles("projected", 0.01, dim=1000, num_samples=10000)
    wrong = angle_study.angle_density("projected", 0.012, theta, dim=1000)
    assert density_goodness_of_fit(theta, wrong) < 1e-6


def test_projected_angle_density_small_dimension(angle_study):
    # n = 2: x = normalize(v + s z) is an angle on the circle; compare with a direct
    # numerical integral of the planar normal density along the ray at angle theta.
    alpha, theta = 0.3, np.array([0.2, 1.0, 2.5])
    s2 = alpha

    def ray(r, t):
        return (
            r
            * math.exp(-((r * math.cos(t) - 1) ** 2 + (r * math.sin(t)) ** 2) / (2 * s2))
            / (2 * math.pi * s2)
        )

    expected = [2 * scipy.integrate.quad(ray, 0, np.inf, args=(t,))[0] for t in theta]
    got = np.exp(angle_study.projected_angle_log_density(theta, alpha, 2))
    assert np.allclose(got, expected, rtol=1e-6)


def test_projected_noise_moves_vectors_far_in_high_dimension(angle_study):
    # The thesis's point (appendix D): tiny alpha, large angle; theta ~ arctan(sqrt(alpha n)).
    theta = angle_study.perturbation_angles("projected", 1e-3, dim=1000, num_samples=2000)
    assert theta.mean().item() == pytest.approx(math.atan(math.sqrt(1e-3 * 999)), rel=0.02)
    rot = angle_study.perturbation_angles("rotation_normal", 1e-3, dim=1000, num_samples=2000)
    assert rot.mean().item() < 0.05 < theta.mean().item() / 10
