"""Random inputs for metric tests, drawn from explicit seeds so that every failure is reproducible."""

from __future__ import annotations

import torch
from torch import Tensor


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype)


def randint(seed: int, high: int, size: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (size,), generator=generator)


def clustered(
    seed: int,
    n: int,
    d: int,
    classes: int,
    *,
    noise: float = 1.0,
    class_ids: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """``n`` Gaussian points around ``classes`` random centres; labels are ``class_ids[c]`` (default ``c``).

    Centres have unit-variance coordinates, so ``noise`` of about 1 gives an imperfect, non-trivial kNN.
    """
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=generator, dtype=dtype)
    cluster = torch.randint(0, classes, (n,), generator=generator)
    points = centres[cluster] + noise * torch.randn(n, d, generator=generator, dtype=dtype)
    labels = cluster if class_ids is None else class_ids[cluster]
    return points, labels
