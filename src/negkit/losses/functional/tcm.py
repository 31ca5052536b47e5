"""Threshold-consistent margin (TCM) regulariser (Zhang et al., ICLR 2024; arXiv 2307.04047)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import (
    check_features,
    check_finite_scalar,
    check_labels,
    degenerate,
    record_skipped,
)
from negkit.losses.functional.core import similarity_logits


def _hinge_mean(violation: Tensor, violated: Tensor) -> Tensor:
    """Mean of ``violation`` over the ``violated`` pairs; 0 (connected) when none is."""
    count = violated.sum()
    total = torch.where(violated, violation, torch.zeros_like(violation)).sum()
    return total / count.clamp(min=1).to(total.dtype)


def tcm(
    embeddings: Tensor,
    labels: Tensor,
    *,
    pos_margin: float = 0.9,
    neg_margin: float = 0.5,
    pos_weight: float = 1.0,
    neg_weight: float = 1.0,
) -> Tensor:
    """The threshold-consistent margin regulariser, to be added to any base loss (``loss = base + tcm(...)``).

    With ``s`` the cosine similarity of an ordered pair of distinct rows of the batch::

        TCM = λ⁺ · Σ_{same label, s ≤ m⁺} (m⁺ − s) / #{same label, s ≤ m⁺}
            + λ⁻ · Σ_{other label, s ≥ m⁻} (s − m⁻) / #{other label, s ≥ m⁻}

    Only *hard* pairs count: positives below ``m⁺`` and negatives above ``m⁻``; each term is 0 when no pair
    violates its margin. This is pytorch-metric-learning's ``ThresholdConsistentMarginLoss`` (all pairs of the
    batch, cosine similarity), which ``tests/losses/test_tcm.py`` checks value and gradient against.

    A batch of fewer than two rows has no pair: 0 with a zero gradient, its rows counted as skipped
    (:func:`negkit.losses.count_skipped`); in strict mode it raises.

    Args:
        embeddings: ``[B,d]``.
        labels: ``[B]`` integer class ids.
        pos_margin: m⁺ in [-1, 1] (0.9).
        neg_margin: m⁻ in [-1, 1] (0.5).
        pos_weight: λ⁺ ≥ 0 (1.0).
        neg_weight: λ⁻ ≥ 0 (1.0).

    Returns:
        A scalar.
    """
    m_pos = check_finite_scalar("pos_margin", pos_margin, low=-1.0, high=1.0)
    m_neg = check_finite_scalar("neg_margin", neg_margin, low=-1.0, high=1.0)
    w_pos = check_finite_scalar("pos_weight", pos_weight, low=0.0)
    w_neg = check_finite_scalar("neg_weight", neg_weight, low=0.0)
    check_features("embeddings", embeddings, 2)
    labels = check_labels("labels", labels, embeddings.shape[0], embeddings.device)
    rows = embeddings.shape[0]
    sims = similarity_logits(embeddings, embeddings, 1.0, names="embeddings, embeddings")
    if rows < 2:
        degenerate(f"tcm: embeddings has {rows} row(s); the regulariser needs at least one pair")
        record_skipped(rows)
        return sims.sum() * 0.0
    record_skipped(0)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    not_self = ~torch.eye(rows, dtype=torch.bool, device=embeddings.device)
    positive = same & not_self
    negative = ~same
    pos_term = _hinge_mean(m_pos - sims, positive & (sims <= m_pos))
    neg_term = _hinge_mean(sims - m_neg, negative & (sims >= m_neg))
    return w_pos * pos_term + w_neg * neg_term
