"""Losses of query → item ranking tasks on the core: sampled catalogue negatives (recommendation) and a shared
candidate set with known relevance (retrieval)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit.losses.functional.core import nce_rows, reduce_loss, similarity_logits, skip_anchors


def info_nce_from_logits(
    positive_logits: Tensor, negative_logits: Tensor, *, negative_mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """InfoNCE from precomputed logits: ``ℓ_i = −l_ip + log(e^{l_ip} + Σ_{j: mask_ij} e^{l_ij})``.

    ``positive_logits [B, 1]``, ``negative_logits [B, C]``; ``negative_mask`` bool ``[B, C]`` keeps candidate j in
    anchor i's denominator (``None``: all). Anchor i sees exactly the candidates of its row that the mask keeps.
    An anchor with no candidate left is skipped (0, left out of the mean; in strict mode an error).
    """
    rows = nce_rows(positive_logits, negative_logits, negative_mask=negative_mask)
    skipped = skip_anchors(positive_logits.shape[0], no_negative=rows.no_negative, empty="positive_logits")
    return reduce_loss(rows.loss, reduction, skipped=skipped)


def catalogue_logits(
    queries: Tensor, items: Tensor, positive: Tensor, negatives: Tensor, temperature: float | Tensor
) -> tuple[Tensor, Tensor]:
    """``([B, 1], [B, K])`` logits ``cos(query, item) / T`` of each query's positive item and its K sampled items.

    ``queries [B, d]``, ``items [I, d]`` (the whole catalogue), ``positive [B]`` and ``negatives [B, K]`` item ids.
    Scoring the catalogue ``[B, I]`` and gathering is cheaper than gathering ``B·K`` item vectors when the
    catalogue is small; ``info_nce_from_logits`` of the result equals ``info_nce(queries, items[positive],
    items[negatives], in_batch_negatives=False)``.
    """
    logits = similarity_logits(queries, items, temperature)
    return logits.gather(1, positive.unsqueeze(1)), logits.gather(1, negatives)


def relevance_masked_info_nce(
    queries: Tensor,
    candidates: Tensor,
    positive_column: Tensor,
    relevant: Tensor,
    *,
    temperature: float | Tensor = 0.05,
    symmetric: bool = False,
) -> Tensor:
    """InfoNCE of ``queries [B, d]`` against one shared candidate set ``candidates [C, d]`` with known relevance.

    Query i's positive is candidate ``positive_column[i]``; its negatives are every candidate not in
    ``relevant[i]`` (bool ``[B, C]``, the drawn positive included): documents known to be relevant never count as
    negatives. ``symmetric`` averages this with the reverse direction, where batch document j (candidate
    ``positive_column[j]``) is the anchor, query j its positive and the batch queries it is not relevant to its
    negatives. Mean over anchors.
    """
    logits = similarity_logits(queries, candidates, temperature)
    forward = info_nce_from_logits(logits.gather(1, positive_column.unsqueeze(1)), logits, negative_mask=~relevant)
    if not symmetric:
        return forward
    reverse_logits = logits[:, positive_column].T  # [B docs, B queries]
    reverse_relevant = relevant[:, positive_column].T
    diagonal = torch.arange(len(positive_column), device=logits.device)
    backward = info_nce_from_logits(
        reverse_logits[diagonal, diagonal].unsqueeze(1), reverse_logits, negative_mask=~reverse_relevant
    )
    return 0.5 * (forward + backward)
