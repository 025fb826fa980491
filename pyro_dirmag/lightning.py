r"""
Training of any Pyro model and guide with PyTorch Lightning (needs the ``train`` extra:
``pip install "pyro-dirmag[train]"``).

:class:`PyroLightningModule` minimizes Pyro's ``elbo.differentiable_loss(model, guide,
x, y)`` with one :class:`torch.optim.Adam` over the parameters of the model and the
guide (:meth:`~pyro_dirmag.infer.Recipe.optimizer`: no per-parameter Pyro optimizer
wrapper), the recipe's learning-rate schedule stepped every optimizer step and the KL
weight :math:`\beta(t)` of :func:`~pyro_dirmag.infer.kl_weight`. Lightning brings the
progress bar, checkpoints and multi-process training::

    model, guide = build("lenet300", "dirmag-reverse", num_data=len(x))
    module = PyroLightningModule(model, guide, example_batch=(x[:2], y[:2]))
    trainer = lightning.Trainer(max_epochs=5)
    trainer.fit(module, epoch_batches(x, y, batch_size=100, seed=0))

**Unbiased across processes.** The model scales the likelihood of a mini-batch of
:math:`M_r` examples on process :math:`r` by :math:`N/M_r` (its subsampled data plate)
and each process's loss holds the whole KL once:

.. math::

    L_r = -\frac{N}{M_r} \sum_{i \in B_r} \log p(y_i \mid x_i, w) + \beta\,\mathrm{KL}.

DDP averages the gradients over the :math:`R` processes; with equal :math:`M_r = M/R`
(:func:`epoch_batches` gives every process an equal share of each global batch of
:math:`M`), :math:`\frac1R \sum_r \nabla L_r = \nabla\big(-\frac{N}{M} \sum_{i \in \cup_r
B_r} \log p(y_i \mid x_i, w) + \beta\,\mathrm{KL}\big)`: the single-process gradient on
the union batch, with the KL counted once.

**Resuming.** The checkpoint holds the model's and the guide's state dicts (under
``model.`` and ``guide.`` in ``state_dict``), the optimizer and scheduler states,
Lightning's loop counters and the RNG states of every process, so that a run resumed
from an end-of-epoch checkpoint continues exactly as if it had not stopped (on CPU).

.. note:: The guide must have its parameters before Lightning builds the optimizer or
    wraps the module for DDP: pass ``example_batch`` (or run the guide once yourself).
    Pyro's param store is not read: the modules' parameters are the state.
"""

import random

import lightning
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.utils.data import DataLoader, Sampler, TensorDataset

from .infer.elbo import DirMagELBO
from .infer.kl_weight import kl_weight
from .infer.recipe import Recipe
from .infer.training import NonFiniteLossError, refuse_non_finite_step

__all__ = ["EpochBatches", "PyroLightningModule", "TensorDataModule", "epoch_batches"]


class EpochBatches(Sampler):
    """
    Mini-batches of indices: a permutation of ``range(num_data)`` drawn from
    ``(seed, epoch)``, cut into global batches of ``batch_size * world_size``, of which
    process ``rank`` takes its share. The shares are equal: a short final batch drops
    its last ``len % world_size`` examples for that epoch. Lightning calls
    :meth:`set_epoch`.
    """

    def __init__(self, num_data, batch_size, seed=0, rank=0, world_size=1):
        for name, value in (("num_data", num_data), ("batch_size", batch_size)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"Expected parameter {name} ({value!r}) to be a positive int")
        if not 0 <= rank < world_size:
            raise ValueError(f"Expected rank ({rank}) in [0, world_size={world_size})")
        if num_data < world_size:
            raise ValueError(f"num_data ({num_data}) is smaller than world_size ({world_size})")
        self.num_data = num_data
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def _global_batches(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.num_data, generator=g)
        out = []
        for batch in order.split(self.batch_size * self.world_size):
            usable = len(batch) - len(batch) % self.world_size  # equal shares
            if usable:
                out.append(batch[:usable])
        return out

    def __iter__(self):
        for batch in self._global_batches():
            yield batch.tensor_split(self.world_size)[self.rank]

    def __len__(self):
        full, rest = divmod(self.num_data, self.batch_size * self.world_size)
        return full + (rest >= self.world_size)


