"""Datasets that return ``(x, y, index)`` so that per-sample state (caches, estimators) can key on the index."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset


class IndexedDataset(Dataset):
    """A map-style dataset over in-memory tensors whose items are ``(x[i], y[i], i)``."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.x[i], self.y[i], i


def iterate_batches(
    dataset: IndexedDataset, batch_size: int, generator: torch.Generator, *, drop_last: bool = True
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Shuffled batches ``(x [b,...], y [b], index [b])`` gathered in one indexing op (no per-item loop)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_last and batch_size > len(dataset):
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({len(dataset)}) with drop_last")
    order = torch.randperm(len(dataset), generator=generator)
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield dataset.x[index], dataset.y[index], index
