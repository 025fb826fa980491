"""The pyro-dirmag command line on a tiny synthetic data set (conftest.py)."""

import json
import os
import pathlib
import subprocess
import sys

import matplotlib.image
import pytest
import torch

from pyro_dirmag.cli import main
from pyro_dirmag.run import load_run

from .conftest import write_synthetic

TINY = ["--train-size", "120", "--val-size", "20", "--batch-size", "25", "--no-progress-bar"]
STEPS_PER_EPOCH = 4


def train(data_root, out, *extra):
    return main(["train", "--data-dir", data_root, *TINY, "--out", str(out), *extra])


def read_json(path):
    with open(path) as f:
        return json.load(f)


def rows(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f]


def assert_same_run(a, b):
    ca = torch.load(os.path.join(a, "last.ckpt"), weights_only=True)
    cb = torch.load(os.path.join(b, "last.ckpt"), weights_only=True)
    assert ca["global_step"] == cb["global_step"]
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value, cb["state_dict"][key]), key
    for sa, sb in zip(
        ca["optimizer_states"][0]["state"].values(),
        cb["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ca["lr_schedulers"] == cb["lr_schedulers"]
    assert torch.equal(ca["rng_states"][0]["torch"], cb["rng_states"][0]["torch"])
    assert rows(a) == rows(b)


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """An uninterrupted 4-epoch run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert train(data_root, out, "--epochs", "4") == 0
    return str(out)


def test_train_writes_checkpoint_and_metrics(reference):
    records = rows(reference)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "nll", "kl", "acc", "kl_weight", "lr", "lr_noise", "units_kept"} <= set(
        records[0]
    )
    assert records[-1]["acc"] > 0.9 > records[0]["nll"] / 10  # it learns the 10 blocks
    with open(os.path.join(reference, "metrics.csv")) as f:
        assert len(f.read().strip().splitlines()) == 5
    config = read_json(os.path.join(reference, "config.json"))
    assert config["method"] == "dirmag-reverse" and config["model"] == "lenet300"
    from pyro_dirmag.infer import Recipe

    assert config["recipe"] == Recipe().as_dict()  # every default from the Recipe


def test_kl_final_weight_is_stored_and_used(data_root, tmp_path):
    out = tmp_path / "run"
    flags = ["--kl-warmup-start", "0", "--kl-warmup-end", "0", "--kl-final-weight", "0.5"]
    assert train(data_root, out, "--epochs", "1", "--pretrain-epochs", "0", *flags) == 0
    assert read_json(os.path.join(out, "config.json"))["recipe"]["kl_final_weight"] == 0.5
    (record,) = rows(out)
    assert record["kl_weight"] == 0.5


@pytest.mark.slow
def test_resume_two_plus_two_epochs_is_bit_exact(data_root, tmp_path, reference):
    out = tmp_path / "run"
    assert train(data_root, out, "--epochs", "4", "--stop-after", "2") == 0
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    assert main(["train", "--out", str(out), "--resume", "--no-progress-bar"]) == 0
    assert_same_run(str(out), reference)


@pytest.mark.slow
def test_ctrl_c_keeps_last_checkpoint_and_resumes_exactly(
    data_root, tmp_path, reference, monkeypatch, capsys
):
    from pyro_dirmag.lightning import PyroLightningModule

    step = PyroLightningModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == STEPS_PER_EPOCH + 2:  # in the middle of epoch 2
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(PyroLightningModule, "training_step", interrupted)
        assert train(data_root, out, "--epochs", "4") == 130
    assert "--resume" in capsys.readouterr().err
    assert [r["epoch"] for r in rows(out)] == [1]
    load_run(str(out))  # the last complete checkpoint is usable
    assert main(["train", "--out", str(out), "--resume", "--no-progress-bar"]) == 0
    assert_same_run(str(out), reference)


def _png_ok(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.02, f"{path} is blank"


@pytest.mark.slow
def test_evaluate_prune_plot(reference, capsys):
    run = reference
    assert main(["evaluate", run, "--num-samples", "3"]) == 0
    metrics = read_json(os.path.join(run, "metrics.json"))
    for split in ("test", "test_rotated"):
        assert set(metrics[split]) == {"mean", "sample", "ensemble"}
        for values in metrics[split].values():
            assert set(values) == {"accuracy", "nll", "ece", "brier", "entropy"}
    assert metrics["test"]["ensemble"]["accuracy"] > 0.9
    assert metrics["test_rotated"]["ensemble"]["accuracy"] < metrics["test"]["ensemble"]["accuracy"]

    assert main(["prune", run]) == 0
    report = read_json(os.path.join(run, "prune.json"))
    assert report["threshold_source"] == "validation"
    assert isinstance(report["threshold"], dict)
    assert report["compression"] == report["params_total"] / report["params_kept"]
    assert [r["name"] for r in report["layers"]] == ["1", "3", "5"]
    # the exported program is the pruned network: same test accuracy as reported
    _, _, _, _ = load_run(run)
    program = torch.export.load(os.path.join(run, report["files"]["program"])).module()
    from pyro_dirmag.run import load_splits

    xt, yt = load_splits(read_json(os.path.join(run, "config.json")))["test"]
    acc = (program(xt).argmax(-1) == yt).double().mean().item()
    assert acc == pytest.approx(report["test"]["accuracy"])
    # the unpruned reference is evaluate's mean network (computed another way: predict)
    unpruned = report["test_unpruned"]
    assert unpruned["accuracy"] == pytest.approx(metrics["test"]["mean"]["accuracy"])
    assert unpruned["nll"] == pytest.approx(metrics["test"]["mean"]["nll"], rel=1e-4)
    state = torch.load(os.path.join(run, "pruned.pt"), weights_only=True)
    assert (
        sum(v.numel() for k, v in state.items() if k.endswith(("weight", "bias")))
        == (report["params_kept"])
    )

    # an MLP's multiply-accumulates are its weights: parameters less the 410 biases
    assert report["macs_total"] == 784 * 300 + 300 * 100 + 100 * 10
    assert report["params_total"] - report["macs_total"] == 300 + 100 + 10
    assert report["objective"] == "params"

    assert main(["prune", run, "--criterion", "agreement", "--tolerance", "0"]) == 0
    report = read_json(os.path.join(run, "prune.json"))
    assert report["validation"]["changed"] == 0.0

    assert main(["prune", run, "--objective", "macs", "--tag", "macs"]) == 0
    report = read_json(os.path.join(run, "prune-macs.json"))
    assert report["objective"] == "macs" and report["mac_reduction"] >= 1.0
    capsys.readouterr()
    assert main(["prune", run, "--objective", "flops"]) == 2
    assert "--objective" in capsys.readouterr().err

    assert main(["prune", run, "--threshold", "100"]) == 0
    report = read_json(os.path.join(run, "prune.json"))
    assert report["threshold_source"] == "--threshold" and report["compression"] == 1.0
    assert report["test"] == report["test_unpruned"]

    # a tagged pruning sits next to the untagged one and leaves it as it was
    untagged = {f: pathlib.Path(run, f).read_bytes() for f in ("prune.json", "pruned.pt")}
    assert main(["prune", run, "--threshold", "-100", "--tag", "all-dropped"]) == 0
    tagged = read_json(os.path.join(run, "prune-all-dropped.json"))
    assert tagged["compression"] > 1.0
    assert tagged["files"]["state_dict"] == "pruned-all-dropped.pt"
    assert tagged["files"]["program"].startswith("pruned-all-dropped.")
    for name in ("pruned-all-dropped.pt", tagged["files"]["program"]):
        assert os.path.isfile(os.path.join(run, name))
    for f, content in untagged.items():
        assert pathlib.Path(run, f).read_bytes() == content
    capsys.readouterr()
    assert main(["prune", run, "--tag", "../x"]) == 2
    assert "--tag" in capsys.readouterr().err

    assert main(["plot", run]) == 0
    for name in ("curves.png", "posteriors.png", "units_kept.png", "reliability.png"):
        _png_ok(os.path.join(run, name))


def test_magnitude_only_dirmag_trains_and_prunes(data_root, tmp_path, capsys):
    """``--direction-noise off``: the DirMag model without the latent angle (no angle
    site, no angle parameters), stored in the run and rebuilt as such."""
    out = tmp_path / "run"
    assert train(data_root, out, "--epochs", "2", "--direction-noise", "off") == 0
    assert read_json(os.path.join(out, "config.json"))["method_options"] == {
        "direction_noise": False
    }
    _, model, guide, checkpoint = load_run(str(out))
    assert not any("angle" in k for k in checkpoint["state_dict"])
    assert any("magnitude" in k for k in checkpoint["state_dict"])
    assert main(["prune", str(out), "--threshold", "0"]) == 0
    assert main(["evaluate", str(out), "--num-samples", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--direction-noise", "on"]) == 2
    assert "trained with --direction-noise off" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["none", "gaussian-dropout", "rotation_beta"])
def test_other_methods_train_and_evaluate(data_root, tmp_path, method):
    out = tmp_path / "run"
    assert train(data_root, out, "--epochs", "1", "--method", method) == 0
    assert main(["evaluate", str(out), "--num-samples", "2"]) == 0
    metrics = read_json(os.path.join(out, "metrics.json"))
    modes = {"mean"} if method == "none" else {"mean", "sample", "ensemble"}
    assert set(metrics["test"]) == modes
    assert main(["prune", str(out)]) == 2  # nothing to prune
    assert main(["plot", str(out)]) == 0
    _png_ok(os.path.join(out, "curves.png"))


# ----- bad input: one line, exit status 2, nothing overwritten ------------------------
BAD_TRAIN = {
    "model": (["--model", "lenet7"], "--model"),
    "method": (["--method", "magic"], "--method"),
    "dataset": (["--dataset", "cifar"], "--dataset"),
    "epochs": (["--epochs", "0"], "--epochs"),
    "batch": (["--batch-size", "-1"], "--batch-size"),
    "lr": (["--lr", "0"], "--lr"),
    "noise_lr": (["--noise-lr", "-1e-3"], "--noise-lr"),
    "kl_final_weight": (["--kl-final-weight", "0"], "--kl-final-weight"),
    "train_size": (["--train-size", "100000"], "--train-size"),
    "option": (["--alpha", "0.1"], "--alpha"),
    "angle_prior": (["--method", "none", "--angle-prior", "hemisphere"], "--angle-prior"),
    "direction_noise": (["--direction-noise", "maybe"], "--direction-noise"),
    "direction_noise_method": (
        ["--method", "gaussian-dropout", "--direction-noise", "off"],
        "--direction-noise",
    ),
    "strategy": (["--strategy", "no-such-strategy"], "--strategy"),
    "stop_after": (["--stop-after", "0"], "--stop-after"),
    "threads": (["--threads", "0"], "--threads"),
    "noise_lr_method": (["--method", "gaussian-dropout", "--noise-lr", "0.02"], "--noise-lr"),
    "kl_method": (["--method", "none", "--kl-final-weight", "2"], "--kl-final-weight"),
    "init_log_alpha_method": (
        ["--method", "none", "--init-log-alpha", "-3"],
        "--init-log-alpha",
    ),
}
if not torch.cuda.is_available():
    BAD_TRAIN["accelerator"] = (["--accelerator", "gpu"], "--accelerator")


@pytest.mark.parametrize("case", sorted(BAD_TRAIN))
def test_bad_train_options(case, data_root, tmp_path, capsys):
    args, named = BAD_TRAIN[case]
    out = tmp_path / "run"
    status = main(["train", "--data-dir", data_root, *TINY, "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and named in err, err
    assert not out.exists()


def test_existing_run_is_not_overwritten(reference, data_root, capsys):
    before = {n: os.path.getmtime(os.path.join(reference, n)) for n in os.listdir(reference)}
    assert train(data_root, reference, "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and len(err.strip().splitlines()) == 1
    # resuming with another model or a finished run: refused too
    assert main(["train", "--out", reference, "--resume", "--model", "lenet5"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["train", "--out", reference, "--resume", "--direction-noise", "off"]) == 2
    assert "trained without --direction-noise" in capsys.readouterr().err
    assert main(["train", "--out", reference, "--resume"]) == 2
    assert "finished" in capsys.readouterr().err
    after = {n: os.path.getmtime(os.path.join(reference, n)) for n in os.listdir(reference)}
    assert {k: after[k] for k in before} == before


def test_checkpoint_of_another_method_is_refused(reference, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    config = read_json(run / "config.json")
    config["method"] = "dirmag"
    with open(run / "config.json", "w") as f:
        json.dump(config, f)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "method" in err


def test_missing_run(tmp_path, capsys):
    for command in ("evaluate", "prune", "plot"):
        assert main([command, str(tmp_path / "nothing")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "nothing" in err
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_missing_and_corrupt_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train-images-idx3-ubyte" in err and "empty" in err
    root = write_synthetic(tmp_path / "data", n_train=50, n_test=10)
    images = os.path.join(root, "MNIST", "raw", "train-images-idx3-ubyte")
    with open(images, "r+b") as f:
        f.truncate(os.path.getsize(images) - 100)
    assert main(["train", "--data-dir", root, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "truncated" in err and "train-images" in err
    assert not out.exists()


def test_train_without_lightning_says_how_to_install(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lightning", None)
    assert train(data_root, tmp_path / "run", "--epochs", "1") == 2
    assert "pyro-dirmag[train]" in capsys.readouterr().err


def test_package_imports_without_lightning():
    code = (
        "import sys; sys.modules['lightning'] = None\n"
        "import pyro_dirmag.cli, pyro_dirmag.infer, pyro_dirmag.models, pyro_dirmag.plots\n"
        "import pyro_dirmag.run, pyro_dirmag.nn, pyro_dirmag.distributions\n"
        "assert 'pyro_dirmag.lightning' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_python_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "pyro_dirmag", "train", "--epochs", "0", "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "pyro-dirmag: error: --epochs must be a positive integer, got 0"


# ----- pre-training: the first --pretrain-epochs train the deterministic twin ---------
@pytest.fixture(scope="module")
def pretrained_reference(data_root, tmp_path_factory):
    """An uninterrupted 3-epoch run whose first epoch pre-trains."""
    out = tmp_path_factory.mktemp("pre") / "run"
    assert train(data_root, out, "--epochs", "3", "--pretrain-epochs", "1") == 0
    return str(out)


def test_pretraining_is_part_of_the_epoch_budget(pretrained_reference):
    records = rows(pretrained_reference)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["phase"] == "pretrain" and "kl" not in records[0]
    assert all("phase" not in r and "kl" in r for r in records[1:])
    assert read_json(os.path.join(pretrained_reference, "config.json"))["pretrain_epochs"] == 1
    ckpt = torch.load(os.path.join(pretrained_reference, "last.ckpt"), weights_only=True)
    assert ckpt["global_step"] == 2 * STEPS_PER_EPOCH  # two variational epochs
    assert os.path.isfile(os.path.join(pretrained_reference, "pretrained.pt"))


def test_pretraining_starts_from_the_twin(data_root, tmp_path):
    """After pre-training the DirMag layers hold the twin's directions and magnitudes."""
    from pyro_dirmag.models import deterministic_model
    from pyro_dirmag.nn.dirmag import dirmag_layers

    out = tmp_path / "run"
    assert train(data_root, out, "--epochs", "2", "--pretrain-epochs", "1") == 0
    twin = deterministic_model("lenet300")
    twin.load_state_dict(torch.load(out / "pretrained.pt", weights_only=True))
    untrained = deterministic_model("lenet300")
    _, model, _, _ = load_run(str(out))
    layers = [m for _, m in dirmag_layers(model)]
    plain = [m for m in twin if isinstance(m, torch.nn.Linear)]
    fresh = [m for m in untrained if isinstance(m, torch.nn.Linear)]
    for layer, p, f in zip(layers, plain, fresh, strict=True):
        v, w, w0 = layer.v.detach(), p.weight.detach(), f.weight.detach()
        cos = torch.nn.functional.cosine_similarity(v.flatten(), w.flatten(), dim=0)
        cos0 = torch.nn.functional.cosine_similarity(v.flatten(), w0.flatten(), dim=0)
        assert cos > 0.9 > 0.2 > abs(cos0)  # one variational epoch moved it a little


@pytest.mark.slow
def test_resume_after_pretraining_is_bit_exact(data_root, tmp_path, pretrained_reference):
    out = tmp_path / "run"
    assert (
        train(data_root, out, "--epochs", "3", "--pretrain-epochs", "1", "--stop-after", "1") == 0
    )
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    assert main(["train", "--out", str(out), "--resume", "--no-progress-bar"]) == 0
    assert_same_run(str(out), pretrained_reference)
    # interrupted after pre-training, before the first variational checkpoint
    out = tmp_path / "run2"
    assert (
        train(data_root, out, "--epochs", "3", "--pretrain-epochs", "1", "--stop-after", "1") == 0
    )
    os.remove(out / "last.ckpt")
    assert main(["train", "--out", str(out), "--resume", "--no-progress-bar"]) == 0
    assert_same_run(str(out), pretrained_reference)


@pytest.mark.parametrize(
    "args",
    [["--epochs", "3", "--pretrain-epochs", "3"], ["--pretrain-epochs", "-1"]],
)
def test_bad_pretrain_epochs(args, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(data_root, out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pretrain-epochs" in err, err
    assert not out.exists()


def test_pretrain_epochs_needs_a_variational_method(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(data_root, out, "--method", "none", "--pretrain-epochs", "1") == 2
    assert "--pretrain-epochs" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "method, epochs, expected", [("dirmag-reverse", 50, 5), ("dirmag", 9, 0), ("none", 50, 0)]
)
def test_default_pretrain_epochs_is_a_tenth_of_the_run(method, epochs, expected, tmp_path):
    from pyro_dirmag.cli import _parser, _train_config

    args = _parser().parse_args(
        ["train", "--method", method, "--epochs", str(epochs), "--out", str(tmp_path / "r")]
    )
    assert _train_config(args, rank=0)["pretrain_epochs"] == expected


def test_retrain_kept_benchmark(reference, tmp_path, capsys):
    """benchmarks/retrain_kept.py trains and scores the kept and the full architecture."""
    import shutil

    bench = _benchmark("retrain_kept")
    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    assert main(["prune", str(run), "--threshold", "0"]) == 0
    capsys.readouterr()
    bench.main([str(run), "--epochs", "1", "--seeds", "0"])
    out = capsys.readouterr().out
    assert "kept x" in out and "kept mean" in out and "full mean" in out, out


def test_retrain_the_kept_architecture(reference, tmp_path, capsys):
    import shutil

    from pyro_dirmag.run import load_splits

    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    for f in run.glob("prune*.json"):  # other tests may have pruned the reference run
        f.unlink()
    # nothing pruned yet: the command says what to run first, and writes nothing
    assert main(["retrain", str(run), "--epochs", "1"]) == 2
    assert "pyro-dirmag prune" in capsys.readouterr().err
    assert main(["prune", str(run), "--threshold", "0", "--tag", "t0"]) == 0
    for bad in (["--epochs", "0"], ["--alpha", "-1"], ["--num-samples", "0"]):
        assert main(["retrain", str(run), "--tag", "t0", *bad]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and bad[0] in err, err
    assert main(["retrain", str(run), "--tag", "bad/tag"]) == 2
    assert not (run / "retrain-t0.json").exists()
    capsys.readouterr()
    assert main(["retrain", str(run), "--tag", "t0", "--epochs", "2", "--num-samples", "3"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    result = read_json(run / "retrain-t0.json")
    pruning = read_json(run / "prune-t0.json")
    assert result["pruning"] == "prune-t0.json" and result["epochs"] == 2
    assert result["compression"] == pruning["compression"]
    assert result["test_pruned"] == pruning["test"]
    assert set(result["test"]) == {"mean", "sample", "ensemble"}
    # the exported program is the retrained mean network the metrics were computed from
    program = torch.export.load(str(run / result["files"]["program"])).module()
    xt, yt = load_splits(read_json(run / "config.json"))["test"]
    accuracy = (program(xt).argmax(-1) == yt).float().mean().item()
    assert accuracy == pytest.approx(result["test"]["mean"]["accuracy"], abs=1e-6)
    state = torch.load(run / result["files"]["state_dict"], weights_only=True)
    pruned = torch.load(run / "pruned-t0.pt", weights_only=True)
    assert {k for k in state if k.endswith(".v")} == {
        k[: -len("weight")] + "v" for k in pruned if k.endswith(".weight")
    }


def test_prune_at_per_layer_thresholds(reference, tmp_path, capsys):
    """``--threshold`` takes a bare value for every layer and ``LAYER=VALUE`` overrides;
    each layer keeps exactly its units at or below its own threshold."""
    import shutil

    from pyro_dirmag._sites import site_name
    from pyro_dirmag.nn.dirmag import dirmag_layers

    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    _, model, guide, _ = load_run(str(run))
    layers = dirmag_layers(model.net)
    log_alpha = guide.log_alpha()
    first, (last, last_layer) = layers[0][0], layers[-1]
    median = log_alpha[site_name(last_layer, "magnitude")].median().item()

    assert main(["prune", str(run), "--threshold", "100", f"{last}={median}", "--tag", "p"]) == 0
    report = read_json(run / "prune-p.json")
    assert report["threshold_source"] == "--threshold"
    assert report["threshold"] == {name: (median if name == last else 100.0) for name, _ in layers}
    by_name = {r["name"]: r for r in report["layers"]}
    for name, layer in layers:
        la = log_alpha[site_name(layer, "magnitude")]
        expected = int((la <= (median if name == last else 100.0)).sum())
        assert by_name[name]["units_kept"] == expected, name
    assert by_name[last]["units_kept"] < by_name[last]["units_total"]

    # every layer named, no default: the same as a dict over all of them
    every = [f"{name}=100" for name, _ in layers]
    assert main(["prune", str(run), "--threshold", *every, "--tag", "all"]) == 0
    assert read_json(run / "prune-all.json")["compression"] == 1.0

    names = [name for name, _ in layers]
    bad = {
        "unknown layer": ["nolayer=1"],
        "missing layers": [f"{first}=1"] if len(names) > 1 else ["x=1"],
        "two defaults": ["1", "2"],
        "not a number": [f"{first}=abc"],
        "nan": ["nan"],
        "twice": ["0", f"{first}=1", f"{first}=2"],
    }
    for case, words in bad.items():
        capsys.readouterr()
        assert main(["prune", str(run), "--threshold", *words, "--tag", "bad"]) == 2, case
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--threshold" in err, (case, err)
        assert not (run / "prune-bad.json").exists(), case


def _benchmark(name):
    import importlib.util

    path = pathlib.Path(__file__).parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_filter_budget_keeps_at_most_the_budget(reference, tmp_path, capsys):
    """benchmarks/filter_budget.py: the highest shared threshold keeping at most the
    budget (ties never push it over), fed to ``prune --threshold`` as printed."""
    import shutil

    from pyro_dirmag.nn.dirmag import dirmag_layers

    bench = _benchmark("filter_budget")
    values = [torch.tensor([-5.0, -4.0]), torch.tensor([-4.0, -3.0])]
    assert bench.budget_threshold(values, 3) == -4.0
    assert bench.budget_threshold(values, 2) == -5.0  # -4.0 twice would make 3
    assert bench.budget_threshold(values, 0) == float("-inf")
    assert bench.budget_threshold(values, 9) == -3.0

    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    for f in run.glob("prune*.json"):  # other tests may have pruned the reference run
        f.unlink()
    with pytest.raises(SystemExit, match="pyro-dirmag prune"):
        bench.threshold_words(str(run), ["0"], 3)
    assert main(["prune", str(run), "--threshold", "0"]) == 0
    _, model, _, _ = load_run(str(run))
    names = [name for name, _ in dirmag_layers(model.net)]
    first = names[0]
    total = read_json(run / "prune.json")["layers"][0]["units_total"]
    words = bench.threshold_words(str(run), [first], total // 3)
    assert words[1:] == [f"{n}=0.0" for n in names[1:]]
    assert main(["prune", str(run), "--threshold", *words, "--tag", "budget"]) == 0
    kept = read_json(run / "prune-budget.json")["layers"][0]["units_kept"]
    assert 0 < kept <= total // 3
    with pytest.raises(SystemExit, match="no DirMag layers"):
        bench.threshold_words(str(run), ["nolayer"], 3)


@pytest.mark.parametrize("flag", ["--num-samples", "--batch-size"])
def test_evaluate_refuses_non_positive_counts(reference, flag, capsys):
    before = sorted(os.listdir(reference))
    assert main(["evaluate", reference, flag, "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} must be a positive integer" in err, err
    assert sorted(os.listdir(reference)) == before
