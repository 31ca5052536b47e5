"""The experiment runner behind ``negkit run``: train every strategy of a config on one dataset, evaluate
the learned embeddings, and keep everything needed to resume a killed run and to rebuild the report.

Run folder layout::

    DIR/config.json              the resolved configuration (what --resume continues)
    DIR/checkpoints/NAME.pt      per strategy, written atomically after every epoch
    DIR/results/NAME.json        per strategy, final metrics (a finished strategy is never retrained)
    DIR/embeddings/NAME.pt       test-set features of each strategy (for plots)
    DIR/history.csv              one row per (strategy, epoch)
    DIR/metrics.json             everything, once the run is finished
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from negkit.data import DatasetSplits, IndexedDataset, ViewConfig, iterate_batches, load_dataset, random_views
from negkit.io import read_json, save_torch, write_json, write_text
from negkit.metrics import (
    alignment,
    knn_accuracy,
    linear_probe_accuracy,
    retrieval_metrics,
    tolerance,
    uniformity,
)
from negkit.negatives import negative_report
from negkit.strategies import StrategyLoss, create_strategy, get_strategy, parse_strategy_entry
from negkit.train.checkpoint import load_training_state, save_training_state
from negkit.train.config import RunConfig, build_config
from negkit.train.encoders import ContrastiveModel, build_model
from negkit.train.recommend import run_recommendation
from negkit.train.retrieval import run_retrieval
from negkit.train.schedule import warmup_cosine

HISTORY_FIELDS = ("strategy", "epoch", "loss", "lr", "false_negative_rate", "knn_acc", "seconds")
EpochCallback = Callable[[dict[str, Any]], None]


class RunDirError(ValueError):
    """The output folder holds a run that this call must not overwrite."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    def checkpoint(self, strategy: str) -> Path:
        return self.root / "checkpoints" / f"{strategy}.pt"

    def result(self, strategy: str) -> Path:
        return self.root / "results" / f"{strategy}.json"

    def embedding(self, strategy: str) -> Path:
        return self.root / "embeddings" / f"{strategy}.pt"


def prepare_run_dir(
    out: str | Path, config: RunConfig | None, *, force: bool = False, resume: bool = False
) -> tuple[RunPaths, RunConfig]:
    """Create (or, with ``resume``, reopen) a run folder; refuse to overwrite a run unless ``force``."""
    paths = RunPaths(Path(out))
    if resume:
        if not paths.config.exists():
            raise RunDirError(f"nothing to resume in {paths.root}: {paths.config.name} is missing")
        return paths, build_config(read_json(paths.config))
    if config is None:
        raise ValueError("config is required unless resume=True")
    if paths.root.exists() and any(paths.root.iterdir()):
        if not force:
            state = "a finished run" if paths.metrics.exists() else "an unfinished run"
            hint = "" if paths.metrics.exists() else f"; continue it with `negkit run --resume {paths.root}`"
            raise RunDirError(f"{paths.root} holds {state}{hint}, or pass --force to overwrite it")
        shutil.rmtree(paths.root)
    paths.root.mkdir(parents=True, exist_ok=True)
    write_json(paths.config, config.model_dump(mode="json"))
    return paths, config


