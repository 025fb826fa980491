"""Smoke test of examples/train_dirmag_mnist.py with tiny arguments."""

import importlib.util
import os

import pytest

from pyro_dirmag.data import default_data_root

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
