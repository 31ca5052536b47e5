"""Soft top-k loss for multi-label retrieval (DEXML; Gupta et al., ICLR 2024, arXiv 2310.10636)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from negkit._validation import (
    check_int,
    check_positive_scalar,
    check_reduction,
    check_similarity,
)
from negkit.losses.functional.core import mean_over_positives, reduce_loss, similarity_logits, skip_anchors
from negkit.losses.functional.decoupled import check_query_items


def _excess(x: Tensor, k: float) -> Tensor:
    """``Σ_l σ(x_l) − k`` without rounding its small terms away: each ``σ(x) = 1 − σ(−x)`` with ``x > 0`` is
    split into an exact count and a small tail, so that a mass that differs from ``k`` by ``1e-18`` (saturated
    rows at low temperature) still has the right sign in float32."""
    tail = torch.sigmoid(-x.abs())
    count = (x > 0).sum(dim=-1).to(x.dtype) - k
    return count + torch.where(x > 0, -tail, tail).sum(dim=-1)


def _bisect(scores: Tensor, k: float, alpha: float, n_iter: int) -> Tensor:
    """``t [B]`` with ``Σ_l σ(α(s_il + t_i)) = k`` by ``n_iter`` bisection steps (no gradient).

    The bracket is exact: at ``t = −max_l s_il + logit(k/N)/α`` every term is at most ``k/N`` (the sum is ≤ k),
    at ``t = −min_l s_il + logit(k/N)/α`` every term is at least ``k/N`` (the sum is ≥ k); the sum increases
    with ``t``. Its width is the row's score range, halved ``n_iter`` times.
    """
    with torch.no_grad():
        items = scores.shape[-1]
        shift = (torch.logit(torch.tensor(k / items, dtype=torch.float64)) / alpha).item()
        low = shift - scores.amax(dim=-1)
        high = shift - scores.amin(dim=-1)
        for _ in range(n_iter):
            middle = 0.5 * (low + high)
            above = _excess(alpha * (scores + middle.unsqueeze(-1)), k) > 0
            high = torch.where(above, middle, high)
            low = torch.where(above, low, middle)
        return 0.5 * (low + high)


class _SoftTopKThreshold(torch.autograd.Function):
    """``t(s)`` of :func:`_bisect` with the implicit-function gradient.

    From ``Σ_l σ(α(s_il + t_i)) = k``: ``∂t_i/∂s_il = −v_il / Σ_m v_im`` with ``v = σ'(α(s + t))`` (the factor α
    cancels). ``v / Σv`` is computed as a softmax of ``log σ(x) + log σ(−x)``, so saturated rows never divide by
    an underflowed sum.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, k: float, alpha: float, n_iter: int) -> Tensor:
        threshold = _bisect(scores, k, alpha, n_iter)
        ctx.save_for_backward(scores, threshold)
        ctx.alpha = alpha
        return threshold

    @staticmethod
    def backward(ctx: Any, grad_threshold: Tensor) -> tuple[Tensor | None, None, None, None]:
        scores, threshold = ctx.saved_tensors
        x = ctx.alpha * (scores + threshold.unsqueeze(-1))
        share = torch.softmax(F.logsigmoid(x) + F.logsigmoid(-x), dim=-1)
        return -grad_threshold.unsqueeze(-1) * share, None, None, None


def soft_top_k_threshold(scores: Tensor, *, k: float = 5, alpha: float = 2.0, n_iter: int = 32) -> Tensor:
    """The soft top-k threshold ``t [B]`` of scores ``[B,N]``: ``Σ_l σ(α(s_il + t_i)) = k``, by bisection, with
    the implicit-function gradient (``∂t_i/∂s_il = −σ'_il / Σ_m σ'_im``)."""
    return _SoftTopKThreshold.apply(scores, float(k), float(alpha), int(n_iter))


def soft_top_k(
    query: Tensor,
    items: Tensor,
    relevance: Tensor,
    *,
    k: float = 5,
    alpha: float = 2.0,
    temperature: float | Tensor = 0.05,
    n_iter: int = 32,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    """Soft top-k loss (DEXML; Gupta et al., ICLR 2024): make every relevant item one of the query's soft top k.

    With scores ``s_il = sim(query_i, item_l) / T`` over all ``N`` items, the threshold ``t_i`` solves
    ``Σ_l σ(α(s_il + t_i)) = k`` (``n_iter`` bisection steps; the gradient of ``t_i`` is the implicit-function
    one, ``∂t_i/∂s_il = −σ'_il / Σ_m σ'_im``, not autograd through the bisection), and for the relevant items
    ``P_i``::

        ℓ_i = −(1/|P_i|) Σ_{p∈P_i} log σ(α(s_ip + t_i))

    ``σ(α(s_il + t_i))`` is item l's soft membership of the top k: the relevant items are pushed into the top k
    and, through ``t_i``, every item is pushed out in proportion to its ``σ'``, the items near the boundary
    most. Positives do not compete with each other beyond sharing the k slots. Queries without a relevant item
    are skipped (0, left out of the mean; :func:`negkit.losses.count_skipped`); with none left the loss is 0
    with a zero gradient, and in strict mode it raises.

    Args:
        query: ``[B,d]``.
        items: ``[N,d]`` (all labels / documents, or the batch's).
        relevance: ``[B,N]`` 0/1 (or bool) relevance mask.
        k: the soft top-k size, ``0 < k < N`` (DEXML's default 5).
        alpha: steepness α > 0 of the soft membership (2.0).
        temperature: T > 0 (0.05).
        n_iter: bisection steps ≥ 1 (32); ``t`` is within ``(max s − min s) / 2^{n_iter+1}`` of the root.
        similarity: ``"cosine"`` or ``"dot"``.
        reduction: ``"mean"`` over queries with a relevant item | ``"sum"`` | ``"none"`` (``[B]``).

    Raises:
        ValueError: bad shapes or values (``k`` not below the number of items); in strict mode, no query has a
            relevant item.
    """
    check_positive_scalar("temperature", temperature)
    k_value = check_positive_scalar("k", k)
    alpha_value = check_positive_scalar("alpha", alpha)
    n_iter = check_int("n_iter", n_iter, low=1)
    check_reduction(reduction)
    check_similarity(similarity)
    relevant = check_query_items(query, items, relevance)
    if not k_value < items.shape[0]:
        raise ValueError(f"k must be below the number of items ({items.shape[0]}), got {k_value:g}")
    scores = similarity_logits(query, items, temperature, similarity, names="query, items")
    threshold = soft_top_k_threshold(scores, k=k_value, alpha=alpha_value, n_iter=n_iter)
    pairs = -F.logsigmoid(alpha_value * (scores + threshold.unsqueeze(1)))
    rows = mean_over_positives(pairs, relevant)
    skipped = skip_anchors(
        query.shape[0],
        no_positive=rows.num_positives == 0,
        empty="query",
        no_positive_error="soft_top_k: no query has a relevant item in relevance",
    )
    return reduce_loss(rows.loss, reduction, weights=(rows.num_positives > 0).to(rows.loss.dtype), skipped=skipped)
