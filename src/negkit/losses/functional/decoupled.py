"""Decoupled losses: the positive leaves the denominator (DCL/DCLW) or competes only with negatives (DEXML)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_features,
    check_mask,
    check_pair,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    check_tensor,
)
from negkit.losses.functional.core import (
    fold_skipped_views,
    nce_rows,
    reduce_loss,
    similarity_logits,
    skip_anchors,
    view_pair_logits,
)


def check_two_views(z1: Tensor, z2: Tensor) -> None:
    """Check two ``[B,d]`` views of the same samples."""
    check_pair(z1, z2, ("z1", "z2"))


def dcl(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    sigma: float | None = None,
    detach_weights: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Decoupled contrastive loss (Yeh et al., ECCV 2022, Eq. 6), single log-sum-exp form.

    With views stacked as ``Z = [z1; z2]`` and ``i'`` the other view of row ``i``::

        ℓ_i = −w_i · s_{ii'}/T + log Σ_{j ∉ {i, i'}} e^{s_ij/T}

    Which negatives anchor ``i`` sees: all ``2B − 2`` other views in the batch; the positive is *not* in
    the denominator (this removes the negative-positive coupling). ``w_i = 1`` for DCL; with ``sigma``,
    DCLW's von Mises–Fisher weight ``w_i = 2 − B · softmax_i(s_{ii'}/σ)`` (softmax over the batch).
    The loss is symmetric: each sample's value averages its two views as anchors.
    A batch of one sample (or none) has no negative: its loss is 0 with a zero gradient, and its two views
    count as skipped anchors (:func:`negkit.losses.count_skipped`); in strict mode it raises.

    Args:
        z1, z2: ``[B,d]`` two views; cosine similarity.
        temperature: T > 0.
        sigma: DCLW's σ > 0, or ``None`` for DCL.
        detach_weights: stop the gradient through the DCLW weights (lightly does, the single-LSE
            reference does not).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_two_views(z1, z2)
    pairs = view_pair_logits(z1, z2, temperature)
    rows_index = torch.arange(pairs.logits.shape[0], device=z1.device)
    positive_logits = pairs.logits[rows_index, pairs.partner].unsqueeze(1)
    negative_mask = pairs.not_self.clone()
    negative_mask[rows_index, pairs.partner] = False
    scale = None
    if sigma is not None:
        sigma_value = check_positive_scalar("sigma", sigma)
        cosine = similarity_logits(z1, z2.unsqueeze(1), 1.0).squeeze(1)
        weights = 2.0 - z1.shape[0] * torch.softmax(cosine / sigma_value, dim=0)
        if detach_weights:
            weights = weights.detach()
        scale = torch.cat([weights, weights]).unsqueeze(1)
    rows = nce_rows(
        positive_logits, pairs.logits, negative_mask=negative_mask, include_positive=False, positive_scale=scale
    )
    skipped = skip_anchors(
        2 * z1.shape[0], no_negative=rows.no_negative, context="a batch of one sample has no other views", empty="z1"
    )
    per_sample, skipped = fold_skipped_views(rows.loss, skipped)
    return reduce_loss(per_sample, reduction, skipped=skipped)


def check_query_items(query: Tensor, items: Tensor, relevance: Tensor) -> Tensor:
    """Check the multi-label inputs ``query [B, d]``, ``items [N, d]``, ``relevance [B, N]`` (0/1 or bool) shared
    by :func:`decoupled_softmax` and :func:`negkit.losses.soft_top_k`; return ``relevance`` as a bool mask."""
    check_features("query", query, 2)
    check_tensor("items", items, 2)
    check_compatible("query", query, items=items)
    if items.shape[1] != query.shape[1]:
        raise ValueError(f"items must have {query.shape[1]} features like query, got {items.shape[1]}")
    return check_mask("relevance", relevance, (query.shape[0], items.shape[0]), query.device)


def decoupled_softmax(
    query: Tensor,
    items: Tensor,
    relevance: Tensor,
    *,
    temperature: float | Tensor = 0.05,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    """Decoupled softmax for multi-label retrieval (DEXML; Gupta et al., ICLR 2024).

    For query ``i`` with relevant items ``P_i`` (``relevance[i] == 1``)::

        ℓ_i = −(1/|P_i|) Σ_{p∈P_i} log( e^{s_ip/T} / ( e^{s_ip/T} + Σ_{n∉P_i} e^{s_in/T} ) )

    Which negatives query ``i`` sees: every non-relevant item; each positive competes only against them,
    never against the other positives. Queries without a relevant item, and queries to which every item is
    relevant, are skipped: 0 and left out of the mean (:func:`negkit.losses.count_skipped`); with none left
    the loss is 0 with a zero gradient. In strict mode a query with no non-relevant item, or no relevant item
    at all, raises.

    Args:
        query: ``[B,d]``.
        items: ``[N,d]`` (all labels / documents, or the batch's).
        relevance: ``[B,N]`` 0/1 (or bool) relevance mask.
        temperature: T > 0 (DEXML uses 0.05).
        similarity: ``"cosine"`` or ``"dot"``.
        reduction: ``"mean"`` over queries with a positive | ``"sum"`` | ``"none"`` (``[B]``).

    Raises:
        ValueError: bad shapes or values; in strict mode, no query has a relevant item, or a query has no
            non-relevant item.
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_similarity(similarity)
    relevant = check_query_items(query, items, relevance)
    logits = similarity_logits(query, items, temperature, similarity, names="query, items")
    rows = nce_rows(logits, logits, positive_mask=relevant, negative_mask=~relevant, include_positive=True)
    skipped = skip_anchors(
        query.shape[0],
        no_negative=rows.no_negative,
        no_positive=rows.num_positives == 0,
        context="every item is relevant to them",
        empty="query",
        no_positive_error="decoupled_softmax: no query has a relevant item in relevance",
    )
    return reduce_loss(rows.loss, reduction, weights=(rows.num_positives > 0).to(rows.loss.dtype), skipped=skipped)
