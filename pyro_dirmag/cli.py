"""
The ``pyro-dirmag`` command line (also ``python -m pyro_dirmag``)::

    pyro-dirmag train --model lenet300 --method dirmag-reverse --epochs 50 --out runs/A
    pyro-dirmag evaluate runs/A      # metrics.json: mean / sample / ensemble metrics
    pyro-dirmag prune runs/A         # prune.json, pruned.pt, pruned.pt2
    pyro-dirmag prune runs/A --tolerance 0.002 --tag tol2   # prune-tol2.json, ...
    pyro-dirmag prune runs/A --objective macs --tag macs    # least compute, not storage
    pyro-dirmag retrain runs/A --tag tol2   # the kept architecture, new weights, Gaussian
                                            # dropout: retrain-tol2.json, retrained-tol2.pt2
    pyro-dirmag plot runs/A          # PNG pictures

``train`` needs the ``train`` extra (PyTorch Lightning); the other commands do not.
Every recipe default is read from :class:`~pyro_dirmag.infer.Recipe`. Bad input
prints one line naming the problem and exits with status 2, leaving existing runs as
they were.
"""

import argparse
import csv
import json
import math
import os
import re
import signal
import sys
import threading
import time
import warnings

import torch

from .data import DATASETS, DataError
from .infer.recipe import CRITERIA, OBJECTIVES, Recipe
from .infer.training import NonFiniteLossError
from .run import (
    CHECKPOINT,
    CONFIG,
    IDENTITY_KEYS,
    RunError,
    check_identity,
    load_checkpoint,
    load_run,
    load_splits,
    read_config,
    run_config,
)

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG = "pyro-dirmag"


