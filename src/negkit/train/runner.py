"""The experiment runner behind ``negkit run``: train every strategy of a config through its task and the one
loop, and keep everything needed to resume a killed run and to rebuild the report.

Run folder layout::

    DIR/config.json              the resolved configuration (what --resume continues)
    DIR/checkpoints/NAME.pt      per strategy, written atomically after every epoch
    DIR/results/NAME.json        per strategy, final metrics (a finished strategy is never retrained)
    DIR/results/_baselines.json  the task's baselines, measured once
    DIR/embeddings/NAME.pt       test-set features of each strategy (tasks that plot them)
    DIR/history.csv              one row per (strategy, epoch)
    DIR/metrics.json             everything, once the run is finished

Across processes (``torchrun ... -m negkit run``) every rank trains; only rank 0 writes into the run folder
(:func:`negkit.distributed.on_main`: the others wait for its result, and raise its error).
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from negkit.distributed import init_from_env, on_main
from negkit.io import read_json, write_json, write_text
from negkit.strategies import get_strategy, parse_strategy_entry
from negkit.tasks import Task, get_task
from negkit.train.checkpoint import RunDirError, read_saved
from negkit.train.config import RunConfig, build_config
from negkit.train.loop import EpochCallback, fit

#: the first columns of history.csv; then every other scalar some epoch record has
HISTORY_FIELDS = ("strategy", "epoch", "loss", "lr", "seconds")


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
    """Create (or, with ``resume``, reopen) a run folder; refuse to overwrite a run unless ``force``.

    Under ``torchrun`` (``WORLD_SIZE > 1``) this starts the process group (gloo: the runner trains on the CPU)
    unless one is running; rank 0 prepares the folder and every rank gets its result."""
    init_from_env("gloo")
    prepared: list[tuple[RunPaths, RunConfig]] = []

    def prepare() -> tuple[RunPaths, dict[str, Any]]:
        prepared.append(_prepare_run_dir(out, config, force=force, resume=resume))
        paths, settings = prepared[0]
        return paths, settings.model_dump(mode="json")  # the config class is built per task: sent as data

    paths, dumped = on_main(prepare)
    return prepared[0] if prepared else (paths, build_config(dumped))


def _prepare_run_dir(
    out: str | Path, config: RunConfig | None, *, force: bool, resume: bool
) -> tuple[RunPaths, RunConfig]:
    paths = RunPaths(Path(out))
    if paths.root.exists() and not paths.root.is_dir():
        raise RunDirError(f"{paths.root} is a file, not a run folder; choose another --out")
    if resume:
        if not paths.config.exists():
            raise RunDirError(f"nothing to resume in {paths.root}: {paths.config.name} is missing")
        remedy = "start the run over with `negkit run CONFIG --out DIR --force`"
        return paths, build_config(read_saved(paths.config, read_json, remedy))
    if config is None:
        raise ValueError("config is required unless resume=True")
    try:
        if paths.root.exists() and any(paths.root.iterdir()):
            if not force:
                state = "a finished run" if paths.metrics.exists() else "an unfinished run"
                hint = "" if paths.metrics.exists() else f"; continue it with `negkit run --resume {paths.root}`"
                raise RunDirError(f"{paths.root} holds {state}{hint}, or pass --force to overwrite it")
            shutil.rmtree(paths.root)
        paths.root.mkdir(parents=True, exist_ok=True)
        write_json(paths.config, config.model_dump(mode="json"))
    except OSError as error:
        raise RunDirError(f"{paths.root} cannot be written: {error.strerror or error}") from None
    return paths, config


def write_history(paths: RunPaths, rows: list[dict[str, Any]]) -> None:
    """One row per (strategy, epoch): the common fields, then any scalar a task or strategy logged (sorted)."""
    extra = sorted(
        {
            k
            for row in rows
            for k, v in row.items()
            if k not in HISTORY_FIELDS and isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*HISTORY_FIELDS, *extra], lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows({k: row[k] for k in (*HISTORY_FIELDS, *extra) if k in row} for row in rows)
    write_text(paths.history, buffer.getvalue())


def run_strategies(
    paths: RunPaths,
    config: RunConfig,
    train_entry: Callable[[str], Any],
    on_strategy_start: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Train every strategy of ``config`` that has no saved result yet (``train_entry(entry)`` writes it), keep
    ``history.csv`` up to date, and return ``{entry: metrics}`` in config order."""
    strategies: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for name in config.strategies:
        if not paths.result(name).exists():
            if on_strategy_start is not None:
                on_strategy_start(name, config.train.epochs)
            train_entry(name)
        remedy = f"delete it and checkpoints/{name}.pt to train {name} again"
        saved = read_saved(paths.result(name), lambda path: _result(read_json(path)), remedy)
        strategies[name] = saved["metrics"]
        history.extend(saved["history"])
        on_main(partial(write_history, paths, history))
    return strategies


def _result(saved: Any) -> dict[str, Any]:
    if not isinstance(saved, dict) or not {"metrics", "history"} <= set(saved):
        raise ValueError("not a strategy result (needs metrics and history)")
    return saved


def train_one(task: Task, entry: str, paths: RunPaths, *, on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Train one strategy entry through the loop (resuming from its checkpoint), then save its final metrics
    and history to ``results/ENTRY.json``; return the metrics."""
    trainee, history = fit(task, entry, paths.checkpoint(entry), on_epoch_end=on_epoch_end)
    return on_main(partial(_finish, task, entry, paths, trainee, history))


def _finish(task: Task, entry: str, paths: RunPaths, trainee: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = task.final_metrics(trainee, history, paths.root)
    name, _ = parse_strategy_entry(entry, task=task.name)
    spec = get_strategy(name)
    metrics["strategy"] = spec.name
    metrics["description"] = getattr(trainee.strategy, "description", spec.description)
    metrics["uses_labels"] = bool(getattr(trainee.strategy, "uses_labels", spec.uses_labels))
    metrics["params"] = {**spec.defaults(), **task.config.params_for(entry)}
    write_json(paths.result(entry), {"metrics": metrics, "history": history})
    return metrics


def run_experiment(
    paths: RunPaths,
    config: RunConfig,
    *,
    on_epoch_end: EpochCallback | None = None,
    on_strategy_start: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue) every strategy of ``config`` in ``paths`` through its task; write ``metrics.json`` and
    ``history.csv``. The baselines are measured once and kept in ``results/_baselines.json``."""
    started = time.perf_counter()
    task = get_task(config.task)(config)
    task.load()
    threads = torch.get_num_threads()
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    try:
        baselines = on_main(partial(_baselines, task, paths.root / "results" / "_baselines.json"))
        strategies = run_strategies(
            paths, config, lambda entry: train_one(task, entry, paths, on_epoch_end=on_epoch_end), on_strategy_start
        )
    finally:
        torch.set_num_threads(threads)
    metrics = {
        "task": config.task,
        "dataset": task.dataset_name,
        "dataset_description": task.dataset_description,
        "config": config.model_dump(mode="json"),
        "baselines": baselines,
        **task.run_metrics(),
        "strategies": strategies,
        "wall_seconds": time.perf_counter() - started,
    }
    on_main(partial(write_json, paths.metrics, metrics))
    return metrics


def _baselines(task: Task, path: Path) -> dict[str, Any]:
    if path.exists():
        return read_saved(path, read_json, "delete it to measure the baselines again")
    baselines = task.baselines()
    write_json(path, baselines)
    return baselines


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