@torch.no_grad()
def embed(model: ContrastiveModel, x: Tensor, batch_size: int = 1024, *, projection: bool = False) -> Tensor:
    """Backbone features ``[N, feature_dim]`` (or head outputs with ``projection``) in eval mode."""
    was_training = model.training
    model.eval()
    encode = model if projection else model.features
    features = torch.cat([encode(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return features


PROBE_SIZE = 512


def probe_views(data: DatasetSplits, views: ViewConfig, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A fixed probe batch (the first ``PROBE_SIZE`` training samples) and two seeded views of it."""
    x, y = data.train_x[:PROBE_SIZE], data.clean_train_y[:PROBE_SIZE]
    generator = torch.Generator().manual_seed(seed)
    return random_views(x, views, generator), random_views(x, views, generator), y, torch.arange(len(x))


def probe_negatives(
    model: ContrastiveModel, strategy: StrategyLoss, data: DatasetSplits, views: ViewConfig, batch_size: int, seed: int
) -> dict[str, Any]:
    """The negative report of a strategy at the end of training: its negative distribution applied to the probe
    anchors against the projections of the whole training set."""
    view_a, view_b, labels, ids = probe_views(data, views, seed)
    anchors, positives = embed(model, view_a, projection=True), embed(model, view_b, projection=True)
    pool = embed(model, data.train_x, projection=True)
    sampler = strategy.negative_sampler(batch_size)
    negatives = sampler.sample(
        anchors,
        pool,
        anchor_labels=labels,
        pool_labels=data.clean_train_y,
        anchor_ids=ids,
        pool_ids=torch.arange(len(pool)),
        positives=positives,
        generator=torch.Generator().manual_seed(seed),
    )
    report = negative_report(
        anchors,
        pool,
        negatives,
        anchor_labels=labels,
        pool_labels=data.clean_train_y,
        positives=positives,
        anchor_ids=ids,
        pool_ids=torch.arange(len(pool)),
    )
    return {"sampler": repr(sampler), **report.as_dict()}


def evaluate_embedding(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    config: RunConfig,
    *,
    positive_pairs: tuple[Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """Every metric of the report for one embedding (test set against the train set)."""
    settings = config.eval
    metrics = {
        "knn_acc": knn_accuracy(
            train_features,
            train_labels,
            test_features,
            test_labels,
            k=settings.knn_k,
            temperature=settings.knn_temperature,
        ),
        "linear_acc": linear_probe_accuracy(
            train_features, train_labels, test_features, test_labels, C=settings.probe_c, seed=config.seed
        ),
    }
    retrieval = retrieval_metrics(
        test_features, test_labels, train_features, train_labels, ks=tuple(settings.recall_ks)
    )
    metrics.update(retrieval)
    if positive_pairs is not None:
        metrics["alignment"] = alignment(*positive_pairs)
    metrics["uniformity"] = uniformity(test_features)
    metrics["tolerance"] = tolerance(test_features, test_labels)
    return metrics


def raw_baseline(data: DatasetSplits, config: RunConfig) -> dict[str, float]:
    """The same metrics on flattened raw inputs: what a learned embedding has to beat."""
    train, test = data.train_x.flatten(1), data.test_x.flatten(1)
    return evaluate_embedding(train, data.clean_train_y, test, data.test_y, config)


def train_strategy(
    name: str,
    config: RunConfig,
    data: DatasetSplits,
    paths: RunPaths,
    *,
    on_epoch_end: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train one strategy (resuming from its checkpoint if there is one) and return its final metrics."""
    settings = config.train
    torch.manual_seed(config.seed)  # every strategy starts from the same initial weights
    model = build_model(
        settings.encoder,
        data.input_shape,
        feature_dim=settings.feature_dim,
        hidden_dim=settings.hidden_dim,
        projection_dim=settings.projection_dim,
    )
    strategy = create_strategy(parse_strategy_entry(name)[0], **config.params_for(name))
    strategy.bind(len(data.train_x), settings.projection_dim)
    optimizer = torch.optim.AdamW(
        list(model.parameters()) + list(strategy.parameters()), lr=settings.lr, weight_decay=settings.weight_decay
    )
    dataset = IndexedDataset(data.train_x, data.train_y)
    batch_size = min(settings.batch_size, len(dataset))
    steps_per_epoch = len(dataset) // batch_size
    scheduler = warmup_cosine(optimizer, settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    views = ViewConfig(**config.views.model_dump())
    strategy.generator = generator
    stateful = {"model": model, "strategy": strategy, "optimizer": optimizer, "scheduler": scheduler}
    history, start_epoch = load_training_state(paths.checkpoint(name), generator=generator, **stateful)

    for epoch in range(start_epoch, settings.epochs):
        model.train()
        started = time.perf_counter()
        if strategy.needs_refresh:
            strategy.refresh(embed(model, data.train_x, projection=True), data.train_y)
        loss_sum, fnr_sum, steps = 0.0, 0.0, 0
        lr = optimizer.param_groups[0]["lr"]
        for x, y, index in iterate_batches(dataset, batch_size, generator):
            both = torch.cat([random_views(x, views, generator), random_views(x, views, generator)])
            z1, z2 = model(both).chunk(2)
            loss = strategy(z1, z2, y, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item()
            fnr_sum += strategy.false_negative_rate(y)
            steps += 1
        seconds = time.perf_counter() - started
        knn = knn_accuracy(
            embed(model, data.train_x),
            data.clean_train_y,
            embed(model, data.test_x),
            data.test_y,
            k=config.eval.knn_k,
            temperature=config.eval.knn_temperature,
        )
        record = {
            "strategy": name,
            "epoch": epoch + 1,
            "loss": loss_sum / steps,
            "lr": lr,
            "false_negative_rate": fnr_sum / steps,
            "knn_acc": knn,
            "seconds": seconds,
            **strategy.epoch_metrics(),
        }
        if type(strategy).diagnostics is not StrategyLoss.diagnostics:  # only strategies that measure some
            probe_a, probe_b, probe_labels, _ = probe_views(data, views, config.seed + 7)
            with torch.no_grad():
                record["diagnostics"] = strategy.diagnostics(
                    embed(model, probe_a, projection=True), embed(model, probe_b, projection=True), probe_labels
                )
        history.append(record)
        save_training_state(paths.checkpoint(name), generator=generator, epoch=epoch + 1, history=history, **stateful)
        if on_epoch_end is not None:
            on_epoch_end(record)

    train_features, test_features = embed(model, data.train_x), embed(model, data.test_x)
    pair_generator = torch.Generator().manual_seed(config.seed + 1)
    view_a = embed(model, random_views(data.test_x, views, pair_generator))
    view_b = embed(model, random_views(data.test_x, views, pair_generator))
    metrics: dict[str, Any] = evaluate_embedding(
        train_features, data.clean_train_y, test_features, data.test_y, config, positive_pairs=(view_a, view_b)
    )
    metrics["false_negative_rate"] = sum(r["false_negative_rate"] for r in history) / len(history)
    metrics["negatives"] = probe_negatives(model, strategy, data, views, batch_size, config.seed + 11)
    metrics["train_seconds"] = sum(r["seconds"] for r in history)
    metrics["final_loss"] = history[-1]["loss"]
    metrics.update({key: history[-1][key] for key in strategy.epoch_metrics()})
    spec = get_strategy(parse_strategy_entry(name)[0])
    metrics["strategy"] = spec.name
    metrics["description"] = spec.description
    metrics["uses_labels"] = bool(getattr(strategy, "uses_labels", spec.uses_labels))  # variants may add labels
    metrics["params"] = {**spec.defaults(), **config.params_for(name)}
    save_torch(paths.embedding(name), {"features": test_features, "labels": data.test_y})
    write_json(paths.result(name), {"metrics": metrics, "history": history})
    return metrics


def write_history(paths: RunPaths, rows: list[dict[str, Any]]) -> None:
    """One row per (strategy, epoch): the common fields, then any scalar a strategy logged (e.g. ANS's K)."""
    extra = sorted({k for row in rows for k, v in row.items() if k not in HISTORY_FIELDS and isinstance(v, float)})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*HISTORY_FIELDS, *extra], lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows({k: row[k] for k in (*HISTORY_FIELDS, *extra) if k in row} for row in rows)
    write_text(paths.history, buffer.getvalue())


def run_strategies(
    paths: RunPaths,
    config: RunConfig,
    train_one: Callable[[str], Any],
    on_strategy_start: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Train every strategy of ``config`` that has no saved result yet (``train_one(entry)`` writes it), keep
    ``history.csv`` up to date, and return ``{entry: metrics}`` in config order. Shared by every task."""
    strategies: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for name in config.strategies:
        if not paths.result(name).exists():
            if on_strategy_start is not None:
                on_strategy_start(name, config.train.epochs)
            train_one(name)
        saved = read_json(paths.result(name))
        strategies[name] = saved["metrics"]
        history.extend(saved["history"])
        write_history(paths, history)
    return strategies


def run_experiment(
    paths: RunPaths,
    config: RunConfig,
    *,
    on_epoch_end: EpochCallback | None = None,
    on_strategy_start: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue) every strategy of ``config`` in ``paths``; write ``metrics.json`` and ``history.csv``."""
    if config.task != "contrastive":
        task = run_recommendation if config.task == "recommendation" else run_retrieval
        return task(paths, config, on_epoch_end=on_epoch_end, on_strategy_start=on_strategy_start)
    started = time.perf_counter()
    data = load_dataset(config.dataset, seed=config.seed, **config.dataset_options)
    raw_path = paths.root / "results" / "_raw.json"
    if raw_path.exists():
        raw = read_json(raw_path)
    else:
        raw = raw_baseline(data, config)
        write_json(raw_path, raw)
    strategies = run_strategies(
        paths,
        config,
        lambda name: train_strategy(name, config, data, paths, on_epoch_end=on_epoch_end),
        on_strategy_start,
    )
    metrics = {
        "dataset": config.dataset,
        "dataset_description": data.description,
        "config": config.model_dump(mode="json"),
        "baselines": {"raw": raw},
        "strategies": strategies,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(paths.metrics, metrics)
    return metrics


def read_logged_estimates(run_dir: str | Path) -> tuple[float, float]:
    """``(noise_rate, q)`` logged at the last epoch by a strategy that estimates them (ANS) in ``run_dir``."""
    results = sorted((Path(run_dir) / "results").glob("*.json"))
    for path in results:
        if path.name.startswith("_"):
            continue
        history = read_json(path)["history"]
        if history and "q" in history[-1] and "noise_rate" in history[-1]:
            return float(history[-1]["noise_rate"]), float(history[-1]["q"])
    raise ValueError(f"no strategy in {run_dir} logged noise_rate and q (run the 'ans' strategy)")
