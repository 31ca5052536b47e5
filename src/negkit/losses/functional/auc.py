"""The Mann–Whitney (AUC) loss: every positive against every negative of its query, pair by pair."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from negkit._validation import check_mask, check_reduction, check_tensor
from negkit.losses.functional.core import compute_dtype, positive_nll, reduce_loss, skip_anchors

#: Pairs ``[rows, N, N]`` materialised at once; larger inputs are processed in row chunks that are
#: recomputed in the backward pass, so memory stays O(_PAIR_BUDGET) whatever the number of queries.
_PAIR_BUDGET = 1 << 22


def mw_auc(scores: Tensor, relevance: Tensor, *, reduction: str = "mean") -> Tensor:
    """Mann–Whitney loss (Sheikholeslami et al., arXiv 2510.00137): a smooth upper bound on 1 − AUC.

    For query ``i`` with relevant items ``P_i`` and non-relevant items ``N_i``::

        ℓ_i = (1/(|P_i|·|N_i|)) Σ_{p∈P_i} Σ_{n∈N_i} softplus(−(s_ip − s_in))

    i.e. the binary cross-entropy of ranking ``p`` above ``n``; ``1{s_p ≤ s_n} ≤ softplus(−(s_p − s_n)) / ln 2``,
    so ``ℓ_i / ln 2`` bounds the query's AoC. Each pair is the negkit core with a single negative:
    ``softplus(s_n − s_p) = logaddexp(s_p, s_n) − s_p``.

    Which negatives query ``i`` sees: every non-relevant column of its row. ``scores`` are used as given
    (no temperature): pass ``sim / T`` to sharpen. Queries without a relevant item, or without a non-relevant
    one, are skipped: 0, left out of the mean, counted by :func:`negkit.losses.count_skipped`; with none left
    the loss is 0 with a zero gradient. In strict mode they raise.

    Args:
        scores: ``[B,N]`` scores of each query against N candidates (e.g. ``q @ d.T``).
        relevance: ``[B,N]`` 0/1 (or bool).
        reduction: ``"mean"`` over queries with a positive | ``"sum"`` | ``"none"`` (``[B]``).

    Raises:
        ValueError: bad shapes or values, scores whose differences overflow their dtype; in strict mode, no
            query has a relevant item, or a query has no non-relevant item.
    """
    check_reduction(reduction)
    check_tensor("scores", scores, 2)
    relevant = check_mask("relevance", relevance, tuple(scores.shape), scores.device)
    num_pos = relevant.sum(dim=1)
    num_neg = (~relevant).sum(dim=1)
    has_positive = num_pos > 0
    skipped = skip_anchors(
        scores.shape[0],
        no_negative=has_positive & (num_neg == 0),
        no_positive=~has_positive,
        context="every candidate is relevant to them",
        empty="scores",
        no_positive_error="mw_auc: no query has a relevant item in relevance",
    )
    scores = scores.to(compute_dtype(scores.dtype))
    if scores.numel() and not bool(torch.isfinite(scores.detach().max() - scores.detach().min())):
        largest = float(scores.detach().abs().max())
        raise ValueError(f"scores span more than {scores.dtype} can subtract (up to {largest:g}); scale them down")
    rows_per_chunk = max(1, _PAIR_BUDGET // max(1, scores.shape[1] ** 2))
    sums = []
    for start in range(0, scores.shape[0], rows_per_chunk):
        chunk = (scores[start : start + rows_per_chunk], relevant[start : start + rows_per_chunk])
        if scores.requires_grad and scores.shape[0] > rows_per_chunk:
            sums.append(checkpoint(_pair_loss_sums, *chunk, use_reentrant=False))
        else:
            sums.append(_pair_loss_sums(*chunk))
    pair_counts = (num_pos * num_neg).to(scores.dtype)
    per_query = torch.cat(sums) / pair_counts.clamp(min=1) if sums else scores.sum(dim=1)
    return reduce_loss(per_query, reduction, weights=has_positive.to(scores.dtype), skipped=skipped)


def _pair_loss_sums(scores: Tensor, relevant: Tensor) -> Tensor:
    """``[b]`` sum over (positive, negative) pairs of each row of ``softplus(s_n − s_p)``."""
    pairs = positive_nll(scores.unsqueeze(2), scores.unsqueeze(1))  # [b, N(positive), N(negative)]
    pair_mask = relevant.unsqueeze(2) & ~relevant.unsqueeze(1)
    return torch.where(pair_mask, pairs, torch.zeros_like(pairs)).sum(dim=(1, 2))
