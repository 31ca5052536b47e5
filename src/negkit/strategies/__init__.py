"""Named training strategies (``negkit.strategies.create_strategy("hscl", beta=1.0)``)."""

from negkit.strategies import builtin as _builtin  # noqa: F401  (registers the built-in strategies)
from negkit.strategies import global_negatives as _global_negatives  # noqa: F401
from negkit.strategies import sampled as _sampled  # noqa: F401
from negkit.strategies import seed_methods as _seed_methods  # noqa: F401  (issue 16: meow, adameow, amcl, metrix, tcm)
from negkit.strategies.registry import (
    StrategyLoss,
    StrategySpec,
    create_strategy,
    get_strategy,
    list_strategies,
    parse_strategy_entry,
    register_strategy,
)

__all__ = [
    "StrategyLoss",
    "StrategySpec",
    "create_strategy",
    "get_strategy",
    "list_strategies",
    "parse_strategy_entry",
    "register_strategy",
]
