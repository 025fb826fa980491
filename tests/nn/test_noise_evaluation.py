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
        with noise_mode(model, "mean"):
            assert torch.equal(model(x), det)
        assert model[0].sample_in_eval
    assert not model[0].sample_in_eval
    assert torch.equal(model(x), det)
    with pytest.raises(ValueError, match="allowed values: mean, sample$"):
        with noise_mode(model, "ensemble"):
            pass


def test_predict_probs_modes():
    model = _model().train()
    x = torch.randn(10, 6)
    det = predict_probs(model, x, "mean")
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
        (dict(mode="median"), "allowed values: mean, sample, ensemble"),
        (dict(mode="ensemble", num_samples=0), "num_samples must be a positive integer"),
    ],
)
def test_predict_probs_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_probs(_model(), torch.randn(2, 6), **kwargs)


def test_deterministic_is_a_deprecated_name_of_mean():
    # One vocabulary with predict() and the command line; the old name still works, loudly.
    model = _model().train()
    x = torch.randn(10, 6)
    with pytest.warns(FutureWarning, match="evaluation mode 'deterministic' is deprecated"):
        old = predict_probs(model, x, "deterministic")
    assert torch.equal(old, predict_probs(model, x, "mean"))
    model.eval()
    with noise_mode(model, "sample"):
        with pytest.warns(FutureWarning, match="noise mode 'deterministic' is deprecated"):
            with noise_mode(model, "deterministic"):
                assert not model[0].sample_in_eval


def test_one_mode_vocabulary():
    from pyro_dirmag.infer.predict import PREDICT_MODES
    from pyro_dirmag.models import evaluation_modes
    from pyro_dirmag.nn import EVAL_MODES

    assert EVAL_MODES == PREDICT_MODES == evaluation_modes("dirmag") == evaluation_modes("tangent")
