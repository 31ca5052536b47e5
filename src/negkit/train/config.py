"""The experiment configuration: TOML in, validated pydantic models out.

Unknown keys, wrong types, unknown datasets, encoders and strategies, and unknown strategy parameters all
fail with a message that names the key and lists what is valid.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from negkit.data import list_datasets
from negkit.strategies import get_strategy, list_strategies, parse_strategy_entry

Scalar = bool | int | float | str | None


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


class RunConfig(_Strict):
    """One experiment: a dataset, the strategies to compare, and shared training/evaluation settings."""

    dataset: str = "mnist5000"
    dataset_options: dict[str, Scalar] = Field(default_factory=dict)
    seed: int = 0
    #: registered names, or variants with inline parameters such as ``"uniform-k:k=16"`` (each its own run)
    strategies: list[str] = Field(default_factory=lambda: ["simclr", "dcl", "hucl", "scl", "supcon", "hscl"])
    strategy_params: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    train: TrainSettings = Field(default_factory=TrainSettings)
    views: ViewSettings = Field(default_factory=ViewSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in list_datasets():
            raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
        return name

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("strategies must name at least one strategy")
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
