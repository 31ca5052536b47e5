"""The experiment configuration: TOML in, validated pydantic models out.

Unknown keys, wrong types, unknown datasets, encoders and strategies, and unknown strategy parameters all
fail with a message that names the key and lists what is valid.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from negkit.data import list_datasets
from negkit.data.interactions import INTERACTION_DATASETS
from negkit.data.text import list_retrieval_datasets
from negkit.strategies import get_strategy, list_strategies, parse_strategy_entry
from negkit.train.retrieval import RetrievalStrategy

Scalar = bool | int | float | str | None
#: strategies of the recommendation task (negkit.train.recommend), each with parameters it cannot honour
RECOMMENDATION_STRATEGIES = {
    "uniform-k": {"in_batch": False, "importance_weights": False},
    "ans": {"in_batch": False, "class_conditional": False},
}
TASK_DEFAULT_STRATEGIES = {
    "recommendation": ["uniform-k:k=1", "uniform-k:k=8", "uniform-k:k=64", "ans"],
    "retrieval": ["in-batch", "mined"],
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSettings(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(2, ge=0)
    encoder: Literal["mlp", "cnn"] = "mlp"
    feature_dim: int = Field(128, ge=1)
    hidden_dim: int = Field(256, ge=1)
    projection_dim: int = Field(64, ge=1)


class ViewSettings(_Strict):
    shift: int = Field(2, ge=0)
    rotation: float = Field(0.0, ge=0)
    noise: float = Field(0.0, ge=0)
    erase: float = Field(0.0, ge=0, le=1)


class EvalSettings(_Strict):
    knn_k: int = Field(20, ge=1)
    knn_temperature: float = Field(0.07, gt=0)
    probe_c: float = Field(1.0, gt=0)
    recall_ks: list[int] = Field(default_factory=lambda: [1, 5, 10])


class RecommendSettings(_Strict):
    """The recommendation task (``task = "recommendation"``): two-tower model and ranking cut-off."""

    embedding_dim: int = Field(64, ge=1)
    features: bool = True  # user attributes and item genres beside the id embeddings
    top_k: int = Field(10, ge=1)


class RetrievalSettings(_Strict):
    """The retrieval task (``task = "retrieval"``): dual encoder over all-MiniLM-L6-v2 (negkit.train.retrieval)."""

    mode: Literal["frozen", "finetune"] = "frozen"
    shared_towers: bool = True
    max_seq_length: int = Field(128, ge=8)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    unique_queries: bool = True  # one query per distinct text (chatterbot repeats questions up to 121 times)
    refresh_every: int = Field(1, ge=1)  # epochs between two mining passes (Sample4Geo re-mines every epoch)


class RunConfig(_Strict):
    """One experiment: a task on a dataset, the strategies to compare, and shared training/evaluation settings.

    ``task = "contrastive"`` (default) learns image embeddings from two views; ``task = "recommendation"`` trains a
    two-tower model on user-item interactions (``dataset = "ml-100k"``, strategies ``uniform-k`` and ``ans``);
    ``task = "retrieval"`` trains a dual text encoder (``dataset = "chatterbot"`` or ``"rotten-tomatoes"``,
    strategies ``"negatives:loss=...,k=..."`` with negatives ``in-batch``, ``mined`` or ``mcmc``).
    """

    task: Literal["contrastive", "recommendation", "retrieval"] = "contrastive"
    dataset: str = "mnist5000"
    dataset_options: dict[str, Scalar] = Field(default_factory=dict)
    seed: int = 0
    #: registered names, or variants with inline parameters such as ``"uniform-k:k=16"`` (each its own run)
    strategies: list[str] = Field(
        default_factory=lambda: ["simclr", "dcl", "hucl", "scl", "supcon", "hscl", "ans:in_batch=true"]
    )
    strategy_params: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    train: TrainSettings = Field(default_factory=TrainSettings)
    views: ViewSettings = Field(default_factory=ViewSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str, info: ValidationInfo) -> str:
        valid = {
            "recommendation": list(INTERACTION_DATASETS),
            "retrieval": list_retrieval_datasets(),
        }.get(info.data.get("task"), list_datasets())
        if name not in valid:
            raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(valid)}")
        return name

    @model_validator(mode="after")
    def _strategies_fit_the_task(self) -> RunConfig:
        if self.task != "recommendation":
            return self
        unsupported = [n for n in self.strategies if parse_strategy_entry(n)[0] not in RECOMMENDATION_STRATEGIES]
        if unsupported:
            raise ValueError(
                f"strategies {', '.join(unsupported)} have no meaning in the recommendation task; "
                f"use: {', '.join(RECOMMENDATION_STRATEGIES)}"
            )
        for entry in self.strategies:
            params = self.params_for(entry)
            for key, required in RECOMMENDATION_STRATEGIES[parse_strategy_entry(entry)[0]].items():
                if params.get(key, required) != required:
                    raise ValueError(
                        f"strategy {entry!r}: {key}={params[key]} is not supported by the recommendation task"
                    )
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_strategies_of_the_task(cls, data: Any) -> Any:
        if isinstance(data, dict) and "strategies" not in data and data.get("task") in TASK_DEFAULT_STRATEGIES:
            return {**data, "strategies": TASK_DEFAULT_STRATEGIES[data["task"]]}
        return data

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, names: list[str], info: ValidationInfo) -> list[str]:
        if not names:
            raise ValueError("strategies must name at least one strategy")
        if info.data.get("task") == "retrieval":
            for entry in names:
                RetrievalStrategy.parse(entry)
        else:
            unknown = [n for n in names if n.partition(":")[0].strip() not in list_strategies()]
            if unknown:
                raise ValueError(f"unknown strategy {', '.join(unknown)}; choose from: {', '.join(list_strategies())}")
            for entry in names:
                parse_strategy_entry(entry)
        if len(set(names)) != len(names):
            raise ValueError(f"strategies lists a name twice: {names}")
        return names

    @model_validator(mode="after")
    def _valid_strategy_params(self) -> RunConfig:
        if self.task == "retrieval":
            for name, params in self.strategy_params.items():
                RetrievalStrategy.parse(name, params)
            return self
        for name, params in self.strategy_params.items():
            spec = get_strategy(name)
            unknown = sorted(set(params) - set(spec.defaults()))
            if unknown:
                valid = ", ".join(sorted(spec.defaults())) or "none"
                raise ValueError(f"strategy_params.{name}: unknown parameter {', '.join(unknown)}; valid: {valid}")
        return self

    def params_for(self, entry: str) -> dict[str, Scalar]:
        """Parameters of a strategy entry: ``strategy_params[name]`` overridden by the entry's inline ones."""
        name, inline = parse_strategy_entry(entry)
        return {**self.strategy_params.get(name, {}), **inline}


class ConfigError(ValueError):
    """A configuration file or override that does not validate."""


def _format(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {where}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def build_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format(error)) from None


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read a TOML config (or the built-in default when ``path`` is None) and apply top-level overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    return build_config(data)
