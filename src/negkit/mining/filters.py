"""False-negative filters over each query's candidates, every removal counted by its reason.

For one block of ``b`` queries the search returned ``D`` candidates per query, best first (``D = range_max`` + the
most documents the identity filters remove for a query of the block, so the window is always complete). In order:

1. **identity** — ``positive``: a known positive of the query (by document id); ``same_text``: a document whose
   normalised text (:func:`negkit.mining.inputs.match_key`) equals the query's or one of its positives'.
2. **rank window** — the remaining candidates are ranked ``0, 1, ...``; ranks ``< range_min`` are removed
   (``rank_window``: the nearest documents, most often unlabelled positives), ranks ``≥ range_max`` are never
   considered. Ranks therefore count documents that *can* be negatives: ``range_min = 0`` starts at the most
   similar non-positive document.
3. **scores** (after an optional cross-encoder rescoring of the window), against ``p``, the query's *lowest*
   positive score (the hardest positive, as in sentence-transformers):

   * ``margin`` (absolute): removed if ``s > p − margin``;
   * ``relative_margin``: removed if ``s > p − |p| · relative_margin`` (NV-Retriever's TopK-PercPos, written so
     that it stays a margin *below* ``p`` when scores are negative: ``p · (1 − m)`` would lie above a negative
     ``p``);
   * ``max_score``: removed if ``s > max_score``.

   A candidate failing several score filters is counted once, under the first in this order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["REASONS", "WindowBlock", "identity_window", "score_filters"]

#: every reason a candidate is removed, in the order the filters run
REASONS = ("positive", "same_text", "rank_window", "margin", "relative_margin", "max_score")


@dataclass
class WindowBlock:
    """The rank window of ``b`` queries.

    Attributes:
        ids: ``[b, W]`` int64 document ids of window ranks ``range_min .. range_max − 1`` (``-1``: none left).
        scores: ``[b, W]`` float32 their scores (``-inf`` for ``-1``).
        keep: ``[b, W]`` bool, what is still a candidate negative.
        removed: candidates removed so far, by reason.
        collisions: ``[b]`` int64, identity-filtered documents among the raw ranks ``range_min .. range_max − 1``
            (what a miner without the identity filters would have had in its window).
        collisions_top_k: ``[b]`` int64, the same among the raw ranks ``range_min .. range_min + k − 1``.
    """

    ids: np.ndarray
    scores: np.ndarray
    keep: np.ndarray
    removed: dict[str, int] = field(default_factory=dict)
    collisions: np.ndarray | None = None
    collisions_top_k: np.ndarray | None = None


def _pair_keys(rows: list[tuple[int, ...]], stride: int) -> np.ndarray:
    """Sorted ``row · stride + doc`` keys of the per-row document tuples."""
    keys = [r * stride + np.asarray(docs, dtype=np.int64) for r, docs in enumerate(rows) if docs]
    return np.sort(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)


def identity_window(
    ids: np.ndarray,
    scores: np.ndarray,
    positives: list[tuple[int, ...]],
    same_text: list[tuple[int, ...]],
    *,
    range_min: int,
    range_max: int,
    k: int,
    num_documents: int,
) -> WindowBlock:
    """Steps 1 and 2 of the module docstring for candidates ``ids``/``scores`` ``[b, D]`` (best first) of a corpus
    of ``num_documents``; ``positives``/``same_text`` hold each query's document tuples."""
    b, depth = ids.shape
    stride = num_documents + 1
    row_keys = np.arange(b, dtype=np.int64)[:, None] * stride + np.maximum(ids, 0)
    valid = ids >= 0
    is_positive = valid & np.isin(row_keys, _pair_keys(positives, stride))
    is_same = valid & ~is_positive & np.isin(row_keys, _pair_keys(same_text, stride))
    eligible = valid & ~is_positive & ~is_same
    rank = np.cumsum(eligible, axis=1) - 1
    skipped = eligible & (rank < range_min)
    inside = eligible & (rank >= range_min) & (rank < range_max)

    width = range_max - range_min
    window_ids = np.full((b, width), -1, dtype=np.int64)
    window_scores = np.full((b, width), -np.inf, dtype=np.float32)
    rows, columns = np.nonzero(inside)
    slots = rank[rows, columns] - range_min
    window_ids[rows, slots] = ids[rows, columns]
    window_scores[rows, slots] = scores[rows, columns]

    excluded = is_positive | is_same
    raw_hi = min(range_max, depth)
    collisions = excluded[:, range_min:raw_hi].sum(axis=1).astype(np.int64)
    collisions_top_k = excluded[:, range_min : min(range_min + k, depth)].sum(axis=1).astype(np.int64)
    removed = {
        "positive": int(is_positive.sum()),
        "same_text": int(is_same.sum()),
        "rank_window": int(skipped.sum()),
    }
    return WindowBlock(window_ids, window_scores, window_ids >= 0, removed, collisions, collisions_top_k)


def score_filters(
    block: WindowBlock,
    positive_floor: np.ndarray,
    *,
    margin: float | None = None,
    relative_margin: float | None = None,
    max_score: float | None = None,
) -> WindowBlock:
    """Step 3 of the module docstring, in place on ``block.keep``; ``positive_floor [b]`` is ``p`` per query."""
    p = np.asarray(positive_floor, dtype=np.float64)[:, None]
    s = block.scores.astype(np.float64)
    rules: list[tuple[str, np.ndarray]] = []
    if margin is not None:
        rules.append(("margin", s > p - margin))
    if relative_margin is not None:
        rules.append(("relative_margin", s > p - np.abs(p) * relative_margin))
    if max_score is not None:
        rules.append(("max_score", s > max_score))
    for reason, fails in rules:
        hit = block.keep & fails
        block.removed[reason] = block.removed.get(reason, 0) + int(hit.sum())
        block.keep &= ~hit
    return block
