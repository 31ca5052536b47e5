"""The experiment configuration: TOML in, validated pydantic models out.

The shared keys (``task``, ``dataset`` or ``[data]``, ``seed``, ``strategies``, ``strategy_params``, ``[train]``)
are :class:`RunConfig`'s; each task adds its own sections (``Task.sections``) and the schema of its ``[data]``
section (``Task.data_settings``), so a config is validated by the model of its task (:func:`config_model`).
Unknown keys, wrong types, unknown tasks, datasets, strategies and strategy parameters all fail with a message
that names the key and lists what is valid; every strategy entry is built once here, so a bad value fails
before any training starts.
"""

from __future__ import annotations

import copy
import functools
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from negkit.strategies import create_strategy, get_strategy, parse_strategy_entry
from negkit.tasks import Strict, get_task, list_tasks

Scalar = bool | int | float | str | None
#: keys that name files or folders; relative paths are resolved against the config file's folder
PATH_KEYS = {"data": ("train", "test", "corpus", "model", "embeddings"), "retrieval": ("negatives",)}


class TrainSettings(Strict):
    """The one training loop's settings (every task)."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(2, ge=0)
    grad_clip: float | None = Field(None, gt=0)  # clip the global gradient norm to this value (None: off)
    encoder: str = "mlp"
    feature_dim: int = Field(128, ge=1)
    hidden_dim: int = Field(256, ge=1)
    projection_dim: int = Field(64, ge=1)
    #: torch intra-op threads while training (None: torch's default). Small models train faster on 1 thread:
    #: the parallel regions of tiny operations cost more than they save, most of all when another process holds
    #: a core (the retrieval study's heads: 0.4 s of CPU per epoch on 1 thread, 3-19 s on 2 with a busy machine).
    #: Data loading (e.g. encoding a corpus) keeps torch's default.
    threads: int | None = Field(None, ge=1)

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, name: str) -> str:
        from negkit.models import ENCODERS

        if name not in ENCODERS:
            raise ValueError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")
        return name


class RunConfig(Strict):
    """One experiment: a task on a dataset (built-in, or the user's files in ``[data]``), the strategies to
    compare, and the training settings. Built through :func:`build_config`, which adds the task's sections."""

    task: str = "contrastive"
    dataset: str | None = None
    dataset_options: dict[str, Scalar] = Field(default_factory=dict)
    seed: int = 0
    #: registered names, or variants with inline parameters such as ``"uniform-k:k=16"`` (each its own run)
    strategies: list[str] = Field(default_factory=list)
    strategy_params: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    train: TrainSettings = Field(default_factory=TrainSettings)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        task = get_task(data.get("task", "contrastive"))
        filled = dict(data)
        if "strategies" not in filled:
            filled["strategies"] = list(task.default_strategies)
        if filled.get("dataset") is None and filled.get("data") is None:
            filled["dataset"] = task.default_dataset
        return filled

    @model_validator(mode="after")
    def _valid_choices(self) -> RunConfig:
        task = get_task(self.task)
        if self.dataset is not None and getattr(self, "data", None) is not None:
            raise ValueError("dataset: give either dataset (a built-in one) or a [data] section (your files), not both")
        if self.dataset is not None and self.dataset not in task.datasets():
            raise ValueError(
                f"dataset: unknown dataset {self.dataset!r} of the {self.task} task; choose one of: "
                f"{', '.join(task.datasets())}, or give your own files in a [data] section"
            )
        if getattr(self, "data", None) is not None and self.dataset_options:
            raise ValueError("dataset_options: options of a built-in dataset; a [data] section takes its own keys")
        task.check_config(self)
        if not self.strategies:
            raise ValueError("strategies: name at least one strategy")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies: a name is listed twice: {self.strategies}")
        for name, params in self.strategy_params.items():
            try:
                spec = get_strategy(name, task=self.task)
            except ValueError as error:
                raise ValueError(f"strategy_params.{name}: {error}") from None
            unknown = sorted(set(params) - set(spec.defaults()))
            if unknown:
                valid = ", ".join(sorted(spec.defaults())) or "none"
                raise ValueError(f"strategy_params.{name}: unknown parameter {', '.join(unknown)}; valid: {valid}")
        for entry in self.strategies:
            try:
                name, _ = parse_strategy_entry(entry, task=self.task)
            except ValueError as error:
                raise ValueError(f"strategies: {error}") from None
            params = self.params_for(entry)
            try:
                task.check_strategy(entry, params)
                create_strategy(name, **params)  # every value is checked once, before any training
            except (TypeError, ValueError) as error:
                raise ValueError(f"strategies: {entry!r}: {error}") from None
        return self

    def params_for(self, entry: str) -> dict[str, Scalar]:
        """Parameters of a strategy entry: ``strategy_params[name]`` overridden by the entry's inline ones."""
        name, inline = parse_strategy_entry(entry)
        return {**self.strategy_params.get(name, {}), **inline}

    def section(self, key: str) -> Any:
        """The task section ``key`` (e.g. ``"views"``, ``"recommend"``)."""
        return getattr(self, key)


@functools.cache
def config_model(task: str) -> type[RunConfig]:
    """The config model of ``task``: :class:`RunConfig` plus the task's sections and its ``[data]`` schema."""
    task_cls = get_task(task)
    fields: dict[str, Any] = {key: (model, Field(default_factory=model)) for key, model in task_cls.sections.items()}
    if task_cls.data_settings is not None:
        fields["data"] = (task_cls.data_settings | None, None)
    return create_model(f"{task_cls.__name__}Config", __base__=RunConfig, **fields)


#: ``negkit run`` without a config (and so ``make run``): the retrieval study on Rotten Tomatoes with the shipped
#: MiniLM, frozen with trained heads — which negatives, and what each costs. ``configs/default.toml`` spells it out;
#: ``configs/mnist5000.toml`` is the image study.
DEFAULT_RUN: dict[str, Any] = {
    "task": "retrieval",
    "dataset": "rotten-tomatoes",
    "seed": 0,
    "strategies": [
        "in-batch",
        "mined:relative_margin=none",
        "mined:lo=3,hi=30",
        "mcmc",
        "mined:lo=3,hi=30,loss=decoupled_softmax",
    ],
    "train": {"epochs": 10, "batch_size": 64, "lr": 0.001, "weight_decay": 0.0, "warmup_epochs": 1, "threads": 1},
    "retrieval": {"mode": "frozen", "max_seq_length": 128},
}


def builtin_config_data(dataset: str | None = None) -> dict[str, Any]:
    """The built-in config of ``negkit run``: :data:`DEFAULT_RUN`, or — when ``dataset`` belongs to another task
    (``negkit run --dataset digits``) — that task's defaults."""
    default = copy.deepcopy(DEFAULT_RUN)
    if dataset is None or dataset in get_task(default["task"]).datasets():
        return default
    owner = next((name for name in list_tasks() if dataset in get_task(name).datasets()), None)
    return default if owner is None else {"task": owner}


class ConfigError(ValueError):
    """A configuration file or override that does not validate."""


def _format(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
            owners = [name for name in list_tasks() if item["loc"][0] in get_task(name).sections]
            if len(item["loc"]) == 1 and owners:
                message = f"unknown key (a section of the {' and '.join(owners)} task; set task = ...)"
        lines.append(f"{where}: {message}" if where else message)
    return "invalid configuration: " + "; ".join(lines)


def build_config(data: dict[str, Any]) -> RunConfig:
    """Validate a config dictionary (as read from TOML or a run's ``config.json``) with its task's model."""
    task = data.get("task", "contrastive")
    if not isinstance(task, str) or task not in list_tasks():
        raise ConfigError(
            f"invalid configuration:\n  task: unknown task {task!r}; choose one of: {', '.join(list_tasks())}"
        )
    try:
        return config_model(task).model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format(error)) from None


def resolve_data_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``data`` with every relative path (:data:`PATH_KEYS`) made relative to ``base``."""
    resolved = dict(data)
    for name, keys in PATH_KEYS.items():
        section = data.get(name)
        if isinstance(section, dict):
            resolved[name] = {
                key: str((base / value).resolve()) if key in keys and isinstance(value, str) else value
                for key, value in section.items()
            }
    return resolved


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read a TOML config (or the built-in default when ``path`` is None) and apply top-level overrides
    (``dataset=...``, ``"train.epochs"=...``; ``None`` values are ignored)."""
    data: dict[str, Any] = builtin_config_data(overrides.get("dataset")) if path is None else {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config {path} is a folder; give a TOML file (e.g. configs/mnist5000.toml)")
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} cannot be read: {error}") from None
        data = resolve_data_paths(data, path.parent)
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    if overrides.get("dataset") is not None:
        data.pop("data", None)  # a dataset given on the command line replaces the config's files
    return build_config(data)
