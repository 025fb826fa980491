"""Run by test_ddp.py as ``python ddp_gradient_script.py OUT``: one optimizer step of a
2-process (gloo) DDP run of a Bayesian logistic regression whose noise (the global
weight draw) is seeded identically in both processes; each process saves the gradient
Lightning hands to the optimizer (after DDP's averaging) to ``OUT/grad_<rank>.pt``."""

import os
import sys

import lightning
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyro_dirmag.infer import Recipe
from pyro_dirmag.lightning import PyroLightningModule, TensorDataModule

NUM_DATA, FEATURES, CLASSES = 16, 5, 3
BATCH_PER_PROCESS = 4
NOISE_SEED = 123


class Model(PyroModule):
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(CLASSES))

    def forward(self, x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([FEATURES, CLASSES]).to_event(2))
        with pyro.plate("data", NUM_DATA, subsample_size=x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=x @ w + self.bias), obs=y)


class Guide(PyroModule):
    def __init__(self):
        super().__init__()
        self.loc = PyroParam(0.1 * torch.randn(FEATURES, CLASSES))
        self.scale = PyroParam(torch.full((FEATURES, CLASSES), 0.5), constraints.positive)

    def forward(self, x, y=None):
        pyro.sample("w", dist.Normal(self.loc, self.scale).to_event(2))


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(NUM_DATA, FEATURES, generator=g), torch.randint(
        0, CLASSES, (NUM_DATA,), generator=g
    )


def module():
    """The module of every process: same initial parameters; the plain ELBO throughout
    (no KL warm-up, so the KL enters the first step with weight 1)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    x, y = data()
    recipe = Recipe(kl_warmup_start=0.0, kl_warmup_end=0.0)
    return PyroLightningModule(Model(), Guide(), recipe=recipe, example_batch=(x, y))


class SaveGradients(lightning.Callback):
    def __init__(self, out):
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pyro.set_rng_seed(NOISE_SEED)  # the same noise draw in every process

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = {n: p.grad.clone() for n, p in pl_module.named_parameters()}
        torch.save(grads, os.path.join(self.out, f"grad_{trainer.global_rank}.pt"))


if __name__ == "__main__":
    out = sys.argv[1]
    x, y = data()
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[SaveGradients(out)],
    )
    trainer.fit(module(), datamodule=TensorDataModule(x, y, BATCH_PER_PROCESS, seed=0))
    # Torn down here, not at interpreter exit: gloo's threads outliving the group made
    # one CI run abort ("terminate called without an active exception") after fit.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
