"""Dataset registry: a name → loader returning seeded train/test splits held in memory."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class DatasetSplits:
    """A labelled dataset split into train and test, as tensors.

    Attributes:
        name: registry name.
        train_x, test_x: ``[N, C, H, W]`` float32 images in ``[0, 1]`` (or ``[N, d]`` vectors).
        train_y, test_y: ``[N]`` int64 class ids in ``[0, num_classes)``.
        num_classes: number of classes.
        description: one line for reports (source, sizes, split).
        train_y_clean: the true training labels when ``train_y`` carries injected label noise (``None``: clean).
            Training sees ``train_y``; evaluation uses :attr:`clean_train_y`.
        class_names: the ``num_classes`` original label values, ``class_names[i]`` for class id ``i`` (as text);
            ``None`` when the ids are the dataset's own (the built-in datasets).
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    description: str
    train_y_clean: Tensor | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def clean_train_y(self) -> Tensor:
        return self.train_y if self.train_y_clean is None else self.train_y_clean

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


class DatasetUnavailableError(ValueError):
    """A dataset whose files come from an optional package that is not installed."""


Loader = Callable[..., DatasetSplits]
_DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(seed=..., **options) -> DatasetSplits`` under ``name``."""

    def decorate(loader: Loader) -> Loader:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = loader
        return loader

    return decorate


def list_datasets(pattern: str = "*") -> list[str]:
    return sorted(name for name in _DATASETS if fnmatch.fnmatch(name, pattern))


def dataset_loader(name: str) -> Loader:
    """The loader registered as ``name`` (its keyword parameters are the dataset's options)."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}") from None


def load_dataset(name: str, *, seed: int = 0, label_noise: float = 0.0, **options: Any) -> DatasetSplits:
    """Load the dataset registered as ``name``; ``seed`` fixes any random split.

    ``label_noise`` (any dataset) replaces that share of the *training* labels by a uniformly drawn other class
    (symmetric noise, seeded); the true labels stay available for evaluation.
    """
    data = dataset_loader(name)(seed=seed, **options)
    return with_label_noise(data, label_noise, seed) if label_noise else data


def with_label_noise(data: DatasetSplits, rate: float, seed: int) -> DatasetSplits:
    """Symmetric label noise on the training split: each label, with probability ``rate``, becomes one of the
    other ``num_classes − 1`` classes uniformly (seeded). Test labels are untouched."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {rate}")
    generator = torch.Generator().manual_seed(10_000 + seed)
    clean = data.train_y
    flip = torch.rand(len(clean), generator=generator) < rate
    shift = torch.randint(1, data.num_classes, (len(clean),), generator=generator)
    noisy = torch.where(flip, (clean + shift) % data.num_classes, clean)
    description = f"{data.description}; symmetric label noise {rate:.0%} on train ({int(flip.sum())} flipped)"
    return DatasetSplits(
        data.name, data.train_x, noisy, data.test_x, data.test_y, data.num_classes, description, clean, data.class_names
    )


def stratified_split(labels: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(train, test)`` with the same class proportions in both parts, seeded."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for label in labels.unique(sorted=True):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = max(1, round(len(members) * test_fraction))
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    return torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values