class CLIError(Exception):
    """Bad input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CLIError(f"{self.prog}: {message}")


def _architectures():
    from pyro_dirmag.models import ARCHITECTURES

    return sorted(ARCHITECTURES)


def _methods():
    from pyro_dirmag.models import METHODS

    return list(METHODS)


def _parser():
    p = _Parser(prog=PROG, description="Bayesian DirMag networks: train, evaluate, prune, plot.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a network (PyTorch Lightning)")
    t.add_argument("--model", help=f"one of {', '.join(_architectures())} (default lenet300)")
    t.add_argument("--method", help=f"one of {', '.join(_methods())} (default dirmag-reverse)")
    t.add_argument("--dataset", help=f"one of {', '.join(sorted(DATASETS))} (default mnist)")
    t.add_argument("--data-dir", help="folder holding <Dataset>/raw (default: $PYRO_DIRMAG_DATA)")
    t.add_argument("--download", action="store_true", help="download missing data files")
    t.add_argument("--train-size", type=int, help="training images drawn (default: all)")
    t.add_argument("--val-size", type=int, help="held out of them for validation (5000)")
    t.add_argument("--epochs", type=int, help="epochs of the run (default 50)")
    t.add_argument(
        "--pretrain-epochs",
        type=int,
        help="of the --epochs, how many first train the deterministic twin (DirMag methods; "
        "default a tenth of --epochs)",
    )
    t.add_argument("--batch-size", type=int, help="examples per step and process (100)")
    t.add_argument("--seed", type=int, help="random seed (default 0)")
    t.add_argument("--lr", type=float, help=f"learning rate (Recipe: {Recipe.lr})")
    t.add_argument("--noise-lr", type=float, help=f"noise learning rate ({Recipe.noise_lr})")
    t.add_argument("--flat-fraction", type=float, help="share of the run at the full rate")
    t.add_argument("--kl-warmup-start", type=float, help="progress where the KL weight rises")
    t.add_argument("--kl-warmup-end", type=float, help="progress where it reaches the final weight")
    t.add_argument(
        "--kl-final-weight",
        type=float,
        help="KL weight after the warm-up (1: the ELBO; above 1 a looser bound that prunes "
        "harder, below 1 a tempered posterior)",
    )
    t.add_argument("--init-log-alpha", type=float, help="initial log alpha of the magnitudes")
    t.add_argument("--phi", choices=["per_example", "shared"], help="DirMag rotation planes")
    t.add_argument(
        "--angle-prior",
        choices=["uniform", "hemisphere"],
        help="DirMag angle prior (default uniform, the thesis's)",
    )
    t.add_argument(
        "--direction-noise",
        type=_on_off,
        metavar="{on,off}",
        help="DirMag: a latent direction angle (default on, the thesis's); off keeps "
        "the magnitude posterior only",
    )
    t.add_argument("--alpha", type=float, help="noise strength of a non-variational method")
    t.add_argument("--magnitude", choices=["normal", "gamma"], help="magnitude noise")
    t.add_argument("--magnitude-alpha", type=float, help="its variance")
    t.add_argument("--on", choices=["activation", "weight"], help="where the noise enters")
    t.add_argument("--out", required=True, help="run folder (must not exist unless --resume)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--stop-after", type=int, help="stop after this many epochs of this call")
    t.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    t.add_argument("--devices", default="1", help="processes/devices per node (or auto)")
    t.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn ...")
    t.add_argument("--num-nodes", type=int, default=1, help="machines (torchrun / SLURM)")
    t.add_argument("--threads", type=int, help="torch threads per process")
    t.add_argument("--no-progress-bar", action="store_true", help="plain epoch lines only")

    e = sub.add_parser("evaluate", help="metrics of a trained run -> RUN/metrics.json")
    e.add_argument("run")
    e.add_argument("--num-samples", type=int, default=20, help="networks in the ensemble")
    e.add_argument("--rotate", type=float, default=45.0, help="degrees of the shifted test set")
    e.add_argument("--batch-size", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0, help="seed of the sampled networks")

    r = sub.add_parser("prune", help="prune a DirMag run -> RUN/prune.json, RUN/pruned.pt2")
    r.add_argument("run")
    r.add_argument(
        "--threshold",
        nargs="+",
        metavar="[LAYER=]VALUE",
        help="log alpha thresholds instead of the validation search: a bare VALUE for "
        "every layer, LAYER=VALUE for one layer (names as in prune.json), e.g. "
        "'--threshold 0 4=-4'; every layer needs one",
    )
    r.add_argument("--tolerance", type=float, default=0.001, help="validation accuracy to lose")
    r.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="accuracy",
        help="what --tolerance bounds: the validation accuracy lost, or the fraction of "
        "validation predictions that change (steadier on small validation sets)",
    )
    r.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="params",
        help="what the threshold search removes the most of: parameters (storage) or "
        "multiply-accumulates (compute: conv filters weigh more)",
    )
    r.add_argument(
        "--tag",
        help="write prune-TAG.json, pruned-TAG.pt, pruned-TAG.pt2 instead, next to the "
        "untagged pruning (compare tolerances on one run without overwriting)",
    )

    rt = sub.add_parser(
        "retrain",
        help="train a pruned run's kept architecture from scratch with Gaussian dropout "
        "-> RUN/retrain.json, RUN/retrained.pt2",
    )
    rt.add_argument("run")
    rt.add_argument(
        "--tag",
        help="the architecture of prune-TAG.json (writes retrain-TAG.json, retrained-TAG.pt, "
        "retrained-TAG.pt2)",
    )
    rt.add_argument("--epochs", type=int, default=50, help="epochs of the retraining (50)")
    rt.add_argument("--alpha", type=float, default=0.25, help="Gaussian dropout variance (0.25)")
    rt.add_argument("--seed", type=int, default=0, help="seed of the new weights and the order")
    rt.add_argument("--num-samples", type=int, default=20, help="networks in the ensemble")

    g = sub.add_parser("plot", help="PNG pictures of a run")
    g.add_argument("run")
    return p


# ----- train -----------------------------------------------------------------------
_TRAIN_DEFAULTS = {
    "model": "lenet300",
    "method": "dirmag-reverse",
    "dataset": "mnist",
    "train_size": None,
    "val_size": 5000,
    "epochs": 50,
    "pretrain_epochs": None,  # a tenth of the epochs for DirMag methods, else 0
    "batch_size": 100,
    "seed": 0,
}
_RECIPE_FLAGS = {
    "lr": "lr",
    "noise_lr": "noise_lr",
    "flat_fraction": "flat_fraction",
    "kl_warmup_start": "kl_warmup_start",
    "kl_warmup_end": "kl_warmup_end",
    "kl_final_weight": "kl_final_weight",
    "init_log_alpha": "init_log_alpha",
}
# The options of pyro_dirmag.models.build (its DIRMAG_OPTIONS + NOISE_OPTIONS; named
# here so that the command line starts without importing the models).
_METHOD_FLAGS = (
    "phi",
    "angle_prior",
    "direction_noise",
    "alpha",
    "magnitude",
    "magnitude_alpha",
    "on",
)
# Recipe fields that only a variational method's training reads (noise, KL, guide).
_VARIATIONAL_RECIPE_FIELDS = {
    "noise_lr",
    "kl_warmup_start",
    "kl_warmup_end",
    "kl_final_weight",
    "init_log_alpha",
}


def _on_off(text):
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def _flag(key):
    return "--" + key.replace("_", "-")


def _env_rank():
    """This process's global rank as launchers set it (0 when not launched)."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _check_positive(args, names):
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise CLIError(f"{_flag(name)} must be positive, got {value}")


