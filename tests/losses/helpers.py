"""Random inputs for loss tests, drawn from an explicit seed so every failure is reproducible."""

from __future__ import annotations

import torch
from torch import Tensor


def randn(seed: int, *shape: int, dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_(requires_grad)


def randint(seed: int, high: int, size: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (size,), generator=generator)


def random_relevance(seed: int, rows: int, cols: int, p: float = 0.3) -> Tensor:
    """0/1 relevance with at least one relevant and one non-relevant column per row."""
    generator = torch.Generator().manual_seed(seed)
    relevance = (torch.rand(rows, cols, generator=generator) < p).float()
    relevance[:, 0] = 1.0
    relevance[:, -1] = 0.0
    return relevance


def grads(loss: Tensor, *inputs: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(loss, inputs)
