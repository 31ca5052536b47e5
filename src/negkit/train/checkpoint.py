"""Per-epoch training checkpoints shared by every task of the runner: written atomically, restored exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from negkit.io import load_torch, save_torch


class RunDirError(ValueError):
    """A run folder (or a file in it) that cannot be used: one line naming the file and what to do."""


def read_saved(path: Path, read: Callable[[Path], Any], remedy: str) -> Any:
    """``read(path)`` of a file a run saved, or :class:`RunDirError` naming the file, why, and ``remedy``."""
    try:
        return read(path)
    except Exception as error:  # any parse error of a torn, emptied or foreign file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunDirError(f"{path} is damaged ({reason[:120]}): {remedy}") from None


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def save_training_state(
    path: Path,
    *,
    generator: torch.Generator,
    epoch: int,
    history: list[dict[str, Any]],
    **state: Stateful | Tensor | None,
) -> None:
    """Write modules, optimizers, schedulers (their ``state_dict``), tensors, the generator, the epoch reached
    and the history so far to ``path`` in one atomic replace."""
    payload: dict[str, Any] = {
        name: value if value is None or isinstance(value, Tensor) else value.state_dict()
        for name, value in state.items()
    }
    save_torch(path, {**payload, "generator": generator.get_state(), "epoch": epoch, "history": history})


def load_training_state(
    path: Path, *, generator: torch.Generator, **state: Stateful | Tensor | None
) -> tuple[list[dict[str, Any]], int]:
    """Restore what :func:`save_training_state` wrote (tensors in place); ``([], 0)`` when there is no checkpoint."""
    if not path.exists():
        return [], 0
    remedy = "delete it to train that strategy from its start, or start the run over with --force"

    def restore(path: Path) -> tuple[list[dict[str, Any]], int]:
        saved = load_torch(path)
        for name, value in state.items():
            if value is None:
                continue
            if isinstance(value, Tensor):
                value.copy_(saved[name])
            else:
                value.load_state_dict(saved[name])
        generator.set_state(saved["generator"])
        return saved["history"], saved["epoch"]

    return read_saved(path, restore, remedy)
