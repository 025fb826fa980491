"""A short SVI run on a 2,000-image MNIST subset reaches >= 90% test accuracy."""

import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import ClippedAdam

from pyro_dirmag.data import default_data_root, load_mnist
from pyro_dirmag.infer import DirMagGuide, accuracy, predict, prune
from pyro_dirmag.models import dirmag_model

pytestmark = pytest.mark.skipif(
    default_data_root() is None,
    reason="MNIST IDX files not found (set PYRO_DIRMAG_DATA or put them in ../shared/data)",
)


def test_lenet300_on_2000_images():
    x, y = load_mnist(train=True, subset=2000, seed=0)
    xt, yt = load_mnist(train=False, subset=2000, seed=0)
    model = dirmag_model("lenet300", len(x))
    guide = DirMagGuide(model)
    svi = SVI(model, guide, ClippedAdam({"lr": 5e-3}), TraceMeanField_ELBO())
    for _ in range(10):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            idx = perm[i : i + 100]
            svi.step(x[idx], y[idx])
    acc = {
        mode: accuracy(predict(model, guide, xt, mode=mode, num_samples=10), yt)
        for mode in ("ensemble", "mean")
    }
    assert acc["ensemble"] >= 0.90, acc
    assert acc["mean"] >= 0.90, acc
    pruned, report = prune(model, guide)
    with torch.no_grad():
        pruned_acc = accuracy(pruned(xt).softmax(-1), yt)
    assert pruned_acc >= 0.89, (pruned_acc, str(report))