def _check_positive_int(args, names):
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CLIError(f"{_flag(name)} must be a positive integer, got {value}")


def _train_config(args, rank):
    """The run's config: fresh from the options, or the stored one for ``--resume``."""
    explicit = {k: getattr(args, k) for k in _TRAIN_DEFAULTS if getattr(args, k) is not None}
    recipe_given = {
        field: getattr(args, flag)
        for flag, field in _RECIPE_FLAGS.items()
        if getattr(args, flag) is not None
    }
    method_given = {k: getattr(args, k) for k in _METHOD_FLAGS if getattr(args, k) is not None}
    if args.resume:
        config = read_config(args.out)
        for key, value in explicit.items():
            if key == "train_size" and value == config.get(key):
                continue
            if config.get(key) != value:
                raise CLIError(
                    f"{args.out} was trained with {_flag(key)} {config.get(key)}, not {value}: "
                    "a resumed run keeps its settings"
                )
        for field, value in recipe_given.items():
            if config["recipe"].get(field) != value:
                raise CLIError(
                    f"{args.out} was trained with {_flag(field)} {config['recipe'][field]}"
                )
        for key, value in method_given.items():
            stored = config["method_options"].get(key)
            if stored != value:
                if stored is None:
                    raise CLIError(f"{args.out} was trained without {_flag(key)}")
                if isinstance(stored, bool):
                    stored = "on" if stored else "off"
                raise CLIError(f"{args.out} was trained with {_flag(key)} {stored}")
        if args.data_dir is not None:
            config["data_dir"] = os.path.abspath(args.data_dir)
        return config
    if (
        rank == 0
        and os.path.exists(args.out)
        and (not os.path.isdir(args.out) or os.listdir(args.out))
    ):
        raise CLIError(f"{args.out} already exists: pass --resume to continue it, or another --out")
    settings = dict(_TRAIN_DEFAULTS, **explicit)
    if settings["model"] not in _architectures():
        raise CLIError(
            f"unknown --model {settings['model']!r}; choose from {', '.join(_architectures())}"
        )
    if settings["method"] not in _methods():
        raise CLIError(
            f"unknown --method {settings['method']!r}; choose from {', '.join(_methods())}"
        )
    if settings["dataset"] not in DATASETS:
        raise CLIError(
            f"unknown --dataset {settings['dataset']!r}; choose from {', '.join(sorted(DATASETS))}"
        )
    for name in ("epochs", "batch_size", "train_size"):
        value = settings[name]
        if value is not None and value < 1:
            raise CLIError(f"{_flag(name)} must be a positive integer, got {value}")
    if settings["val_size"] < 0:
        raise CLIError(f"--val-size must be >= 0, got {settings['val_size']}")
    try:
        recipe = Recipe(**recipe_given)
    except ValueError as e:
        raise CLIError(str(e).replace("parameter ", "parameter --").replace("_", "-")) from e
    from pyro_dirmag.models import is_variational, unused_options

    method = settings["method"]
    extra = sorted(method_given.keys() & unused_options(method))
    if not is_variational(method):
        extra += sorted(recipe_given.keys() & _VARIATIONAL_RECIPE_FIELDS)
    if extra:
        raise CLIError(f"{', '.join(map(_flag, extra))} does not apply to --method {method}")
    pretrain = settings["pretrain_epochs"]
    if pretrain is None:
        settings["pretrain_epochs"] = settings["epochs"] // 10 if is_variational(method) else 0
    elif not is_variational(method):
        raise CLIError(f"--pretrain-epochs does not apply to --method {method}")
    elif not 0 <= pretrain < settings["epochs"]:
        raise CLIError(
            f"--pretrain-epochs must be in [0, --epochs) to leave a variational epoch, "
            f"got {pretrain} with --epochs {settings['epochs']}"
        )
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else None
    return run_config(recipe=recipe, method_options=method_given, data_dir=data_dir, **settings)


