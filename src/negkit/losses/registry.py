"""A name → loss-module registry so that configs can name losses by string (``create_loss("supcon")``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

_LOSSES: dict[str, type[nn.Module]] = {}
ModuleT = TypeVar("ModuleT", bound=type[nn.Module])


def register_loss(*names: str) -> Callable[[ModuleT], ModuleT]:
    """Class decorator: register a loss module under one or more lower-case names."""

    def decorate(cls: ModuleT) -> ModuleT:
        for name in names:
            key = name.lower()
            if key in _LOSSES and _LOSSES[key] is not cls:
                raise ValueError(f"loss name {name!r} is already registered to {_LOSSES[key].__name__}")
            _LOSSES[key] = cls
        return cls

    return decorate


def list_losses(pattern: str = "*") -> list[str]:
    """Registered loss names matching a shell-style ``pattern``, sorted."""
    return sorted(name for name in _LOSSES if fnmatch.fnmatch(name, pattern.lower()))


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the loss registered as ``name`` with keyword hyper-parameters."""
    try:
        cls = _LOSSES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; registered: {', '.join(list_losses())}") from None
    return cls(**kwargs)
