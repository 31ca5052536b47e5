"""``negkit demo``: every loss trains the same small encoder on the same clustered data, in seconds.

The data are 10 Gaussian classes in 32-D whose class structure lives in a random 8-D subspace, mixed with
noise in the other 24 dimensions; the two views of a sample add independent noise. A linear encoder is
trained with each loss for a fixed number of steps and scored by 5-NN accuracy on held-out points
before and after training.

Every loss is built by its registry name (:func:`negkit.losses.create_loss`) with that name's defaults, the
same loss ``negkit run`` and the other surfaces mean by the name.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from negkit.losses import create_loss, get_loss


@dataclass(frozen=True)
class DemoResult:
    loss: str
    first_loss: float
    last_loss: float
    knn_before: float
    knn_after: float
    seconds: float


def clustered_data(n: int, generator: torch.Generator, classes: int = 10, dim: int = 32) -> tuple[Tensor, Tensor]:
    signal = 8
    fixed = torch.Generator().manual_seed(123)  # the same classes for every split
    means = torch.randn(classes, signal, generator=fixed) * 2.0
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=fixed))
    labels = torch.randint(0, classes, (n,), generator=generator)
    x = torch.randn(n, dim, generator=generator)
    x[:, :signal] = means[labels] + 0.5 * torch.randn(n, signal, generator=generator)
    return x @ rotation, labels


def knn_accuracy(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, k: int = 5) -> float:
    sims = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    neighbours = sims.topk(k, dim=1).indices
    votes = F.one_hot(train_labels[neighbours], int(train_labels.max()) + 1).sum(dim=1)
    return float((votes.argmax(dim=1) == test_labels).float().mean())


Objective = Callable[[Tensor, Tensor, Tensor], Tensor]
#: How the demo's two views ``z1, z2 [B, d]`` and labels ``y [B]`` become each kind of loss's inputs.
_INPUTS: dict[str, Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]] = {
    "pair": lambda loss, z1, z2, y: loss(z1, z2),  # z1[i]'s positive is z2[i]; no labels
    "pair+labels": lambda loss, z1, z2, y: loss(z1, z2, labels=y),  # same-label rows leave the negatives
    "labelled pair": lambda loss, z1, z2, y: loss(z1, z2, y),  # H-SCL: labels are a positional input
    "stacked views": lambda loss, z1, z2, y: loss(torch.cat([z1, z2]), torch.cat([y, y])),  # SupCon
    "relevance": lambda loss, z1, z2, y: loss(z1, z2, _in_batch_relevance(y)),  # every same-label row relevant
    "scores": lambda loss, z1, z2, y: loss(_scores(z1, z2), _in_batch_relevance(y)),
}
#: The demo's rows: (label, registered loss name, how it is called). Every loss takes its registry defaults.
DEMO_LOSSES: tuple[tuple[str, str, str], ...] = (
    ("info_nce", "info_nce", "pair"),
    ("info_nce (labels)", "info_nce", "pair+labels"),
    ("symmetric_info_nce", "symmetric_info_nce", "pair"),
    ("sup_con", "sup_con", "stacked views"),
    ("dcl", "dcl", "pair"),
    ("dclw", "dclw", "pair"),
    ("hucl", "hucl", "pair"),
    ("hscl", "hscl", "labelled pair"),
    ("decoupled_softmax", "decoupled_softmax", "relevance"),
    ("mw_auc", "mw_auc", "scores"),
)


def _in_batch_relevance(labels: Tensor) -> Tensor:
    return (labels.unsqueeze(0) == labels.unsqueeze(1)).float()


def _scores(z1: Tensor, z2: Tensor) -> Tensor:
    """``cos(z1_i, z2_j) / T`` with info_nce's registry temperature: mw_auc takes scores, not embeddings."""
    return F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / get_loss("info_nce").defaults["temperature"]


def _objectives() -> dict[str, Objective]:
    """Each demo row as ``objective(z1, z2, y) -> loss``, its loss built by name with the name's defaults."""
    return {label: functools.partial(_INPUTS[inputs], create_loss(name)) for label, name, inputs in DEMO_LOSSES}


def run_demo(steps: int = 150, batch_size: int = 128, seed: int = 0) -> list[DemoResult]:
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = clustered_data(4000, generator)
    x_test, y_test = clustered_data(1000, generator)
    results = []
    for name, objective in _objectives().items():
        torch.manual_seed(seed)
        encoder = nn.Linear(x_train.shape[1], 16)
        knn_before = knn_accuracy(encoder(x_train).detach(), y_train, encoder(x_test).detach(), y_test)
        optimiser = torch.optim.Adam(encoder.parameters(), lr=1e-2)
        batches = torch.Generator().manual_seed(seed + 1)
        losses = []
        start = time.perf_counter()
        for _ in range(steps):
            idx = torch.randint(0, len(x_train), (batch_size,), generator=batches)
            x, y = x_train[idx], y_train[idx]
            view1 = x + 0.3 * torch.randn(x.shape, generator=batches)
            view2 = x + 0.3 * torch.randn(x.shape, generator=batches)
            loss = objective(encoder(view1), encoder(view2), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        with torch.no_grad():
            knn_after = knn_accuracy(encoder(x_train), y_train, encoder(x_test), y_test)
        results.append(DemoResult(name, losses[0], losses[-1], knn_before, knn_after, seconds))
    return results
