"""InfoNCE against one candidate table that holds each anchor's positive at a given column (global batches)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_features,
    check_ids,
    check_labels,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    check_tensor,
)
from negkit.losses.functional.core import RowLoss, nce_rows, reduce_loss, similarity_logits, skip_anchors


def indexed_info_nce(
    anchor: Tensor,
    candidates: Tensor,
    positive_index: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    anchor_labels: Tensor | None = None,
    candidate_labels: Tensor | None = None,
    similarity: str = "cosine",
    reduction: str = "mean",
    context: str = "",
) -> Tensor:
    """InfoNCE of anchors ``[B,d]`` against one candidate table ``[N,d]``; anchor i's positive is a column of it.

    For anchor ``i`` with positive column ``c_i = positive_index[i]`` and negative set ``N(i)``::

        ℓ_i = −log( e^{s(a_i, x_{c_i})/T} / ( e^{s(a_i, x_{c_i})/T} + Σ_{j ∈ N(i)} e^{s(a_i, x_j)/T} ) )

    Which negatives anchor ``i`` sees, ``N(i)``: every candidate ``j ≠ c_i`` — minus those with
    ``candidate_labels[j] == anchor_labels[i]`` when labels are given. The positive always stays in the
    denominator, once. An anchor with no negative left is skipped (0, left out of the mean; in strict mode an
    error).

    This is the loss of a rank's local anchors against a gathered global batch
    (:func:`negkit.distributed.global_info_nce`: ``candidates`` from every rank, ``c_i = offset + i``). With
    ``candidates = positive`` and ``positive_index = arange(B)`` it equals ``info_nce(anchor, positive,
    labels=labels)``.

    Args:
        anchor: ``[B,d]``.
        candidates: ``[N,d]``.
        positive_index: integer ``[B]`` in ``[0, N)``: the column of each anchor's positive.
        temperature: T > 0.
        anchor_labels: optional ``[B]`` class ids of the anchors (needs ``candidate_labels``).
        candidate_labels: optional ``[N]`` class ids of the candidates (needs ``anchor_labels``).
        similarity: ``"cosine"`` (inputs L2-normalised inside) or ``"dot"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).
        context: appended to the strict-mode error raised when an anchor has no negative left.

    Raises:
        ValueError: on bad shapes, dtypes, devices, indices or labels, a temperature ≤ 0, an unknown reduction
            or similarity; in strict mode, an empty batch or an anchor with no negative left (the message lists
            those anchors).
    """
    check_reduction(reduction)
    rows, _, no_negative = indexed_rows(
        anchor,
        candidates,
        positive_index,
        temperature=temperature,
        anchor_labels=anchor_labels,
        candidate_labels=candidate_labels,
        similarity=similarity,
    )
    skipped = skip_anchors(anchor.shape[0], no_negative=no_negative, context=context, empty="anchor")
    return reduce_loss(rows, reduction, skipped=skipped)


def indexed_rows(
    anchor: Tensor,
    candidates: Tensor,
    positive_index: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    anchor_labels: Tensor | None = None,
    candidate_labels: Tensor | None = None,
    similarity: str = "cosine",
) -> RowLoss:
    """The per-anchor ``[B]`` loss of :func:`indexed_info_nce` (inputs checked) and the anchors with no negative
    left ``[B]``, before the degenerate-batch policy and the reduction."""
    check_positive_scalar("temperature", temperature)
    check_similarity(similarity)
    check_features("anchor", anchor, 2)
    check_tensor("candidates", candidates, 2)
    if candidates.shape[1] != anchor.shape[1]:
        raise ValueError(f"candidates must have {anchor.shape[1]} features (as anchor), got {candidates.shape[1]}")
    check_compatible("anchor", anchor, candidates=candidates)
    batch, num_candidates = anchor.shape[0], candidates.shape[0]
    check_ids("positive_index", positive_index, batch)
    if batch and (int(positive_index.min()) < 0 or int(positive_index.max()) >= num_candidates):
        raise ValueError(f"positive_index must lie in [0, {num_candidates})")
    if (anchor_labels is None) != (candidate_labels is None):
        raise ValueError("give both anchor_labels and candidate_labels, or neither")
    positive_index = positive_index.to(anchor.device)

    rows = torch.arange(batch, device=anchor.device)
    logits = similarity_logits(anchor, candidates, temperature, similarity, names="anchor, candidates")  # [B, N]
    positive_logits = logits[rows, positive_index].unsqueeze(1)
    keep = torch.ones_like(logits, dtype=torch.bool)
    if anchor_labels is not None:
        anchor_labels = check_labels("anchor_labels", anchor_labels, batch, anchor.device)
        candidate_labels = check_labels("candidate_labels", candidate_labels, num_candidates, anchor.device)
        keep = anchor_labels.unsqueeze(1) != candidate_labels.unsqueeze(0)
    negatives_left = keep.sum(dim=1) - keep[rows, positive_index].long()
    keep[rows, positive_index] = True  # the positive stays in the denominator, once
    loss = nce_rows(positive_logits, logits, negative_mask=keep, include_positive=False).loss
    return RowLoss(loss, torch.ones_like(negatives_left), negatives_left == 0)