def _load_train_data(config, download):
    from .data import load_dataset

    if config["train_size"] is None:
        _, y = load_dataset(config["dataset"], True, config.get("data_dir"), download=download)
        config["train_size"] = len(y)
    return load_splits(config, test=False, download=download)


def _train(args):
    rank = _env_rank()
    _check_positive(args, ["lr", "noise_lr", "alpha", "magnitude_alpha"])
    _check_positive_int(args, ["stop_after", "threads"])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = _train_config(args, rank)
    data = _load_train_data(config, args.download)
    pretrain = config.get("pretrain_epochs") or 0
    ckpt_path = None
    if args.resume and (pretrain == 0 or os.path.exists(os.path.join(args.out, CHECKPOINT))):
        checkpoint = load_checkpoint(args.out)
        check_identity(config, checkpoint, os.path.join(args.out, CHECKPOINT))
        if pretrain + checkpoint.get("epoch", -1) + 1 >= config["epochs"]:
            raise CLIError(
                f"{args.out} has finished its {config['epochs']} epochs; nothing to resume"
            )
        ckpt_path = os.path.join(args.out, CHECKPOINT)
        del checkpoint
    try:
        import lightning
    except ImportError as e:
        raise CLIError('training needs PyTorch Lightning: pip install "pyro-dirmag[train]"') from e
    import pyro

    from .lightning import PyroLightningModule, TensorDataModule
    from .run import build_from_config

    x, y = data["train"]
    pyro.set_rng_seed(config["seed"])
    model, guide = build_from_config(config, len(y))
    files = RunFiles(args.out, config, args.stop_after)
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Lightning 2.6 builds torch pytree LeafSpecs, which torch 2.14 deprecates.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer = _trainer(
            lightning,
            max_epochs=config["epochs"] - pretrain,
            accelerator=args.accelerator,
            devices=devices,
            strategy=args.strategy,
            num_nodes=args.num_nodes,
            logger=False,
            enable_checkpointing=True,  # through the RunFiles callback only
            enable_model_summary=False,
            enable_progress_bar=not args.no_progress_bar,
            callbacks=[files.callback()],
            use_distributed_sampler=False,
            num_sanity_val_steps=0,
            default_root_dir=args.out,
        )
        if rank == 0 and not args.resume:  # the run folder, once every setting is accepted
            os.makedirs(args.out, exist_ok=True)
            _write_json(os.path.join(args.out, CONFIG), config)
        if pretrain and ckpt_path is None:
            try:
                _pretrain(model, x, y, config, files, rank)
            except KeyboardInterrupt:
                print(
                    f"interrupted while pre-training; continue with: {PROG} train --out "
                    f"{args.out} --resume",
                    file=sys.stderr,
                )
                return EXIT_INTERRUPTED
        module = PyroLightningModule(
            model,
            guide,
            recipe=Recipe(**config["recipe"]),
            example_batch=(x[: config["batch_size"]], y[: config["batch_size"]]),
            rank_seed=config["seed"],
        )
        sigint = signal.getsignal(signal.SIGINT)
        try:
            trainer.fit(
                module,
                datamodule=TensorDataModule(x, y, config["batch_size"], config["seed"]),
                ckpt_path=ckpt_path,
            )
        except SystemExit:
            # Lightning turns Ctrl-C into a graceful shutdown and sys.exit(1).
            if not trainer.interrupted:
                raise
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, sigint)
            _destroy_process_group()
    if trainer.global_rank != 0:
        return 0
    done = files.last_epoch
    if trainer.interrupted:
        print(
            f"interrupted; the last complete checkpoint is {os.path.join(args.out, CHECKPOINT)} "
            f"(epoch {done}); continue with: {PROG} train --out {args.out} --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(f"trained {done} of {config['epochs']} epochs; outputs in {args.out}:")
    print(f"  checkpoint {os.path.join(args.out, CHECKPOINT)}")
    print(f"  per-epoch metrics {os.path.join(args.out, 'metrics.csv')} and metrics.jsonl")
    if done < config["epochs"]:
        print(f"  continue with: {PROG} train --out {args.out} --resume")
    else:
        print(
            f"  next: {PROG} evaluate {args.out}; {PROG} prune {args.out}; {PROG} plot {args.out}"
        )
    return 0


def _destroy_process_group():
    """Ends a multi-process run's process group (``--strategy ddp``) now rather than at
    interpreter exit, where gloo's threads can abort the process after a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


PRETRAINED = "pretrained.pt"


def _pretrain(model, x, y, config, files, rank):
    """
    The run's first ``pretrain_epochs``: trains the deterministic twin of the model and
    copies it into the DirMag layers. The twin's weights are saved (atomically) to
    ``RUN/pretrained.pt`` and its epochs appended to the metrics with
    ``"phase": "pretrain"``; a resumed run that finds the file loads it instead of
    training again (the twin is a few plain epochs: an interrupted pre-training restarts).
    """
    from .infer.pretrain import pretrain_
    from .models import deterministic_model
    from .nn import load_deterministic_

    torch.manual_seed(config["seed"])
    twin = deterministic_model(config["model"])
    path = os.path.join(files.out, PRETRAINED)
    if os.path.exists(path):
        twin.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        load_deterministic_(model, twin)
        return
    files.records = []

    def log(epoch, record):
        record = dict(record, phase="pretrain")
        files.records.append(record)
        if rank == 0:
            files.write()
            print(json.dumps(record), flush=True)

    generator = torch.Generator().manual_seed(config["seed"])
    pretrain_(
        model,
        twin,
        x,
        y,
        epochs=config["pretrain_epochs"],
        batch_size=config["batch_size"],
        recipe=Recipe(**config["recipe"]),
        callback=log,
        generator=generator,
    )
    if rank == 0:
        torch.save(twin.state_dict(), path + ".tmp")
        os.replace(path + ".tmp", path)


def _trainer(lightning, **kwargs):
    """``lightning.Trainer(**kwargs)``; a setting the machine cannot honour (no GPU,
    an unknown strategy) becomes one line."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return lightning.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"--accelerator/--devices/--strategy: {first}") from e


class RunFiles:
    """Per-epoch files of a run: the atomic ``last.ckpt`` and the metrics rows."""

    def __init__(self, out, config, stop_after=None):
        self.out = out
        self.config = config
        self.stop_after = stop_after
        self.offset = config.get("pretrain_epochs") or 0  # run epochs before Lightning's
        self.records = []
        self.last_epoch = 0
        path = os.path.join(out, "metrics.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                self.records = [json.loads(line) for line in f if line.strip()]

    def callback(self):
        from lightning.pytorch.callbacks import Checkpoint

        files = self

        class _EpochEnd(Checkpoint):
            # A Checkpoint subclass: Lightning calls it after the module's epoch-end hook.
            def on_train_start(self, trainer, pl_module):
                done = files.offset + trainer.current_epoch
                files.records = [r for r in files.records if r["epoch"] <= done]
                files.last_epoch = done
                self.started = done

            def on_train_epoch_start(self, trainer, pl_module):
                self.t0 = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                epoch = files.offset + trainer.current_epoch + 1
                record = {"epoch": epoch, "step": trainer.global_step}
                record.update(pl_module.epoch_metrics)
                record["seconds"] = time.perf_counter() - self.t0
                final = os.path.join(files.out, CHECKPOINT)
                tmp = final + ".tmp"
                trainer.save_checkpoint(tmp, weights_only=False)
                trainer.strategy.barrier()
                if trainer.global_rank == 0:
                    os.replace(tmp, final)
                    files.records.append(record)
                    files.write()
                    if not trainer.progress_bar_callback:
                        print(json.dumps(record), flush=True)
                files.last_epoch = epoch
                if files.stop_after is not None and epoch - self.started >= files.stop_after:
                    trainer.should_stop = True

            def on_save_checkpoint(self, trainer, pl_module, checkpoint):
                checkpoint["run_config"] = {k: files.config[k] for k in IDENTITY_KEYS}

        return _EpochEnd()

    def write(self):
        keys = []
        for r in self.records:
            keys += [k for k in r if k not in keys]
        path = os.path.join(self.out, "metrics.csv")
        with open(path + ".tmp", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.records)
        os.replace(path + ".tmp", path)
        path = os.path.join(self.out, "metrics.jsonl")
        with open(path + ".tmp", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)
        os.replace(path + ".tmp", path)


# ----- evaluate, prune, plot ---------------------------------------------------------
def _write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def _existing_run(path):
    if not os.path.isdir(path):
        raise CLIError(f"no run folder {path}")
    return path


def _evaluate(args):
    from .infer.evaluate import classification_metrics, predict_modes
    from .infer.metrics import reliability_bins
    from .models import evaluation_modes

    _check_positive_int(args, ["num_samples", "batch_size"])
    config, model, guide, checkpoint = load_run(_existing_run(args.run))
    data = load_splits(config, rotate=args.rotate)
    import pyro

    pyro.set_rng_seed(args.seed)
    modes = evaluation_modes(config["method"])
    result = {}
    reliability = {}
    for split in ("test", "test_rotated"):
        x, y = data[split]
        probs = predict_modes(model, guide, x, modes, args.num_samples, args.batch_size)
        result[split] = {mode: classification_metrics(p, y) for mode, p in probs.items()}
        reliability[split] = {mode: reliability_bins(p, y) for mode, p in probs.items()}
    result["settings"] = {
        "epoch": checkpoint.get("epoch", -1) + 1,
        "num_samples": args.num_samples,
        "rotate_degrees": args.rotate,
        "seed": args.seed,
        "test_images": len(data["test"][1]),
    }
    _write_json(os.path.join(args.run, "metrics.json"), result)
    _write_json(os.path.join(args.run, "reliability.json"), reliability)
    print(f"{'':22}{'accuracy':>9}{'NLL':>9}{'ECE':>8}{'Brier':>8}{'entropy':>9}")
    for split in ("test", "test_rotated"):
        for mode, m in result[split].items():
            print(
                f"{split:<13}{mode:<9}{m['accuracy']:>9.4f}{m['nll']:>9.4f}{m['ece']:>8.4f}"
                f"{m['brier']:>8.4f}{m['entropy']:>9.4f}"
            )
    print(f"wrote {os.path.join(args.run, 'metrics.json')}")
    return 0


def _prune(args):
    from .infer.evaluate import classification_metrics
    from .infer.prune import prune
    from .infer.recipe import choose_thresholds
    from .models import is_variational
    from .nn import predict_probs
    from .nn.dirmag import dirmag_layers

    config, model, guide, _ = load_run(_existing_run(args.run))
    if not is_variational(config["method"]):
        raise CLIError(f"{args.run} was trained with --method {config['method']}: nothing to prune")
    if not args.tolerance >= 0:
        raise CLIError(f"--tolerance must be >= 0, got {args.tolerance}")
    suffix = _tag_suffix(args.tag)
    data = load_splits(config)
    result = {}
    if args.threshold is None:
        xv, yv = data["val"]
        if len(yv) == 0:
            raise CLIError(f"{args.run} has no validation split: pass --threshold")
        threshold, val = choose_thresholds(
            model,
            guide,
            xv,
            yv,
            tolerance=args.tolerance,
            criterion=args.criterion,
            objective=args.objective,
        )
        result["threshold_source"] = "validation"
        result["objective"] = args.objective
        result["validation"] = val
    else:
        threshold = _thresholds_from_flag(args.threshold, [n for n, _ in dirmag_layers(model.net)])
        result["threshold_source"] = "--threshold"
    pruned, report = prune(model, guide, threshold=threshold)
    unpruned, _ = prune(model, guide, threshold=math.inf)  # the mean network, all units
    net = pruned.eval()
    xt, yt = data["test"]

    def test_metrics(network):
        return classification_metrics(predict_probs(network, xt, "mean", batch_size=1000), yt)

    result.update(report.as_dict())
    result["test"] = test_metrics(net)
    result["test_unpruned"] = test_metrics(unpruned)
    state_file = f"pruned{suffix}.pt"
    torch.save(net.state_dict(), os.path.join(args.run, state_file))
    program = _export(net, xt[:2], args.run, f"pruned{suffix}")
    result["files"] = {"state_dict": state_file, "program": program}
    report_file = os.path.join(args.run, f"prune{suffix}.json")
    _write_json(report_file, result)
    print(report)
    accuracy, before = result["test"]["accuracy"], result["test_unpruned"]["accuracy"]
    print(
        f"pruned network test accuracy {accuracy:.4f} (unpruned mean network {before:.4f}, "
        f"{100 * (accuracy - before):+.2f} point)"
    )
    print(f"wrote {report_file}")
    return 0


def _thresholds_from_flag(values, names):
    """
    ``--threshold``'s words as :func:`~pyro_dirmag.infer.prune`'s threshold: a float
    when it is one bare number, else a ``{layer: float}`` dict over ``names`` (a bare
    number is the default of the layers not named).
    """
    default, per_layer = None, {}
    for word in values:
        name, sep, text = word.rpartition("=")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isnan(value):
            raise CLIError(f"--threshold wants [LAYER=]NUMBER, got {word!r}")
        if not sep:
            if default is not None:
                raise CLIError(f"--threshold has two values for every layer: {values}")
            default = value
        elif name not in names:
            raise CLIError(f"--threshold names layer {name!r}; the run's DirMag layers are {names}")
        elif name in per_layer:
            raise CLIError(f"--threshold names layer {name!r} twice")
        else:
            per_layer[name] = value
    if not per_layer:
        return default
    missing = [n for n in names if n not in per_layer]
    if missing and default is None:
        raise CLIError(
            f"--threshold gives no value for layers {missing}: name them or add a bare "
            "VALUE for the rest"
        )
    return {n: per_layer.get(n, default) for n in names}


def _tag_suffix(tag):
    """``"-TAG"`` for a ``--tag`` (checked to be a file name part), ``""`` for none."""
    if tag is None:
        return ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", tag):
        raise CLIError(
            f"--tag must be letters, digits, '_', '.' or '-' (a file name part), got {tag!r}"
        )
    return f"-{tag}"


def _retrain(args):
    from .infer.evaluate import classification_metrics
    from .nn import EVAL_MODES, predict_probs, to_noisy
    from .run import load_pruning, train_like_run

    run = _existing_run(args.run)
    suffix = _tag_suffix(args.tag)
    _check_positive_int(args, ["epochs"])
    _check_positive(args, ["alpha"])
    _check_positive_int(args, ["num_samples"])
    config, pruned, report, pruning = load_pruning(run, args.tag)
    torch.manual_seed(args.seed)
    net = to_noisy(pruned, noise="gaussian", alpha=args.alpha)
    data = load_splits(config)
    xt, yt = data["test"]

    def progress(epoch, record):
        print(f"epoch {epoch}/{args.epochs}: loss {record['loss']:.4f}", flush=True)

    start = time.perf_counter()
    train_like_run(net, config, data, epochs=args.epochs, seed=args.seed, callback=progress)
    seconds = time.perf_counter() - start
    torch.manual_seed(args.seed)
    test = {
        mode: classification_metrics(
            predict_probs(net, xt, mode, num_samples=args.num_samples, batch_size=1000), yt
        )
        for mode in EVAL_MODES
    }
    state_file = f"retrained{suffix}.pt"
    torch.save(net.state_dict(), os.path.join(run, state_file))
    program = _export(net.eval(), xt[:2], run, f"retrained{suffix}")
    result = {
        "pruning": f"prune{suffix}.json",
        "threshold": pruning["threshold"],
        "noise": "gaussian",
        "alpha": args.alpha,
        "epochs": args.epochs,
        "seed": args.seed,
        "train_seconds": seconds,
        "params_kept": report.params_kept,
        "params_total": report.params_total,
        "compression": report.compression,
        "test": test,
        "test_pruned": pruning["test"],
        "test_unpruned": pruning.get("test_unpruned"),
        "files": {"state_dict": state_file, "program": program},
    }
    report_file = os.path.join(run, f"retrain{suffix}.json")
    _write_json(report_file, result)
    ensemble, pruned_acc = test["ensemble"]["accuracy"], pruning["test"]["accuracy"]
    print(
        f"retrained x{report.compression:.2f} network: test accuracy {test['mean']['accuracy']:.4f}"
        f" (mean network), {ensemble:.4f} (ensemble of {args.num_samples}); the pruned mean "
        f"network had {pruned_acc:.4f}"
    )
    print(f"wrote {report_file}")
    return 0


def _export(net, example, run_dir, stem="pruned"):
    """Saves ``net`` as a ``torch.export`` program with a dynamic batch size (TorchScript
    where export fails), as ``stem.pt2`` (``stem.ts``); returns the file name."""
    try:
        batch = {0: torch.export.Dim("batch")}
        program = torch.export.export(net, (example,), dynamic_shapes=(batch,))
        torch.export.save(program, os.path.join(run_dir, f"{stem}.pt2"))
        return f"{stem}.pt2"
    except Exception:  # noqa: BLE001 - export coverage varies between torch versions
        torch.jit.trace(net, example).save(os.path.join(run_dir, f"{stem}.ts"))
        return f"{stem}.ts"


def _plot(args):
    from .plots import plot_run

    run = _existing_run(args.run)
    config = read_config(run)
    written = plot_run(run, config)
    for path in written:
        print(path)
    return 0


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "prune": _prune,
    "retrain": _retrain,
    "plot": _plot,
}


def main(argv=None):
    """Runs the command line; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (CLIError, RunError, DataError, FileNotFoundError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not message.startswith(PROG):
            message = f"{PROG}: error: {message}"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NonFiniteLossError as e:
        print(
            f"{PROG}: training stopped: {e}; the last complete checkpoint is kept", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
