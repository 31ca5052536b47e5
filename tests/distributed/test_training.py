"""negkit's training loop across processes: two gloo processes (each encoding half of every global batch, global
batch norm, DistributedDataParallel, global negatives) end with the parameters and metrics of one process on the
whole batch; ``torchrun --nproc_per_node 2 -m negkit run`` trains and writes one run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from negkit.distributed import GlobalBatchNorm, init_from_env, local_rows, on_main, sync_batch_norm
from negkit.tasks import get_task
from negkit.train.config import build_config
from negkit.train.loop import fit

WORLD = 2
STRATEGIES = ("simclr", "queue")  # in-batch negatives, and a strategy with state (its queue of past batches)
REPO = Path(__file__).resolve().parents[2]


def tiny_config(**train):
    return build_config(
        {
            "dataset": "digits",
            "dataset_options": {"test_fraction": 0.8},
            "strategies": list(STRATEGIES),
            "train": {"epochs": 2, "batch_size": 32, "hidden_dim": 32, "feature_dim": 16, "projection_dim": 8, **train},
            "views": {"shift": 1},
            "eval": {"knn_k": 5},
        }
    )


class FrozenBiasTask(get_task("contrastive")):
    """The contrastive task with the bias of the Linear layer in front of the MLP's BatchNorm held at 0.

    That bias has a zero gradient in exact arithmetic (batch norm subtracts it again); AdamW normalises its
    round-off (~1e-9, different for every order of float sums, one process or two) into learning-rate-sized steps,
    so it random-walks differently in any two runs and moves the running mean the evaluation uses. Everything else
    is the production task."""

    def build(self, entry):
        trainee = super().build(entry)
        bias = trainee.model.backbone[1].bias
        with torch.no_grad():
            bias.zero_()
        bias.requires_grad_(False)
        trainee.parameters = [p for p in trainee.parameters if p is not bias]
        return trainee


def train_all(out: Path) -> dict:
    task = FrozenBiasTask(tiny_config())
    task.load()
    results = {}
    for entry in STRATEGIES:
        trainee, history = fit(task, entry, out / f"{entry}.pt")
        results[entry] = {
            "state": trainee.model.state_dict(),
            "strategy": trainee.strategy.state_dict(),
            "history": history,
        }
    return results


def coefficients(shape):
    """A fixed, uneven weighting of the global batch's outputs (a loss that is not symmetric in the rows)."""
    return torch.arange(torch.Size(shape).numel(), dtype=torch.float64).view(shape).cos()


class KilledError(Exception):
    pass


def kill_after_first_epoch(record):
    if record["epoch"] == 1:
        raise KilledError


def fail():
    raise ValueError("only rank 0 fails")


def rank_main(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    checks = {}
    # batch norm of the global batch: value, gradients and running statistics of one BatchNorm on all rows
    generator = torch.Generator().manual_seed(3)
    for shape in ((8, 3), (4, 3, 5, 5)):
        x = torch.randn(*shape, generator=generator, dtype=torch.float64)
        plain = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3).double()
        with torch.no_grad():
            plain.weight.uniform_(0.5, 1.5, generator=generator)
            plain.bias.uniform_(-1, 1, generator=generator)
        norm = sync_batch_norm(torch.nn.Sequential(plain))[0]
        local = local_rows(x).clone().requires_grad_()
        y = norm(local)
        (y * local_rows(coefficients(shape))).sum().backward()
        checks[shape] = {
            "type": type(norm).__name__,
            "shared": norm.weight is plain.weight,
            "y": y.detach(),
            "grad_x": local.grad,
            "grad_w": norm.weight.grad.clone(),
            "running": (norm.running_mean.clone(), norm.running_var.clone()),
        }
    checks["main"] = on_main(lambda: dist.get_rank() + 10)
    try:
        on_main(fail)
    except ValueError as error:
        checks["error"] = str(error)
    results = train_all(Path(f"{out}.{rank}.run"))
    # killed after epoch 1, resumed: both ranks restart from the checkpoint rank 0 wrote in the shared folder
    task = FrozenBiasTask(tiny_config())
    task.load()
    shared = Path(f"{out}.resumed.pt")
    with pytest.raises(KilledError):
        fit(task, "simclr", shared, on_epoch_end=kill_after_first_epoch)
    trained = []
    trainee, history = fit(task, "simclr", shared, on_epoch_end=lambda record: trained.append(record["epoch"]))
    results["resumed"] = {"state": trainee.model.state_dict(), "history": history, "trained": trained}
    torch.save({"checks": checks, "results": results}, f"{out}.{rank}")
    dist.barrier()  # both ranks finish before gloo tears down: an early exit can abort the peer (SIGABRT)
    dist.destroy_process_group()


