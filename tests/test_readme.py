"""The README's code blocks run as written (on small MNIST subsets), so they cannot drift."""

import os
import re

import pytest
import torch
from pyro.nn import PyroModule

from pyro_dirmag.data import default_data_root

needs_mnist = pytest.mark.skipif(
    default_data_root() is None,
    reason="MNIST IDX files not found (set PYRO_DIRMAG_DATA or put them in ../shared/data)",
)

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _usage_block():
    with open(README) as f:
        text = f.read()
    start = text.index("\n## Usage")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, "no ```python block after '## Usage' in README.md"
    return match.group(1)


def _usage_namespace():
    code = _usage_block()
    # The block as written, on 600 + 50 MNIST images and two epochs instead of fifty.
    for old, new in (
        ("epochs=50", "epochs=2"),
        ("load_mnist(train=True)", "load_mnist(train=True, subset=600)"),
        ("validation_split(x, y, 5000,", "validation_split(x, y, 100,"),
        ("load_mnist(train=False)", "load_mnist(train=False, subset=7)"),
    ):
        assert old in code, old
        code = code.replace(old, new)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


@needs_mnist
def test_readme_usage_block_runs():
    namespace = _usage_namespace()
    probs = namespace["probs"]
    assert probs.shape == (7, 10)
    assert torch.allclose(probs.sum(-1), torch.ones(7), atol=1e-5)
    assert namespace["model"].num_data == 500
    pruned = namespace["pruned"]
    assert isinstance(pruned, torch.nn.Sequential)
    assert not any(isinstance(m, PyroModule) for m in pruned.modules())
    assert pruned(namespace["x_test"]).shape == (7, 10)


@needs_mnist
def test_readme_prediction_block_continues_the_usage_block():
    namespace = _usage_namespace()
    block = _block_after("Bayesian DirMag networks")
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["probs"].shape == (7, 10)
    assert namespace["svi"].num_steps == 1
    assert set(namespace["thresholds"]) == {r["name"] for r in namespace["report"].layers}


def _block_after(heading):
    with open(README) as f:
        text = f.read()
    start = text.index(f"\n## {heading}")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no ```python block after '## {heading}' in README.md"
    return match.group(1)


def test_readme_distributions_block_runs():
    namespace = {}
    exec(compile(_block_after("Distributions"), "README.md", "exec"), namespace)
    x = namespace["x"]
    assert x.shape == (1000,) and bool(((x >= 0) & (x <= 3.1416)).all())
    trace = __import__("pyro").poutine.trace(namespace["model"]).get_trace()
    w = trace.nodes["w"]["value"]
    assert w.shape == (784,) and abs(w.norm().item() - 1) < 1e-5


@needs_mnist
def test_readme_noise_block_runs():
    code = _block_after("Non-variational noise regularizers")
    assert "load_mnist(train=False)" in code
    code = code.replace("load_mnist(train=False)", "load_mnist(train=False, subset=5)")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    probs = namespace["probs"]
    assert probs.shape == (5, 10)
    assert torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-5)


def test_readme_own_network_block_runs_as_written(tmp_path, monkeypatch):
    from torch import nn

    from pyro_dirmag.infer import predict

    monkeypatch.chdir(tmp_path)
    namespace = {}
    block = _block_after("Your own network, any likelihood, save and load")
    # run it in two parts, to predict with the first model before the second exists
    cut = block.index("pyro_dirmag.save(")
    exec(compile(block[:cut], "README.md", "exec"), namespace)
    assert namespace["mean"].shape == namespace["variance"].shape == (64,)
    x = namespace["x"]
    before = predict(namespace["model"], namespace["guide"], x, mode="mean")
    exec(compile(block[cut:], "README.md", "exec"), namespace)
    assert type(namespace["pruned"]) is nn.Sequential
    after = predict(namespace["model2"], namespace["guide2"], x, mode="mean")
    assert torch.equal(before.mean, after.mean) and torch.equal(before.variance, after.variance)
