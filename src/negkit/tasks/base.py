"""The task interface and the task registry.

A *task* is what ``negkit run`` trains and evaluates: it loads its data (a built-in dataset or the user's files),
measures its baselines, builds the model and strategy of one strategy entry, cuts an epoch into batches, turns a
batch into a loss, evaluates, and writes its section of the report. Everything else — seeding, the optimiser and
learning-rate schedule, gradient clipping, checkpoints every epoch, resume, epoch records, progress callbacks —
is the one training loop's (:func:`negkit.train.loop.fit`), shared by every task.

A new task is one file with a :class:`Task` subclass and one registration::

    @register_task
    class MyTask(Task):
        name = "my-task"
        ...

Nothing imports a task module back: the runner, the CLI and the report find tasks through this registry.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable, floats are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Column:
    """One column of the summary table (CLI and report): metric ``key``, ``title``, format (``"{:.4f}"``)."""

    key: str
    title: str
    fmt: str = "{:.4f}"

    def cell(self, metrics: dict[str, Any]) -> str:
        value = metrics.get(self.key)
        return "–" if value is None else self.fmt.format(value)


@dataclass
class Trainee:
    """What the loop trains for one strategy entry.

    Attributes:
        model: the trained module (its parameters are optimised unless ``parameters`` says otherwise).
        strategy: the strategy object built from the entry (an ``nn.Module`` when it keeps state).
        parameters: the tensors the optimiser updates.
        state: extra checkpointed objects by name (modules, samplers, tensors updated in place; ``None`` allowed).
        scratch: per-run values the task keeps between its hooks (never checkpointed: rebuilt on resume).
    """

    model: nn.Module
    strategy: Any
    parameters: list[Tensor]
    state: dict[str, Any] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)

    def checkpointed(self) -> dict[str, Any]:
        """Everything the checkpoint saves besides the optimiser, the schedule and the generator."""
        objects: dict[str, Any] = {"model": self.model}
        if isinstance(self.strategy, nn.Module):
            objects["strategy"] = self.strategy
        return {**objects, **self.state}


@dataclass
class StepResult:
    """The outcome of one training step: the scalar ``loss`` to back-propagate and numbers averaged over the
    epoch's steps into the epoch record (``logs``)."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Task(abc.ABC):
    """One kind of training problem for ``negkit run``. Subclasses set the class attributes and the hooks.

    Class attributes:
        name: the ``task`` key of a config.
        description: one line for ``negkit tasks``.
        sections: the task's own config sections, ``{key: pydantic model}`` (e.g. ``{"recommend": ...}``).
        data_settings: the pydantic model of the ``[data]`` section (the user's own files).
        default_dataset: the built-in dataset used when a config names neither ``dataset`` nor ``[data]``.
        default_strategies: the strategies of a config that lists none.
        step_fields: per-step numbers every epoch record carries (mean over the epoch's steps; 0 if never logged).
        columns: the summary table's columns; the first is the headline metric (higher is better).
        reserved_options, extra_options: how ``dataset_options`` map onto the dataset loader's parameters.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    sections: ClassVar[dict[str, type[BaseModel]]] = {}
    data_settings: ClassVar[type[BaseModel] | None] = None
    default_dataset: ClassVar[str]
    default_strategies: ClassVar[tuple[str, ...]]
    step_fields: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[tuple[Column, ...]]
    #: loader parameters the task sets itself (not ``dataset_options``), and options it adds to every loader
    reserved_options: ClassVar[tuple[str, ...]] = ("seed",)
    extra_options: ClassVar[dict[str, type]] = {}

    def __init__(self, config: Any) -> None:
        self.config = config

    # ------------------------------------------------------------------ what the task offers (class level)

    @classmethod
    @abc.abstractmethod
    def datasets(cls) -> list[str]:
        """The built-in datasets of this task (``dataset = ...`` in a config)."""

    @classmethod
    def strategy_names(cls) -> list[str]:
        """The registered strategies this task can train (``negkit strategies --task NAME``)."""
        from negkit.strategies import list_strategies

        return list_strategies(task=cls.name)

    @classmethod
    def check_strategy(cls, entry: str, params: dict[str, Any]) -> None:
        """Raise ``ValueError`` if the strategy entry's parameters ask for something this task cannot honour."""
        return None

    @classmethod
    @abc.abstractmethod
    def dataset_loader(cls, name: str) -> Callable[..., Any]:
        """The loader of the built-in dataset ``name`` (its keyword parameters are the dataset's options)."""

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise ``ValueError`` on settings this task cannot run (checked at config time). By default: the
        ``dataset_options`` of a built-in dataset against its loader (:func:`check_dataset_options`)."""
        if config.dataset is not None:
            check_dataset_options(
                cls.dataset_loader(config.dataset),
                config.dataset_options,
                reserved=cls.reserved_options,
                extra=cls.extra_options,
            )

    @classmethod
    def summary_columns(cls, config: dict[str, Any]) -> tuple[Column, ...]:
        """The summary table's columns for a run with this (dumped) config; the first is the headline metric."""
        return cls.columns

    # ------------------------------------------------------------------------------------ data and baselines

    @abc.abstractmethod
    def load(self) -> None:
        """Load the data named by the config (a built-in dataset or the ``[data]`` files)."""

    @property
    @abc.abstractmethod
    def dataset_name(self) -> str:
        """The dataset's name for reports."""

    @property
    @abc.abstractmethod
    def dataset_description(self) -> str:
        """One line: source, sizes, split."""

    @abc.abstractmethod
    def baselines(self) -> dict[str, dict[str, Any]]:
        """``{name: metrics}`` of what a trained embedding has to beat (raw inputs, popularity, zero-shot)."""

    def run_metrics(self) -> dict[str, Any]:
        """Extra top-level entries of ``metrics.json`` (e.g. a data statistic)."""
        return {}

    # --------------------------------------------------------------------------------------------- training

    @abc.abstractmethod
    def build(self, entry: str) -> Trainee:
        """The model, strategy and state of one strategy entry (called right after ``torch.manual_seed``)."""

    @abc.abstractmethod
    def steps_per_epoch(self, trainee: Trainee) -> int:
        """Optimisation steps per epoch (sizes the learning-rate schedule)."""

    def start_epoch(self, trainee: Trainee, epoch: int, generator: torch.Generator) -> None:
        """Work before an epoch's batches (e.g. refresh a cache, re-mine negatives)."""
        return None

    @abc.abstractmethod
    def batches(self, trainee: Trainee, generator: torch.Generator) -> Iterable[Any]:
        """The epoch's batches, in order, drawn with ``generator``."""

    @abc.abstractmethod
    def step(self, trainee: Trainee, batch: Any, generator: torch.Generator) -> StepResult | None:
        """The loss of one batch (``None``: the batch is skipped and counted in ``skipped_batches``)."""

    def end_epoch(self, trainee: Trainee, epoch: int, last: bool) -> dict[str, Any]:
        """Numbers of the finished epoch for its record (e.g. a test metric), measured in eval mode."""
        return {}

    @abc.abstractmethod
    def final_metrics(self, trainee: Trainee, history: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
        """The strategy's final metrics (and any files it keeps in ``run_dir``) once training is done."""

    # --------------------------------------------------------------------------------------------- reporting

    @classmethod
    def report(cls, run_dir: Path, metrics: dict[str, Any], history: list[dict[str, str]]) -> tuple[str, list[str]]:
        """``(setup paragraph, extra sections)`` of ``report.md`` from the saved run (the results table is
        common); plots go to ``run_dir / "plots"``."""
        return "", []


def check_dataset_options(
    loader: Callable[..., Any],
    options: dict[str, Any],
    *,
    reserved: tuple[str, ...] = ("seed",),
    extra: dict[str, type] | None = None,
) -> None:
    """Validate ``dataset_options`` against a built-in dataset's loader before anything is loaded.

    Keys must be keyword parameters of ``loader`` (minus ``reserved``, which the task sets itself) or of
    ``extra``; values must have the parameter's annotated type (``bool``, ``int``, ``float`` or ``str``); a
    fraction (``*_fraction``, ``label_noise``) must lie in ``[0, 1)`` (``test_fraction`` in ``(0, 1)``).
    Raises ``ValueError`` naming ``dataset_options.KEY``.
    """
    hints = {**typing.get_type_hints(loader), **(extra or {})}
    parameters = [
        name
        for name, p in inspect.signature(loader).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in reserved
    ]
    valid = sorted({*parameters, *(extra or {})})
    for key, value in options.items():
        where = f"dataset_options.{key}"
        if key not in valid:
            raise ValueError(f"{where}: unknown option; valid: {', '.join(valid) or 'none'}")
        kind = hints.get(key)
        if kind in (bool, int, float, str):
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}")
        if key.endswith("_fraction") or key == "label_noise":
            low_open = key == "test_fraction"
            if not ((value > 0) if low_open else (value >= 0)) or not value < 1:
                interval = "(0, 1)" if low_open else "[0, 1)"
                raise ValueError(f"{where}: must lie in {interval}, got {value!r}")


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available as ``task = cls.name`` in configs."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is already registered to {_TASKS[cls.name].__name__}")
    _TASKS[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> type[Task]:
    try:
        return _TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task {name!r}{hint}; registered: {', '.join(list_tasks())}") from None
