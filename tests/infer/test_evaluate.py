import pyro
import pytest
import torch

from pyro_dirmag.infer import (
    METRICS,
    brier_score,
    evaluate,
    expected_calibration_error,
    predictive_entropy,
    reliability_bins,
)
from pyro_dirmag.models import METHODS, build, evaluation_modes


def test_brier_and_entropy_known_values():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    labels = torch.tensor([0, 1, 0])
    # (0 + 0) + (0.25 + 0.25) + (0.5625 + 0.5625), averaged over 3 rows
    assert brier_score(probs, labels) == pytest.approx((0.5 + 1.125) / 3)
    h = lambda p: -(p * torch.tensor(p).log()).item() if p > 0 else 0.0  # noqa: E731
    expected = (0.0 + 2 * h(0.5) + h(0.25) + h(0.75)) / 3
    assert predictive_entropy(probs) == pytest.approx(expected)


def test_reliability_bins_agree_with_ece():
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(500, 10, generator=g).mul(2).softmax(-1)
    labels = torch.randint(0, 10, (500,), generator=g)
    bins = reliability_bins(probs, labels, num_bins=15)
    assert sum(bins["count"]) == 500 and len(bins["edges"]) == 16
    ece = sum(
        c / 500 * abs(a - f)
        for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
        if c
    )
    assert ece == pytest.approx(expected_calibration_error(probs, labels, num_bins=15))


@pytest.mark.parametrize("method", METHODS)
def test_evaluate_every_method_in_chunks_larger_than_its_data(method):
    pyro.clear_param_store()
    model, guide = build("lenet300", method, num_data=30)
    x, y = torch.randn(70, 784), torch.randint(0, 10, (70,))
    modes = evaluation_modes(method)
    result = evaluate(model, guide, x, y, modes=modes, num_samples=2, batch_size=1000)
    assert set(result) == set(modes)
    for values in result.values():
        assert set(values) == set(METRICS) and 0 <= values["accuracy"] <= 1
