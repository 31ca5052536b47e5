"""``negkit demo``: every loss trains the same small encoder on the same clustered data, in seconds.

The data are 10 Gaussian classes in 32-D whose class structure lives in a random 8-D subspace, mixed with
noise in the other 24 dimensions; the two views of a sample add independent noise. A linear encoder is
trained with each loss for a fixed number of steps and scored by 5-NN accuracy on held-out points
before and after training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from negkit.losses import dcl, decoupled_softmax, hard_nce, info_nce, mw_auc, sup_con


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


def _objectives() -> dict[str, callable]:
    def in_batch_relevance(labels: Tensor) -> Tensor:
        return (labels.unsqueeze(0) == labels.unsqueeze(1)).float()

    return {
        "info_nce": lambda z1, z2, y: info_nce(z1, z2, temperature=0.2),
        "info_nce(labels)": lambda z1, z2, y: info_nce(z1, z2, labels=y, temperature=0.2),
        "sup_con": lambda z1, z2, y: sup_con(torch.cat([z1, z2]), torch.cat([y, y]), temperature=0.2),
        "dcl": lambda z1, z2, y: dcl(z1, z2, temperature=0.2),
        "dclw": lambda z1, z2, y: dcl(z1, z2, temperature=0.2, sigma=0.5),
        "hard_nce (H-UCL)": lambda z1, z2, y: hard_nce(z1, z2, temperature=0.5, beta=1.0, tau_plus=0.1),
        "hard_nce (H-SCL)": lambda z1, z2, y: hard_nce(z1, z2, y, temperature=0.5, beta=1.0),
        "decoupled_softmax": lambda z1, z2, y: decoupled_softmax(z1, z2, in_batch_relevance(y), temperature=0.2),
        "mw_auc": lambda z1, z2, y: mw_auc(
            F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / 0.2, in_batch_relevance(y)
        ),
    }


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
