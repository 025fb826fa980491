"""The 1-D regression example: smoke test, and its predictive band widening."""

import importlib.util
import math
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "regression_1d.py")


def _load():
    spec = importlib.util.spec_from_file_location("regression_1d", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_and_plots(tmp_path, capsys):
    out = tmp_path / "band.png"
    tiny = ["--num-data", "12", "--hidden", "6", "--pretrain-steps", "5", "--steps", "5"]
    results = _load().main(tiny + ["--num-samples", "3", "--out", str(out)])
    assert out.stat().st_size > 1000
    assert "predictive std" in capsys.readouterr().out
    assert all(math.isfinite(v) for v in results.values())
    with pytest.raises(SystemExit):
        _load().main(["--steps", "0"])


@pytest.mark.slow
def test_band_widens_away_from_the_data():
    args = ["--hidden", "20", "--steps", "600", "--lr", "0.02", "--num-samples", "50"]
    results = _load().main(args)
    assert results["std_outside"] > 1.5 * results["std_inside"]
    assert 0.05 < results["noise_scale"] < 0.2  # true 0.1