def epoch_batches(x, y, batch_size, seed=0, rank=None, world_size=None):
    """
    A :class:`~torch.utils.data.DataLoader` over in-memory ``(x, y)`` yielding
    :class:`EpochBatches` mini-batches (indexing the tensors once per batch, no
    per-example collation). ``rank`` and ``world_size`` default to those of the
    initialized process group (or 0 and 1).
    """
    if rank is None or world_size is None:
        dist = torch.distributed
        ready = dist.is_available() and dist.is_initialized()
        rank = dist.get_rank() if ready else 0
        world_size = dist.get_world_size() if ready else 1
    sampler = EpochBatches(len(x), batch_size, seed, rank, world_size)
    # Its own generator: the loader draws a base seed per epoch, which must not come
    # from (and shift) the global RNG stream of the model's noise.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), sampler=sampler, batch_size=None, generator=generator)


class _ObservedSites(Messenger):
    """Records ``(fn, value, scale)`` of every observed sample site."""

    def __init__(self):
        super().__init__()
        self.sites = []

    def _postprocess_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            self.sites.append((msg["fn"], msg["value"], msg["scale"]))


class PyroLightningModule(lightning.LightningModule):
    r"""
    A :class:`lightning.LightningModule` training ``model`` and ``guide`` on batches
    ``(x, y)`` by minimizing ``elbo.differentiable_loss(model, guide, x, y)`` under
    :func:`~pyro_dirmag.infer.kl_weight` (the recipe's warm-up as a function of the
    optimizer step over the planned number of steps).

    Logged every step (progress bar): ``loss`` (per training example, :math:`L/N`),
    ``nll`` (mean :math:`-\log p(y_i \mid x_i, w)` of the batch), ``kl`` (the weighted
    KL per training example), ``acc`` (batch accuracy for a categorical likelihood);
    :attr:`epoch_metrics` holds their epoch means after each epoch, with ``kl_weight``,
    ``lr`` and, for a guide with ``log_alpha``, ``units_kept`` (share of units at
    :math:`\log\alpha \le` ``units_threshold``).

    :param model: a Pyro model called as ``model(x, y)``, whose observed sites are
        scaled by :math:`N/M` (a subsampled plate).
    :param guide: its guide (a :class:`torch.nn.Module`).
    :param elbo: default :class:`~pyro_dirmag.infer.DirMagELBO`.
    :param recipe: :class:`~pyro_dirmag.infer.Recipe` (optimizer, learning rates and
        schedules); default ``Recipe()``.
    :param tuple example_batch: arguments to run the guide once with, creating lazily
        made parameters.
    :param int rank_seed: if given, a fresh run reseeds every process with
        ``rank_seed + rank`` at the start (independent noise per process).
    :param bool check_finite: refuse a non-finite loss or gradient
        (:class:`~pyro_dirmag.infer.NonFiniteLossError`) before the optimizer steps; it
        reads values on the host, so the default ``None`` checks on CPU only.
    :param float units_threshold: :math:`\log\alpha` above which a unit counts as pruned.
    """

    def __init__(
        self,
        model,
        guide,
        *,
        elbo=None,
        recipe=None,
        example_batch=None,
        rank_seed=None,
        check_finite=None,
        units_threshold=3.0,
    ):
        super().__init__()
        self.model = model
        self.guide = guide
        self.elbo = elbo or DirMagELBO()
        self.recipe = recipe or Recipe()
        self.rank_seed = rank_seed
        self.check_finite = check_finite
        self.units_threshold = float(units_threshold)
        self.epoch_metrics = {}
        self._sums, self._count = None, 0
        self._restored_rng = None
        self._warmup = self.recipe.kl_schedule()
        if example_batch is not None:
            with torch.no_grad(), poutine.block():
                guide(*example_batch)

    # ----- optimization -----------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.recipe.optimizer(self.model, self.guide)
        scheduler = self.recipe.lr_scheduler(optimizer, self.total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    @property
    def total_steps(self):
        """Optimizer steps planned for the whole run."""
        return max(int(self.trainer.estimated_stepping_batches), 1)

    def current_kl_weight(self):
        """:math:`\\beta` at the current optimizer step."""
        return self._warmup(self.global_step / self.total_steps)

    def loss_and_stats(self, x, y, beta=1.0):
        """
        The loss of one batch under KL weight ``beta`` and detached statistics (tensors;
        nothing is read on the host): ``loss``, ``nll``, ``kl`` and, for a categorical
        likelihood, ``acc``.
        """
        observed = _ObservedSites()
        with observed, kl_weight(weight=beta):
            loss = self.elbo.differentiable_loss(self.model, self.guide, x, y)
        loss_d = loss.detach()
        data_term = loss_d.new_zeros(())
        num_data = loss_d.new_ones(())
        stats = {}
        for k, (fn, value, scale) in enumerate(observed.sites):
            log_p = fn.log_prob(value).detach()
            data_term = data_term - scale * log_p.sum()
            if k == 0:
                num_data = num_data * scale * log_p.numel()
                stats["nll"] = -log_p.mean()
                if hasattr(fn, "logits") and fn.logits.shape[:-1] == value.shape:
                    stats["acc"] = (fn.logits.detach().argmax(-1) == value).float().mean()
        stats["loss"] = loss_d / num_data
        stats["kl"] = (loss_d - data_term) / num_data
        return loss, stats

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, stats = self.loss_and_stats(x, y, self.current_kl_weight())
        if self._checks_finite() and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"step {self.global_step + 1}: loss = {float(loss)}; no parameter was updated"
            )
        self.log_dict(stats, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(x))
        values = torch.stack(
            [stats.get(k, loss.new_zeros(())) for k in ("loss", "nll", "kl", "acc")]
        )
        self._sums = values if self._sums is None else self._sums + values
        self._count += 1
        return loss

    def _checks_finite(self):
        if self.check_finite is None:
            return self.device.type == "cpu"
        return self.check_finite

    def on_before_optimizer_step(self, optimizer):
        if not self._checks_finite():
            return
        refuse_non_finite_step(optimizer, self.global_step + 1)

    # ----- epoch summaries --------------------------------------------------------
    def on_train_epoch_start(self):
        self._sums, self._count = None, 0

    def on_train_epoch_end(self):
        if self._sums is None:
            return
        sums = torch.cat([self._sums, self._sums.new_tensor([self._count])])
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        means = (sums[:-1] / sums[-1]).tolist()
        record = dict(zip(("loss", "nll", "kl", "acc"), means, strict=True))
        record["kl_weight"] = self.current_kl_weight()
        for group in self.trainer.optimizers[0].param_groups:
            record["lr" if group.get("name", "weights") == "weights" else f"lr_{group['name']}"] = (
                group["lr"]
            )
        kept = self.units_kept()
        if kept is not None:
            record["units_kept"] = kept
            self.log("units_kept", kept, prog_bar=True, on_epoch=True, batch_size=1)
        self.epoch_metrics = record

    @torch.no_grad()
    def units_kept(self):
        """Share of magnitude units with :math:`\\log\\alpha \\le` ``units_threshold``, or
        ``None`` when the guide has no ``log_alpha``."""
        if not hasattr(self.guide, "log_alpha"):
            return None
        log_alpha = self.guide.log_alpha()
        total = sum(v.numel() for v in log_alpha.values())
        if total == 0:
            return None
        kept = sum(int((v <= self.units_threshold).sum()) for v in log_alpha.values())
        return kept / total

    # ----- checkpoints ------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint):
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        states = [state]
        if self.trainer.world_size > 1:
            states = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(states, state)
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint):
        self._restored_rng = checkpoint.get("rng_states")

    def on_train_start(self):
        states = self._restored_rng
        if states is None:
            if self.rank_seed is not None:
                import pyro

                pyro.set_rng_seed(self.rank_seed + self.global_rank)
            return
        if len(states) != self.trainer.world_size:
            raise ValueError(
                f"the checkpoint holds the RNG states of {len(states)} process(es), "
                f"this run has {self.trainer.world_size}: resume with the same --devices"
            )
        state = states[self.global_rank]
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)
        self._restored_rng = None


class TensorDataModule(lightning.LightningDataModule):
    """
    In-memory training tensors served by :func:`epoch_batches` with the process's
    rank and world size (known once Lightning has set up the processes).
    ``batch_size`` is per process.
    """

    def __init__(self, x, y, batch_size, seed=0):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self):
        trainer = self.trainer
        return epoch_batches(
            self.x, self.y, self.batch_size, self.seed, trainer.global_rank, trainer.world_size
        )
