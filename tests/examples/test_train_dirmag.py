"""Smoke test of examples/train_dirmag_mnist.py with tiny arguments."""

import importlib.util
import os

import pyro
import pytest
import torch

import pyro_dirmag
from pyro_dirmag.data import default_data_root, load_mnist
from pyro_dirmag.infer import Recipe, predict
from pyro_dirmag.models import dirmag_model

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "train_dirmag_mnist.py")

pytestmark = pytest.mark.skipif(
    default_data_root() is None,
    reason="MNIST IDX files not found (set PYRO_DIRMAG_DATA or put them in ../shared/data)",
)

TINY = ["--train-size", "300", "--test-size", "100", "--epochs", "1"]


def _load():
    spec = importlib.util.spec_from_file_location("train_dirmag_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_example_trains_prunes_saves_and_reloads(name, capsys, tmp_path):
    path = str(tmp_path / "run.pt")
    model, guide, report = _load().main(TINY + ["--model", name, "--save", path])
    out = capsys.readouterr().out
    for text in ("epoch 1: loss", "ensemble network(s)", "pruned: test accuracy", "saved to"):
        assert text in out
    assert report.params_kept <= report.params_total
    # the checkpoint restores the model: the same mean-network predictions
    x_test, _ = load_mnist(train=False, subset=100, seed=0)
    before = predict(model, guide, x_test, mode="mean")
    pyro.clear_param_store()
    reverse = name != "lenet5"
    fresh = dirmag_model(name, model.num_data, reverse=reverse)
    fresh_guide = Recipe().guide(fresh)
    pyro_dirmag.load(path, fresh, fresh_guide)
    assert torch.equal(predict(fresh, fresh_guide, x_test, mode="mean"), before)
    # an existing checkpoint is never overwritten
    mtime = os.path.getmtime(path)
    with pytest.raises(SystemExit):
        _load().main(TINY + ["--model", name, "--save", path])
    assert os.path.getmtime(path) == mtime


def test_bad_arguments_exit():
    with pytest.raises(SystemExit):
        _load().main(["--model", "resnet"])
