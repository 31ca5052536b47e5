"""How many of the negatives a contrastive loss sees are false negatives (they share the anchor's class).

With ``C`` equally frequent classes and negatives drawn uniformly, the expected rate is ``1/C`` (the class
collision probability ``τ⁺`` of Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020, Sec. 3, and
Arora et al., "A Theoretical Analysis of Contrastive Unsupervised Representation Learning", ICML 2019).
These functions measure the realised rate from labels, e.g. to check a sampler or to set ``τ⁺``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import check_labels, check_mask
from negkit.metrics._common import check_class_ids


def false_negative_rate(anchor_labels: Tensor, negative_labels: Tensor, mask: Tensor | None = None) -> float:
    """Share of (anchor, negative) pairs whose negative carries the anchor's label.

    ``rate = Σ_{b,k} m_bk · [y_neg_bk = y_b]  /  Σ_{b,k} m_bk`` with ``m = mask`` (all ones if ``None``).

    Args:
        anchor_labels: ``[B]`` non-negative integer class ids of the anchors.
        negative_labels: ``[B, K]`` integer class ids of each anchor's ``K`` negatives. Entries where ``mask`` is
            False are ignored (they may hold any integer, e.g. ``-1`` padding).
        mask: ``[B, K]`` bool (or 0/1); ``True`` marks a real negative. ``None`` = every entry is one.

    Returns:
        Rate in ``[0, 1]``.

    Raises:
        ValueError: bad shapes or dtypes, a negative class id among the counted entries, or no pair to count.
    """
    anchor_labels = _check_label_vector("anchor_labels", anchor_labels)
    batch = anchor_labels.shape[0]
    if not isinstance(negative_labels, Tensor) or negative_labels.dim() != 2 or negative_labels.shape[0] != batch:
        shape = tuple(negative_labels.shape) if isinstance(negative_labels, Tensor) else type(negative_labels).__name__
        raise ValueError(f"negative_labels must have shape [{batch}, K] (B from anchor_labels), got {shape}")
    check_labels("negative_labels", negative_labels.reshape(-1), negative_labels.numel(), anchor_labels.device)
    if negative_labels.dtype == torch.bool:
        raise ValueError(f"negative_labels must hold integer class ids, got dtype {negative_labels.dtype}")
    negative_labels = negative_labels.to(anchor_labels.device)
    if mask is None:
        mask = torch.ones_like(negative_labels, dtype=torch.bool)
    else:
        mask = check_mask("mask", mask, tuple(negative_labels.shape), anchor_labels.device)
    num_pairs = int(mask.sum())
    if num_pairs == 0:
        raise ValueError("no (anchor, negative) pair to count: negative_labels has K = 0 or mask is all False")
    counted = negative_labels[mask]
    if int(counted.min()) < 0:
        raise ValueError(
            f"negative_labels must hold non-negative class ids where mask is True, got {int(counted.min())}"
        )
    collisions = int(((negative_labels == anchor_labels[:, None]) & mask).sum())
    return collisions / num_pairs


def in_batch_false_negative_rate(labels: Tensor) -> float:
    """False-negative rate when every other row of the batch is a negative (SimCLR / InfoNCE in-batch negatives).

    ``rate = |{(i, j) : i ≠ j, y_i = y_j}| / (B (B − 1)) = Σ_c n_c (n_c − 1) / (B (B − 1))`` with ``n_c`` the
    number of rows of class ``c``; the same as :func:`false_negative_rate` with, for each anchor ``i``, the other
    ``B − 1`` rows as negatives. Computed from class counts in ``O(B)``.

    Args:
        labels: ``[B]`` non-negative integer class ids, ``B >= 2``.

    Returns:
        Rate in ``[0, 1]``.

    Raises:
        ValueError: bad shape or dtype, a negative class id, or ``B < 2``.
    """
    labels = _check_label_vector("labels", labels)
    batch = labels.shape[0]
    if batch < 2:
        raise ValueError(f"labels must have at least 2 entries for in-batch negatives, got {batch}")
    counts = torch.unique(labels, return_counts=True)[1]
    collisions = int((counts * (counts - 1)).sum())
    return collisions / (batch * (batch - 1))


def _check_label_vector(name: str, labels: object) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a 1-D tensor of class ids, got {shape}")
    if labels.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    return check_class_ids(name, labels, labels.shape[0], labels.device)
