"""Strategies: named training objectives (which loss, which negatives, which hyper-parameters).

A strategy is an ``nn.Module`` whose ``forward(z1, z2, labels, index)`` returns the scalar training loss for
two views ``z1, z2 [B, d]`` of a batch with class ids ``labels [B]`` and dataset indices ``index [B]``.
Being a module, any state it keeps (queues, caches, per-sample estimators) is saved in checkpoints.
Strategies are registered by name so that configs can select them (``"simclr"``, ``"hscl"``, ...)::

    @register_strategy("mine", "one line for reports", uses_labels=False)
    class Mine(StrategyLoss):
        def __init__(self, temperature: float = 0.1) -> None: ...
        def forward(self, z1, z2, labels, index): ...
"""

from __future__ import annotations

import abc
import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from negkit.metrics import in_batch_false_negative_rate
from negkit.negatives import ClassConditionalSampler, NegativeSampler, UniformSampler


class StrategyLoss(nn.Module, abc.ABC):
    """Base class of strategy modules.

    The runner drives a strategy through a few hooks, all optional:

    * ``bind(num_samples, dim)`` once before training (and before a checkpoint is loaded): allocate
      dataset-wide state (caches) now that the dataset size and embedding width are known;
    * ``refresh(projections, labels)`` at the start of every epoch when ``needs_refresh`` is True, with the
      current projections of the whole training set (Sample4Geo-style re-mining);
    * ``generator``: the runner's checkpointed random generator, for any sampling the strategy does;
    * ``negative_sampler(batch_size)``: the distribution its negatives are drawn from, for the negative report;
    * ``diagnostics(z1, z2, labels)``: extra per-epoch numbers measured on a fixed probe batch;
    * ``epoch_metrics()``: numbers measured while training the last epoch (kept in the history and results).
    """

    needs_refresh: bool = False
    #: whether the labels remove same-class rows from the negatives (for the reported false-negative rate)
    masks_same_label_negatives: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.generator: torch.Generator | None = None

    @abc.abstractmethod
    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        """The scalar training loss of two views ``z1, z2 [B, d]`` with ``labels [B]`` and dataset ``index [B]``."""

    def bind(self, num_samples: int, dim: int) -> None:
        """Allocate state that depends on the dataset size or the embedding width."""

    @torch.no_grad()
    def refresh(self, projections: Tensor, labels: Tensor) -> None:
        """Receive the projections ``[N, dim]`` of the whole training set (only if ``needs_refresh``)."""

    def false_negative_rate(self, labels: Tensor) -> float:
        """Share of this batch's negatives that have the anchor's label (in-batch negatives by default; 0 for a
        batch of one sample, which has no in-batch negative)."""
        if self.masks_same_label_negatives or len(labels) < 2:
            return 0.0
        return in_batch_false_negative_rate(labels)

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        """A sampler with the distribution of this strategy's negatives (in-batch: ``batch_size − 1`` rows)."""
        if self.masks_same_label_negatives:
            return ClassConditionalSampler(batch_size - 1)
        return UniformSampler(batch_size - 1)

    def diagnostics(self, z1: Tensor, z2: Tensor, labels: Tensor) -> dict[str, float]:
        return {}

    def epoch_metrics(self) -> dict[str, float]:
        """Numbers the strategy measured during the last epoch (e.g. an acceptance rate), for the history."""
        return {}


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its name, one line for reports, whether it reads labels, the class that builds it
    (its keyword defaults are the strategy's parameters) and the tasks that can train it."""

    name: str
    description: str
    uses_labels: bool
    factory: Callable[..., Any]
    tasks: tuple[str, ...] = ("contrastive",)

    def defaults(self) -> dict[str, Any]:
        """The strategy's hyper-parameters with their default values."""
        signature = inspect.signature(self.factory.__init__)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name != "self" and p.default is not inspect.Parameter.empty
        }

    def build(self, **params: Any) -> Any:
        unknown = sorted(set(params) - set(self.defaults()))
        if unknown:
            valid = ", ".join(sorted(self.defaults())) or "none"
            raise ValueError(f"strategy {self.name!r} has no parameter {', '.join(unknown)}; valid: {valid}")
        return self.factory(**params)


_STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(
    name: str, description: str, *, uses_labels: bool, tasks: tuple[str, ...] = ("contrastive",)
) -> Callable[[type], type]:
    """Class decorator: register a strategy under ``name`` for the ``tasks`` that can train it. Contrastive
    strategies are :class:`StrategyLoss` modules; other tasks define what their strategy objects provide."""

    def decorate(cls: type) -> type:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        _STRATEGIES[name] = StrategySpec(name, description, uses_labels, cls, tuple(tasks))
        return cls

    return decorate


def list_strategies(pattern: str = "*", *, task: str | None = None) -> list[str]:
    """Registered strategy names matching ``pattern``, only those ``task`` can train when it is given."""
    return sorted(
        name
        for name, spec in _STRATEGIES.items()
        if fnmatch.fnmatch(name, pattern) and (task is None or task in spec.tasks)
    )


def get_strategy(name: str, *, task: str | None = None) -> StrategySpec:
    """The spec registered as ``name``; with ``task``, an error unless that task can train it."""
    valid = list_strategies(task=task)
    spec = _STRATEGIES.get(name)
    if spec is None or (task is not None and task not in spec.tasks):
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f" of the {task} task" if task else ""
        known = "" if spec is None else f"; {name!r} is a strategy of: {', '.join(spec.tasks)}"
        raise ValueError(f"unknown strategy {name!r}{where}{hint}{known}; choose from: {', '.join(valid)}")
    return spec


def create_strategy(name: str, **params: Any) -> Any:
    return get_strategy(name).build(**params)


def _parse_value(text: str) -> bool | int | float | str | None:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def split_entry(entry: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` → ``("name", {key: value})`` with bool/None/int/float values parsed."""
    name, _, rest = entry.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"strategy variant {entry!r}: expected key=value, got {item!r}")
        params[key.strip()] = _parse_value(value)
    return name.strip(), params


def parse_strategy_entry(entry: str, *, task: str | None = None) -> tuple[str, dict[str, Any]]:
    """Split ``"name"`` or ``"name:key=value,key=value"`` (a variant, e.g. ``"uniform-k:k=16"``) into the
    registered name and its inline parameters; both are validated (against ``task`` when given)."""
    name, params = split_entry(entry)
    spec = get_strategy(name, task=task)
    unknown = sorted(set(params) - set(spec.defaults()))
    if unknown:
        valid = ", ".join(sorted(spec.defaults())) or "none"
        raise ValueError(f"strategy variant {entry!r}: unknown parameter {', '.join(unknown)}; valid: {valid}")
    return spec.name, params
