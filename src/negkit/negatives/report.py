"""``negative_report``: what the negatives a sampler chose look like (no peer library reports this).

For each anchor and each of its sampled negatives it measures how often the negative is a *false* negative
(shares the anchor's label), how similar it is compared with the anchor's positive, and how hard it is: its
rank among all the anchor's eligible pool rows (0 = the most similar row).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from negkit._validation import check_compatible, check_features, check_ids, check_int, check_labels, normalize_rows
from negkit.negatives.types import Negatives

#: Edges of the hardness histogram over the rank percentile (rank / eligible rows), in [0, 1].
RANK_EDGES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class NegativeReport:
    """Summary of sampled negatives. Similarities are cosine.

    Attributes:
        false_negative_rate: share of (anchor, negative) pairs whose negative has the anchor's label (None
            without labels).
        negative_similarity: quantiles (10 %, 50 %, 90 %) and mean of s(anchor, negative).
        positive_similarity: mean s(anchor, positive) (None without positives).
        above_positive: share of negatives scoring at least as high as the anchor's positive (None without).
        rank_percentile_median: median of rank / eligible rows (0 = hardest).
        rank_histogram: share of negatives per rank-percentile bin of ``RANK_EDGES``.
    """

    false_negative_rate: float | None
    negative_similarity: dict[str, float]
    positive_similarity: float | None
    above_positive: float | None
    rank_percentile_median: float
    rank_histogram: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def negative_report(
    anchors: Tensor,
    pool: Tensor,
    negatives: Negatives | Tensor,
    *,
    anchor_labels: Tensor | None = None,
    pool_labels: Tensor | None = None,
    positives: Tensor | None = None,
    anchor_ids: Tensor | None = None,
    pool_ids: Tensor | None = None,
    chunk_size: int = 2048,
) -> NegativeReport:
    """Describe the negatives ``negatives`` (``Negatives`` or ``indices [B, K]`` into ``pool [N, d]``).

    Ranks count, for each sampled negative, the eligible pool rows (the anchor's own id excluded) that are
    more similar to the anchor; they are computed chunk by chunk, never as a ``[B, N]`` matrix.

    Raises:
        ValueError: bad shapes, dtypes or non-finite values; ``negatives`` that are not integer indices into
            ``[0, N)`` (``-1`` placeholders included); labels, ids or positives of the wrong length; nothing to
            report (no anchor or no negative).
    """
    check_features("anchors", anchors, 2)
    check_features("pool", pool, 2)
    check_compatible("anchors", anchors, pool=pool)
    if pool.shape[1] != anchors.shape[1]:
        raise ValueError(f"pool must have {anchors.shape[1]} features like anchors, got {pool.shape[1]}")
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    indices = negatives.indices if isinstance(negatives, Negatives) else negatives
    if not isinstance(indices, Tensor) or indices.dim() != 2 or indices.shape[0] != anchors.shape[0]:
        shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(f"negatives must index the pool with shape [{anchors.shape[0]}, K], got {shape}")
    check_ids("negatives", indices.reshape(-1))
    if indices.numel() == 0:
        raise ValueError(f"negatives is empty (shape {tuple(indices.shape)}): there is nothing to report")
    if int(indices.min()) < 0 or int(indices.max()) >= pool.shape[0]:
        raise ValueError(
            f"negatives must index rows of the pool, in [0, {pool.shape[0]}), got values in "
            f"[{int(indices.min())}, {int(indices.max())}]"
        )
    rows, size = anchors.shape[0], pool.shape[0]
    if (anchor_labels is None) != (pool_labels is None):
        raise ValueError("give both anchor_labels and pool_labels, or neither")
    if anchor_labels is not None:
        anchor_labels = check_labels("anchor_labels", anchor_labels, rows, anchors.device)
        pool_labels = check_labels("pool_labels", pool_labels, size, anchors.device)
    if (anchor_ids is None) != (pool_ids is None):
        raise ValueError("give both anchor_ids and pool_ids, or neither")
    if anchor_ids is not None:
        check_ids("anchor_ids", anchor_ids, rows)
        check_ids("pool_ids", pool_ids, size)
    if positives is not None:
        check_features("positives", positives, 2)
        if positives.shape != anchors.shape:
            raise ValueError(
                f"positives must have the shape of anchors {tuple(anchors.shape)}, got {tuple(positives.shape)}"
            )
    a = normalize_rows(anchors.detach().float(), dim=1)
    p = normalize_rows(pool.detach().float(), dim=1)
    # Gather each negative's similarity from the same chunked products used for the ranks, so that a negative is
    # never counted as more similar than itself through rounding differences between two kernels.
    negative_sims = torch.zeros(indices.shape)
    for start in range(0, pool.shape[0], chunk_size):
        stop = min(start + chunk_size, pool.shape[0])
        inside = (indices >= start) & (indices < stop)
        local = (indices - start).clamp(0, stop - start - 1)
        negative_sims = torch.where(inside, (a @ p[start:stop].T).gather(1, local), negative_sims)

    fnr = None
    if anchor_labels is not None and pool_labels is not None:
        fnr = float((pool_labels[indices] == anchor_labels.unsqueeze(1)).double().mean())
    positive_mean = above = None
    if positives is not None:
        positive_sims = (a * normalize_rows(positives.detach().float(), dim=1)).sum(dim=1)
        positive_mean = float(positive_sims.mean())
        above = float((negative_sims >= positive_sims.unsqueeze(1)).double().mean())

    higher = torch.zeros(indices.shape, dtype=torch.long)
    eligible = torch.zeros(anchors.shape[0], dtype=torch.long)
    rows_per_step = max(1, chunk_size // max(1, indices.shape[1]))
    for start in range(0, pool.shape[0], chunk_size):
        stop = min(start + chunk_size, pool.shape[0])
        sims = a @ p[start:stop].T  # [B, c]
        mask = torch.ones_like(sims, dtype=torch.bool)
        if anchor_ids is not None and pool_ids is not None:
            mask = anchor_ids.unsqueeze(1) != pool_ids[start:stop].unsqueeze(0)
        eligible += mask.sum(dim=1)
        for row in range(0, anchors.shape[0], rows_per_step):  # [r, K, c] comparisons stay small
            block = slice(row, row + rows_per_step)
            beats = (sims[block].unsqueeze(1) > negative_sims[block].unsqueeze(2)) & mask[block].unsqueeze(1)
            higher[block] += beats.sum(dim=2)
    percentile = higher.double() / (eligible.unsqueeze(1).double() - 1).clamp(min=1)
    histogram = {}
    for lo, hi in itertools.pairwise(RANK_EDGES):
        inside = (percentile >= lo) & ((percentile < hi) if hi < 1.0 else (percentile <= hi))
        histogram[f"{lo:g}-{hi:g}"] = float(inside.double().mean())
    quantiles = torch.quantile(negative_sims.flatten().double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return NegativeReport(
        false_negative_rate=fnr,
        negative_similarity={
            "q10": float(quantiles[0]),
            "median": float(quantiles[1]),
            "q90": float(quantiles[2]),
            "mean": float(negative_sims.mean()),
        },
        positive_similarity=positive_mean,
        above_positive=above,
        rank_percentile_median=float(percentile.median()),
        rank_histogram=histogram,
    )