def test_two_processes_train_like_one_process_on_the_combined_batch(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(rank_main, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    saved = [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(WORLD)]

    # the pieces: global batch norm, on_main
    generator = torch.Generator().manual_seed(3)
    for shape in ((8, 3), (4, 3, 5, 5)):
        x = torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()
        plain = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3).double()
        with torch.no_grad():
            plain.weight.uniform_(0.5, 1.5, generator=generator)
            plain.bias.uniform_(-1, 1, generator=generator)
        y = plain(x)
        (y * coefficients(shape)).sum().backward()
        got = [saved[rank]["checks"][shape] for rank in range(WORLD)]
        assert all(g["type"] == "GlobalBatchNorm" and g["shared"] for g in got)
        torch.testing.assert_close(torch.cat([g["y"] for g in got]), y.detach())
        # each rank's loss here is its own rows' sum: the input gradient is its slice, the weight's is summed
        torch.testing.assert_close(torch.cat([g["grad_x"] for g in got]), x.grad)
        torch.testing.assert_close(sum(g["grad_w"] for g in got), plain.weight.grad)
        for g in got:
            torch.testing.assert_close(g["running"], (plain.running_mean, plain.running_var))
    assert [saved[rank]["checks"]["main"] for rank in range(WORLD)] == [10, 10]
    assert [saved[rank]["checks"]["error"] for rank in range(WORLD)] == ["only rank 0 fails"] * 2

    # the training: every parameter, buffer and strategy state, every epoch's loss and kNN accuracy
    single = train_all(tmp_path / "single")
    for entry in STRATEGIES:
        expected = single[entry]
        for rank in range(WORLD):
            got = saved[rank]["results"][entry]
            for name, value in expected["state"].items():
                torch.testing.assert_close(got["state"][name], value, rtol=1e-4, atol=1e-6, msg=f"{entry} {name}")
            for name, value in expected["strategy"].items():
                torch.testing.assert_close(got["strategy"][name], value, rtol=1e-4, atol=1e-6, msg=f"{entry} {name}")
            for mine, theirs in zip(got["history"], expected["history"], strict=True):
                assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
                assert mine["knn_acc"] == pytest.approx(theirs["knn_acc"], abs=1e-3)  # at most one test sample
                assert mine["false_negative_rate"] == pytest.approx(theirs["false_negative_rate"], abs=1e-9)
    for rank in range(WORLD):
        resumed = saved[rank]["results"]["resumed"]
        assert resumed["trained"] == [2]  # the second call trained epoch 2 only
        for name, value in single["simclr"]["state"].items():
            torch.testing.assert_close(resumed["state"][name], value, rtol=1e-4, atol=1e-6, msg=f"resumed {name}")
        assert [r["loss"] for r in resumed["history"]] == pytest.approx(
            [r["loss"] for r in single["simclr"]["history"]], rel=1e-5
        )
    # only rank 0 wrote checkpoints
    assert sorted(p.name for p in Path(f"{out}.0.run").iterdir()) == [f"{entry}.pt" for entry in sorted(STRATEGIES)]
    assert not Path(f"{out}.1.run").exists()


def test_a_task_that_cannot_train_across_processes_says_so(tmp_path, monkeypatch):
    task = FrozenBiasTask(tiny_config())
    monkeypatch.setattr(type(task), "trains_across_processes", False)
    monkeypatch.setattr("negkit.train.loop.world", lambda: (0, 2))
    with pytest.raises(ValueError, match="does not train across processes"):
        fit(task, "simclr", tmp_path / "x.pt")


def test_global_batch_norm_alone_is_batch_norm():
    norm = sync_batch_norm(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)))
    assert isinstance(norm[1], GlobalBatchNorm)
    x = torch.randn(6, 4)
    reference = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    reference.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), reference(x))
    torch.testing.assert_close(norm.state_dict(), reference.state_dict())
    with pytest.raises(ValueError, match="at least 2-D"):
        norm[1](torch.randn(3))


def test_torchrun_two_processes_run_the_command(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        'dataset = "digits"\ndataset_options = { test_fraction = 0.8 }\nstrategies = ["simclr"]\n'
        "[train]\nepochs = 1\nbatch_size = 32\nhidden_dim = 32\nfeature_dim = 16\nprojection_dim = 8\n"
        "[eval]\nknn_k = 5\n"
    )
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [*command, "-m", "negkit", "run", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("negkit run →") == 1  # rank 1 is quiet
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["strategies"]) == ["simclr"] and (out / "report.md").exists()
    assert [row["epoch"] for row in json.loads((out / "results" / "simclr.json").read_text())["history"]] == [1]


def test_one_process_helpers_and_clear_errors(monkeypatch):
    x = torch.arange(6)
    assert local_rows(x) is x and on_main(lambda: 7) == 7
    monkeypatch.setattr("negkit.distributed.world", lambda: (1, 2))
    assert local_rows(x).tolist() == [3, 4, 5]
    with pytest.raises(ValueError, match="a global batch of 5 rows does not split over 2 processes"):
        local_rows(torch.arange(5))
    monkeypatch.undo()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        init_from_env()
