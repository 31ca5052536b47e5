"""A task registered from this test module runs through the one training loop: config validation, strategies
of its own, checkpoints and resume, the summary table and the report, all without touching negkit's files."""

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from pydantic import Field
from torch import nn

from negkit.io import read_json
from negkit.losses import info_nce
from negkit.strategies import create_strategy, list_strategies, parse_strategy_entry, register_strategy
from negkit.tasks import Column, StepResult, Strict, Task, Trainee, get_task, list_tasks, register_task
from negkit.train.config import ConfigError, build_config
from negkit.train.report import write_report
from negkit.train.runner import prepare_run_dir, run_experiment


@register_strategy("toy-nce", "InfoNCE between two noisy copies", uses_labels=False, tasks=("toy",))
class ToyNCE:
    def __init__(self, temperature: float = 0.2, noise: float = 0.1) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.noise = temperature, noise


class ToySettings(Strict):
    samples: int = Field(96, ge=8)
    dim: int = Field(6, ge=2)


@register_task
class ToyTask(Task):
    """Gaussian clusters; a linear encoder; accuracy of the nearest class mean on a held-out half."""

    name = "toy"
    description = "synthetic clusters through the one loop"
    sections: ClassVar[dict[str, type[Strict]]] = {"toy": ToySettings}
    default_dataset = "clusters"
    default_strategies = ("toy-nce",)
    step_fields = ("mean_norm",)
    columns = (Column("accuracy", "acc"), Column("train_seconds", "train s", "{:.1f}"))

    @classmethod
    def datasets(cls):
        return ["clusters"]

    @classmethod
    def dataset_loader(cls, name):
        def clusters(*, seed: int = 0, spread: float = 1.0):
            raise AssertionError("never called: the task makes its data in load()")

        return clusters

    def load(self):
        settings = self.config.toy
        generator = torch.Generator().manual_seed(self.config.seed)
        self.labels = torch.arange(settings.samples) % 3
        centres = torch.randn(3, settings.dim, generator=generator) * 3
        self.x = centres[self.labels] + torch.randn(settings.samples, settings.dim, generator=generator)

    @property
    def dataset_name(self):
        return "clusters"

    @property
    def dataset_description(self):
        return f"{len(self.x)} points in 3 clusters"

    def accuracy(self, model):
        with torch.no_grad():
            z = model(self.x)
        half = len(z) // 2
        means = torch.stack([z[:half][self.labels[:half] == c].mean(0) for c in range(3)])
        predicted = torch.cdist(z[half:], means).argmin(1)
        return float((predicted == self.labels[half:]).double().mean())

    def baselines(self):
        return {"identity": {"accuracy": self.accuracy(nn.Identity())}}

    def build(self, entry):
        strategy = create_strategy(parse_strategy_entry(entry)[0], **self.config.params_for(entry))
        model = nn.Linear(self.config.toy.dim, 4)
        return Trainee(model, strategy, list(model.parameters()), state={"seen": torch.zeros(1)})

    def steps_per_epoch(self, trainee):
        return len(self.x) // self.config.train.batch_size

    def batches(self, trainee, generator):
        order = torch.randperm(len(self.x), generator=generator)
        size = self.config.train.batch_size
        return [order[i * size : (i + 1) * size] for i in range(self.steps_per_epoch(trainee))]

    def step(self, trainee, batch, generator):
        if len(batch) < 2:
            return None
        x, noise = self.x[batch], trainee.strategy.noise
        z1 = trainee.model(x + noise * torch.randn(x.shape, generator=generator))
        z2 = trainee.model(x + noise * torch.randn(x.shape, generator=generator))
        trainee.state["seen"] += len(batch)
        return StepResult(
            info_nce(z1, z2, temperature=trainee.strategy.temperature), {"mean_norm": float(z1.detach().norm())}
        )

    def end_epoch(self, trainee, epoch, last):
        return {"accuracy": self.accuracy(trainee.model), "seen": float(trainee.state["seen"])}

    def final_metrics(self, trainee, history, run_dir: Path):
        return {"accuracy": history[-1]["accuracy"], "train_seconds": sum(r["seconds"] for r in history)}

    @classmethod
    def report(cls, run_dir, metrics, history):
        return "A toy task.", ["## Toy section\n\nfrom the task"]


