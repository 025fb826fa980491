"""PyroLightningModule without a Trainer: its loss terms, and no host sync on CUDA."""

import pyro
import pytest
import torch

from pyro_dirmag.infer import Recipe

from . import ddp_gradient_script as script


def test_loss_terms_are_the_elbo_terms():
    module = script.module()
    x, y = script.data()
    xb, yb = x[:4], y[:4]
    pyro.set_rng_seed(1)
    loss, stats = module.loss_and_stats(xb, yb, beta=0.5)
    # the same weight draw, by hand
    pyro.set_rng_seed(1)
    guide = module.guide
    w = torch.distributions.Normal(guide.loc, guide.scale).rsample()
    logits = xb @ w + module.model.bias
    nll = torch.nn.functional.cross_entropy(logits, yb)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(guide.loc, guide.scale), torch.distributions.Normal(0.0, 1.0)
    ).sum()
    n = script.NUM_DATA
    torch.testing.assert_close(stats["nll"], nll.detach())
    torch.testing.assert_close(stats["kl"], 0.5 * kl.detach() / n)
    torch.testing.assert_close(stats["loss"], loss.detach() / n)
    torch.testing.assert_close(loss, n * nll + 0.5 * kl)
    torch.testing.assert_close(stats["acc"], (logits.argmax(-1) == yb).float().mean())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_does_not_sync_with_the_host_on_cuda():
    from pyro_dirmag.lightning import PyroLightningModule
    from pyro_dirmag.models import build

    pyro.clear_param_store()
    device = torch.device("cuda")
    x = torch.randn(64, 784, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    model, guide = build("lenet300", "dirmag-reverse", num_data=6000)
    module = PyroLightningModule(
        model.to(device), guide, example_batch=(x, y), check_finite=False
    ).to(device)
    recipe = Recipe()
    optimizer = recipe.optimizer(module.model, module.guide)
    scheduler = recipe.lr_scheduler(optimizer, 100)

    def step():
        loss, stats = module.loss_and_stats(x, y, beta=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return stats

    step()  # lazy initializations outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
