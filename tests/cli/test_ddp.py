"""Multi-process training: 2 CPU processes (gloo) through Lightning's DDP."""

import json
import os
import socket
import subprocess
import sys

import pyro
import pytest
import torch

from pyro_dirmag.lightning import EpochBatches

from . import ddp_gradient_script as script

HERE = os.path.dirname(os.path.abspath(__file__))


def test_epoch_batches_share_each_global_batch_equally():
    single = list(EpochBatches(23, 6, seed=3, rank=0, world_size=1))
    per_rank = [list(EpochBatches(23, 3, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == len(EpochBatches(23, 3, 3, 0, 2)) == 4
    for k, (a, b) in enumerate(zip(*per_rank, strict=True)):
        # process batches of equal size whose union (in order) is the single-process batch
        assert len(a) == len(b)
        assert torch.equal(torch.cat([a, b]), single[k][: len(a) + len(b)])
    # a final remainder smaller than the number of processes is left out
    assert sum(len(b) for b in per_rank[0] + per_rank[1]) == 22
    sampler = EpochBatches(23, 6, seed=3)
    sampler.set_epoch(1)
    assert not torch.equal(next(iter(sampler)), single[0])


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(cmd, cwd):
    """Runs a 2-process (gloo) command on a fresh loopback port. A run killed by a signal
    before training (seen once in a full suite: SIGABRT at process-group start-up) is
    retried once on a new port; any other failure fails with the command's stderr."""
    for _ in range(2):
        env = dict(_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        if result.returncode >= 0:
            break
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_two_process_gradient_equals_union_batch_gradient(tmp_path):
    _run_two_processes(
        [sys.executable, os.path.join(HERE, "ddp_gradient_script.py"), str(tmp_path)], tmp_path
    )
    grads = [torch.load(tmp_path / f"grad_{r}.pt", weights_only=True) for r in range(2)]
    for name in grads[0]:  # DDP hands both processes the averaged gradient
        assert torch.equal(grads[0][name], grads[1][name])

    # One process, the union of the two process batches, the same noise draw.
    module = script.module()
    x, y = script.data()
    union = next(iter(EpochBatches(script.NUM_DATA, 2 * script.BATCH_PER_PROCESS, seed=0)))
    pyro.set_rng_seed(script.NOISE_SEED)
    loss, _ = module.loss_and_stats(x[union], y[union], beta=1.0)
    loss.backward()
    for name, p in module.named_parameters():
        torch.testing.assert_close(grads[0][name], p.grad, rtol=1e-5, atol=1e-6)

    # Counting the KL once per process matters: with the KL counted once overall (in one
    # process only) the averaged gradient would differ by half the KL's gradient.
    module.zero_grad()
    pyro.set_rng_seed(script.NOISE_SEED)
    with_half_kl, _ = module.loss_and_stats(x[union], y[union], beta=0.5)
    with_half_kl.backward()
    assert not torch.allclose(
        grads[0]["guide.loc_unconstrained"], module.guide.loc_unconstrained.grad
    )


@pytest.mark.slow
def test_two_process_run_trains(data_root, tmp_path):
    out = tmp_path / "run"
    args = ["--data-dir", data_root, "--train-size", "220", "--val-size", "20"]
    args += ["--batch-size", "25", "--epochs", "3", "--out", str(out), "--no-progress-bar"]
    args += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    _run_two_processes([sys.executable, "-m", "pyro_dirmag", "train", *args], tmp_path)
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["step"] for r in records] == [4, 8, 12]  # 200 examples / (2 x 25) per step
    assert records[-1]["acc"] > 0.9 and records[-1]["nll"] < records[0]["nll"]
    checkpoint = torch.load(out / "last.ckpt", weights_only=True)
    assert len(checkpoint["rng_states"]) == 2
    assert not torch.equal(
        checkpoint["rng_states"][0]["torch"], checkpoint["rng_states"][1]["torch"]
    )
