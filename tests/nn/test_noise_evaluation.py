import pytest
import torch

from pyro_dirmag.nn import noise_mode, noisy_mlp, predict_probs


def _model():
    return noisy_mlp(
        6, (16,), 4, noise="rotation_normal", alpha=0.3, magnitude="normal", magnitude_alpha=0.3
    )


def test_noise_mode_switches_and_restores():
    model = _model().eval()
    x = torch.randn(8, 6)
    det = model(x)
    with noise_mode(model, "sample"):
        assert not torch.allclose(model(x), model(x))
        with noise_mode(model, "deterministic"):
            assert torch.equal(model(x), det)
        assert model[0].sample_in_eval
    assert not model[0].sample_in_eval
    assert torch.equal(model(x), det)
    with pytest.raises(ValueError, match="allowed values: deterministic, sample"):
        with noise_mode(model, "ensemble"):
            pass


def test_predict_probs_modes():
    model = _model().train()
    x = torch.randn(10, 6)
    det = predict_probs(model, x, "deterministic")
    assert model.training  # restored
    with torch.no_grad():
        assert torch.allclose(det, model.eval()(x).softmax(-1))
    model.train()
    s1 = predict_probs(model, x, "sample")
    s2 = predict_probs(model, x, "sample")
    assert not torch.allclose(s1, s2)
    ens = predict_probs(model, x, "ensemble", num_samples=200, batch_size=3)
    for p in (det, s1, ens):
        assert p.shape == (10, 4)
        assert torch.allclose(p.sum(-1), torch.ones(10))
    # The ensemble average converges: two independent averages agree far better than samples.
    ens2 = predict_probs(model, x, "ensemble", num_samples=200)
    assert (ens - ens2).abs().max() < 0.25 * (s1 - s2).abs().max()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="mean"), "allowed values: deterministic, sample, ensemble"),
        (dict(mode="ensemble", num_samples=0), "num_samples must be a positive integer"),
    ],
)
def test_predict_probs_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_probs(_model(), torch.randn(2, 6), **kwargs)
