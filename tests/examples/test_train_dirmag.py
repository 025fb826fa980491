"""Smoke test of examples/train_dirmag_mnist.py with tiny arguments."""

import importlib.util
import os

import pyro
import pytest
import torch

import pyro_dirmag
from pyro_dirmag.data import default_data_root, load_mnist
from pyro_dirmag.infer import DirMagGuide, accuracy, negative_log_likelihood, predict
from pyro_dirmag.models import dirmag_model

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "train_dirmag_mnist.py")

pytestmark = pytest.mark.skipif(
    default_data_root() is None,
    reason="MNIST IDX files not found (set PYRO_DIRMAG_DATA or put them in ../shared/data)",
)


def _load():
    spec = importlib.util.spec_from_file_location("train_dirmag_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--subset", "200", "--test-subset", "100", "--epochs", "1", "--num-samples", "2"]


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_runs_and_reports(model, capsys, tmp_path):
    script = _load()
    path = str(tmp_path / "run.pt")
    rows, report = script.main(TINY + ["--model", model, "--save", path])
    out = capsys.readouterr().out
    for text in ("ensemble (2 nets)", "one sampled network", "mean network", "pruning at"):
        assert text in out
    assert set(rows) == {"ensemble", "sample", "mean"}
    assert os.path.exists(path)
    # the checkpoint restores the mean network: same test metrics in a fresh model
    extra = torch.load(path, weights_only=True)["extra"]
    assert extra["metrics"]["mean"][:3] == rows["mean"][:3]
    pyro.clear_param_store()
    fresh = dirmag_model(model, 200)
    guide = DirMagGuide(fresh)
    pyro_dirmag.load(path, fresh, guide)
    xt, yt = load_mnist(train=False, subset=100, seed=0)
    probs = predict(fresh, guide, xt, mode="mean")
    assert accuracy(probs, yt) == rows["mean"][0]
    assert negative_log_likelihood(probs, yt) == pytest.approx(rows["mean"][1], abs=1e-6)
    # an existing checkpoint is never overwritten without --overwrite
    mtime = os.path.getmtime(path)
    with pytest.raises(SystemExit):
        script.main(TINY + ["--model", model, "--save", path])
    assert os.path.getmtime(path) == mtime


def test_time_budget_and_bad_args(capsys):
    script = _load()
    script.main(TINY + ["--epochs", "50", "--time-budget", "0"])
    assert "time budget of 0 s reached during epoch 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--batch-size", "0"])
    with pytest.raises(SystemExit):
        script.main(["--model", "resnet"])