def toy_config(**train):
    return build_config(
        {
            "task": "toy",
            "strategies": ["toy-nce", "toy-nce:temperature=0.5"],
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "warmup_epochs": 1, **train},
            "toy": {"samples": 96},
        }
    )


def test_the_task_and_its_strategies_are_registered_and_validated():
    assert "toy" in list_tasks() and get_task("toy") is ToyTask
    assert list_strategies(task="toy") == ["toy-nce"] and "toy-nce" not in list_strategies(task="contrastive")
    config = toy_config()
    assert config.toy.samples == 96 and config.dataset == "clusters"
    with pytest.raises(ConfigError, match="strategies: 'toy-nce:temperature=0': temperature must be > 0"):
        build_config({"task": "toy", "strategies": ["toy-nce:temperature=0"]})
    with pytest.raises(ConfigError, match="unknown strategy 'simclr' of the toy task"):
        build_config({"task": "toy", "strategies": ["simclr"]})
    with pytest.raises(ConfigError, match=r"toy\.samples"):
        build_config({"task": "toy", "toy": {"samples": 1}})
    with pytest.raises(ConfigError, match=r"dataset_options\.spread: expected float"):
        build_config({"task": "toy", "dataset_options": {"spread": "wide"}})
    with pytest.raises(ConfigError, match="a section of the toy task"):
        build_config({"task": "contrastive", "toy": {"samples": 10}})


def test_the_one_loop_trains_checkpoints_resumes_and_reports(tmp_path):
    paths, config = prepare_run_dir(tmp_path / "whole", toy_config())
    whole = run_experiment(paths, config)
    assert whole["task"] == "toy" and set(whole["strategies"]) == {"toy-nce", "toy-nce:temperature=0.5"}
    result = read_json(paths.result("toy-nce"))
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3]
    assert result["history"][-1]["seen"] == 3 * 96  # task state is checkpointed and restored
    assert all(row["skipped_batches"] == 0 and row["mean_norm"] > 0 for row in result["history"])
    assert whole["strategies"]["toy-nce"]["params"] == {"temperature": 0.2, "noise": 0.1}
    report = write_report(paths.root).read_text()
    assert "## Toy section" in report and "| identity |" in report and "A toy task." in report

    class KilledError(Exception):
        pass

    def kill(record):
        if record["strategy"] == "toy-nce:temperature=0.5" and record["epoch"] == 2:
            raise KilledError

    paths, config = prepare_run_dir(tmp_path / "killed", toy_config())
    with pytest.raises(KilledError):
        run_experiment(paths, config, on_epoch_end=kill)
    paths, config = prepare_run_dir(tmp_path / "killed", None, resume=True)
    resumed = run_experiment(paths, config)
    for name, values in whole["strategies"].items():
        assert resumed["strategies"][name]["accuracy"] == values["accuracy"], name
    assert read_json(paths.result("toy-nce:temperature=0.5"))["history"][-1]["seen"] == 3 * 96


def test_gradient_clipping_changes_the_update(tmp_path):
    free = run_experiment(*prepare_run_dir(tmp_path / "free", toy_config()))
    clipped = run_experiment(*prepare_run_dir(tmp_path / "clipped", toy_config(grad_clip=1e-3)))
    assert clipped["strategies"]["toy-nce"]["accuracy"] != free["strategies"]["toy-nce"]["accuracy"] or (
        read_json(tmp_path / "clipped" / "results" / "toy-nce.json")["history"][-1]["loss"]
        != read_json(tmp_path / "free" / "results" / "toy-nce.json")["history"][-1]["loss"]
    )
