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

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from negkit.metrics import in_batch_false_negative_rate


class StrategyLoss(nn.Module):
    """Base class of strategy modules.

    ``masks_same_label_negatives`` says whether the labels remove same-class rows from the negatives; it
    decides the false-negative rate reported for the in-batch negatives this strategy sees.
    """

    masks_same_label_negatives: bool = False

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def false_negative_rate(self, labels: Tensor) -> float:
        """Share of this batch's in-batch negatives that have the anchor's label."""
        return 0.0 if self.masks_same_label_negatives else in_batch_false_negative_rate(labels)


@dataclass(frozen=True)
class StrategySpec:
    name: str
    description: str
    uses_labels: bool
    factory: type[StrategyLoss]

    def defaults(self) -> dict[str, Any]:
        """The strategy's hyper-parameters with their default values."""
        signature = inspect.signature(self.factory.__init__)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name != "self" and p.default is not inspect.Parameter.empty
        }

    def build(self, **params: Any) -> StrategyLoss:
        unknown = sorted(set(params) - set(self.defaults()))
        if unknown:
            valid = ", ".join(sorted(self.defaults())) or "none"
            raise ValueError(f"strategy {self.name!r} has no parameter {', '.join(unknown)}; valid: {valid}")
        return self.factory(**params)


_STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(
    name: str, description: str, *, uses_labels: bool
) -> Callable[[type[StrategyLoss]], type[StrategyLoss]]:
    def decorate(cls: type[StrategyLoss]) -> type[StrategyLoss]:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        _STRATEGIES[name] = StrategySpec(name, description, uses_labels, cls)
        return cls

    return decorate


def list_strategies(pattern: str = "*") -> list[str]:
    return sorted(name for name in _STRATEGIES if fnmatch.fnmatch(name, pattern))


def get_strategy(name: str) -> StrategySpec:
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; registered: {', '.join(list_strategies())}") from None


def create_strategy(name: str, **params: Any) -> StrategyLoss:
    return get_strategy(name).build(**params)
