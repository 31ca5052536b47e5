"""OPIS, an operating-point-inconsistency score: how much a single similarity threshold means different things for
different classes.

Zhang et al. ("Learning Threshold-Consistent Deep Metric Learning", ICLR 2024, arXiv 2307.04047) introduce the
Operating-Point-Inconsistency Score as "the variance across classes of the operating characteristics within a
calibration range of thresholds". The paper's exact formula (its utility function, calibration range and
normalisation) was not available to negkit, so :func:`opis` is **negkit's own definition** built from that
description; its values are not comparable with the numbers in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from negkit.metrics._common import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_class_ids,
    check_embeddings,
    chunks,
    compute_dtype,
    normalise,
)

#: The default calibration range: cosine thresholds 0, 0.01, ..., 0.99.
DEFAULT_THRESHOLDS = tuple(i / 100 for i in range(100))


def _check_thresholds(thresholds: Sequence[float] | Tensor | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    if thresholds is None:
        thresholds = DEFAULT_THRESHOLDS
    if isinstance(thresholds, Tensor):
        values = thresholds.detach()
        if values.dim() != 1 or not values.is_floating_point():
            raise ValueError(
                f"thresholds must be a 1-D floating tensor, got shape {tuple(values.shape)}, dtype {values.dtype}"
            )
    else:
        try:
            values = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)
        except (TypeError, ValueError):
            raise ValueError(f"thresholds must be a sequence of numbers, got {thresholds!r}") from None
    if values.numel() == 0:
        raise ValueError("thresholds must hold at least one threshold")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("thresholds must be finite")
    return values.to(device=device, dtype=dtype).sort().values


def opis(
    embeddings: Tensor,
    labels: Tensor,
    *,
    thresholds: Sequence[float] | Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Operating-point inconsistency across classes (negkit's definition; lower = more threshold-consistent).

    Every ordered pair ``(i, j)``, ``i ≠ j``, of rows is scored by cosine similarity ``s_ij`` and belongs to the
    class ``c = labels[i]`` of its first row; it is a positive pair when ``labels[j] = c``, else a negative
    pair. At a threshold ``t`` (a pair is accepted as "same class" when ``s_ij ≥ t``) class ``c`` has the
    operating characteristics::

        TPR_c(t) = #{positive pairs of c with s ≥ t} / #{positive pairs of c}
        FPR_c(t) = #{negative pairs of c with s ≥ t} / #{negative pairs of c}

    and ::

        OPIS = (1/|T|) Σ_{t∈T} [ Var_c TPR_c(t) + Var_c FPR_c(t) ]

    with ``Var_c`` the population variance over the classes that have at least one positive and one negative
    pair (every such class weighs the same), and ``T`` the calibration range of thresholds. 0 means that every
    class has the same operating point at every threshold of the range; the maximum is 0.5.

    Args:
        embeddings: ``[N,d]`` floating, finite, no all-zero row.
        labels: ``[N]`` non-negative integer class ids.
        thresholds: the calibration range, cosine thresholds (default 0, 0.01, ..., 0.99).
        chunk_size: rows scored at a time (memory ``O(chunk_size · N)``).

    Raises:
        ValueError: bad shapes or values, or fewer than two classes with both a positive and a negative pair.
    """
    embeddings = check_embeddings("embeddings", embeddings)
    labels = check_class_ids("labels", labels, embeddings.shape[0], embeddings.device)
    chunk_size = check_chunk_size(chunk_size)
    dtype = compute_dtype(embeddings)
    grid = _check_thresholds(thresholds, dtype, embeddings.device)
    z = normalise(embeddings, dtype)
    classes, index = torch.unique(labels, return_inverse=True)
    num_classes, size = classes.numel(), grid.numel() + 1
    positive = torch.zeros(num_classes * size, dtype=torch.float64, device=z.device)
    negative = torch.zeros_like(positive)
    rows = z.shape[0]
    for start, stop in chunks(rows, chunk_size):
        sims = z[start:stop] @ z.T
        bucket = torch.bucketize(sims, grid, right=True)  # s ≥ grid[k] exactly when k < bucket
        same = index[start:stop].unsqueeze(1) == index.unsqueeze(0)
        not_self = torch.arange(start, stop, device=z.device).unsqueeze(1) != torch.arange(rows, device=z.device)
        cell = (index[start:stop].unsqueeze(1) * size + bucket).reshape(-1)
        ones = torch.ones(cell.numel(), dtype=torch.float64, device=z.device)
        positive.index_add_(0, cell, ones * (same & not_self).reshape(-1))
        negative.index_add_(0, cell, ones * (~same).reshape(-1))

    def rates(histogram: Tensor) -> tuple[Tensor, Tensor]:
        histogram = histogram.view(num_classes, size)
        at_least = histogram.flip(-1).cumsum(-1).flip(-1)  # [C, K+1]: pairs with s ≥ grid[k-1]
        total = at_least[:, 0]
        return at_least[:, 1:] / total.clamp(min=1).unsqueeze(1), total

    tpr, positives = rates(positive)
    fpr, negatives = rates(negative)
    kept = (positives > 0) & (negatives > 0)
    if int(kept.sum()) < 2:
        raise ValueError(
            f"labels must give at least two classes with both a same-class and an other-class pair; got "
            f"{int(kept.sum())} such class(es) among {num_classes}"
        )
    spread = tpr[kept].var(dim=0, unbiased=False) + fpr[kept].var(dim=0, unbiased=False)
    return float(spread.mean())
