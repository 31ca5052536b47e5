"""Label-based retrieval metrics of an embedding: Recall@k, Precision@1, R-Precision and MAP@R.

Definitions follow Musgrave, Belongie and Lim, "A Metric Learning Reality Check" (ECCV 2020, Sec. 3.2), which
are also those of pytorch-metric-learning's ``AccuracyCalculator``; Recall@k is the metric-learning "Recall@k"
of Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding" (CVPR 2016) and later work, that
is, the fraction of queries with at least one same-label reference among their ``k`` nearest neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from negkit.metrics._common import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_class_ids,
    check_embeddings,
    check_int,
    check_same_dim,
    chunks,
    compute_dtype,
    normalise,
)


def retrieval_metrics(
    query_emb: Tensor,
    query_labels: Tensor,
    reference_emb: Tensor | None = None,
    reference_labels: Tensor | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """Cosine retrieval metrics of ``query_emb`` against ``reference_emb``.

    For a query ``q`` let ``r_1, r_2, ...`` be the references sorted by decreasing cosine similarity to ``q``,
    ``rel(i) = 1`` if ``r_i`` has ``q``'s label (else 0), ``P(i) = (1/i) Σ_{j≤i} rel(j)`` and ``R`` the number of
    references with ``q``'s label. Then, averaged over queries:

    * ``recall_at_{k}``: ``1`` if ``Σ_{i≤k} rel(i) ≥ 1`` else ``0`` (the metric-learning Recall@k; all queries);
    * ``precision_at_1``: ``rel(1)`` (all queries);
    * ``r_precision``: ``(1/R) Σ_{i≤R} rel(i)`` (Musgrave et al. 2020, Sec. 3.2; queries with ``R > 0``);
    * ``map_at_r``: ``(1/R) Σ_{i≤R} P(i) · rel(i)`` (Musgrave et al. 2020, Sec. 3.2; queries with ``R > 0``).

    Queries with ``R = 0`` cannot retrieve anything relevant: they count as misses in ``recall_at_{k}`` and
    ``precision_at_1`` and are left out of ``r_precision`` and ``map_at_r``. (pytorch-metric-learning leaves
    them out of ``precision_at_1`` as well, so the two differ when such queries exist.)

    With ``reference_emb=None`` the query set is its own reference, leave-one-out: each query's own row is
    removed from its ranking and ``R`` counts the *other* rows with its label. Equal similarities are ordered
    as ``torch.topk`` returns them; use embeddings without exact ties for reproducible numbers.

    Queries are processed ``chunk_size`` at a time. Per chunk one ``[chunk_size, N_ref]`` similarity block and
    the top-``k'`` indices with ``k' = max(max(ks), max R in the chunk)`` are held; never the full matrix.

    Args:
        query_emb: ``[N_q, d]`` floating, finite, no all-zero row (L2-normalised inside).
        query_labels: ``[N_q]`` non-negative integer class ids.
        reference_emb: ``[N_ref, d]`` or ``None`` (leave-one-out on the queries).
        reference_labels: ``[N_ref]``; given if and only if ``reference_emb`` is.
        ks: non-empty sequence of ``k`` for Recall@k, each ``1 <= k <= N_ref`` (``N_q − 1`` in leave-one-out).
        chunk_size: queries per similarity block, ``>= 1``.

    Returns:
        ``{"recall_at_{k}": ... for k in ks, "precision_at_1": ..., "r_precision": ..., "map_at_r": ...}``,
        all Python floats in ``[0, 1]``.

    Raises:
        ValueError: bad shapes, dtypes or values; mismatched lengths or dimensions; a ``k`` out of range; or no
            query has ``R > 0``.
    """
    query_emb = check_embeddings("query_emb", query_emb)
    query_labels = check_class_ids("query_labels", query_labels, query_emb.shape[0], query_emb.device)
    if (reference_emb is None) != (reference_labels is None):
        missing = "reference_labels" if reference_labels is None else "reference_emb"
        raise ValueError(f"{missing} must be given together with the other reference argument (or both left None)")
    leave_one_out = reference_emb is None
    if leave_one_out:
        if query_emb.shape[0] < 2:
            raise ValueError(
                f"query_emb must have at least 2 rows for leave-one-out retrieval, got {tuple(query_emb.shape)}"
            )
        reference_emb, reference_labels = query_emb, query_labels
    else:
        reference_emb = check_embeddings("reference_emb", reference_emb)
        check_same_dim("reference_emb", reference_emb, "query_emb", query_emb)
        reference_labels = check_class_ids(
            "reference_labels", reference_labels, reference_emb.shape[0], reference_emb.device
        )
    chunk_size = check_chunk_size(chunk_size)
    num_candidates = reference_emb.shape[0] - int(leave_one_out)
    ks = _check_ks(ks, num_candidates, leave_one_out)

    # R for every query: the number of references carrying its label (minus itself in leave-one-out mode).
    classes, counts = torch.unique(reference_labels, sorted=True, return_counts=True)
    position = torch.searchsorted(classes, query_labels).clamp(max=classes.numel() - 1)
    num_relevant = torch.where(classes[position] == query_labels, counts[position], 0) - int(leave_one_out)
    evaluated = num_relevant > 0
    if not bool(evaluated.any()):
        raise ValueError(
            "no query has a same-label reference (R = 0 for every query in query_labels); "
            "r_precision and map_at_r are undefined"
        )

    dtype = compute_dtype(query_emb, reference_emb)
    reference_n = normalise(reference_emb, dtype)
    max_k = max(ks)
    hits = dict.fromkeys(ks, 0)
    precision_at_1 = 0
    r_precision_sum = 0.0
    map_at_r_sum = 0.0
    for start, stop in chunks(query_emb.shape[0], chunk_size):
        sims = normalise(query_emb[start:stop], dtype) @ reference_n.T  # [c, N_ref]
        if leave_one_out:
            rows = torch.arange(stop - start, device=sims.device)
            sims[rows, rows + start] = float("-inf")
        r = num_relevant[start:stop]  # [c]
        depth = max(max_k, int(r.max()))
        top_idx = torch.topk(sims, depth, dim=1).indices  # [c, depth], most similar first
        del sims
        rel = reference_labels[top_idx] == query_labels[start:stop, None]  # [c, depth] rel(i)
        for k in ks:
            hits[k] += int(rel[:, :k].any(dim=1).sum())
        precision_at_1 += int(rel[:, 0].sum())

        rank = torch.arange(1, depth + 1, device=rel.device)  # i
        rel_r = (rel & (rank <= r[:, None])).to(torch.float64)  # rel(i) for i <= R, else 0
        precision_i = rel_r.cumsum(dim=1) / rank  # P(i) for i <= R (cumsum of rel_r equals that of rel there)
        keep = evaluated[start:stop]
        r_keep = r[keep].to(torch.float64)
        r_precision_sum += float((rel_r[keep].sum(dim=1) / r_keep).sum())
        map_at_r_sum += float(((precision_i * rel_r)[keep].sum(dim=1) / r_keep).sum())

    num_queries = query_emb.shape[0]
    num_evaluated = int(evaluated.sum())
    result = {f"recall_at_{k}": hits[k] / num_queries for k in ks}
    result["precision_at_1"] = precision_at_1 / num_queries
    result["r_precision"] = r_precision_sum / num_evaluated
    result["map_at_r"] = map_at_r_sum / num_evaluated
    return result


def _check_ks(ks: object, num_candidates: int, leave_one_out: bool) -> list[int]:
    """Validate ``ks``; return its distinct values in the given order."""
    if isinstance(ks, str | bytes) or not isinstance(ks, Iterable) or (isinstance(ks, Tensor) and ks.dim() != 1):
        raise ValueError(f"ks must be a sequence of ints such as (1, 5, 10), got {ks!r}")
    ks = list(ks)
    if len(ks) == 0:
        raise ValueError("ks must contain at least one k")
    note = "the number of references minus the query itself" if leave_one_out else "the number of references"
    checked = [check_int("ks entries", k, low=1, high=num_candidates, high_note=note) for k in ks]
    return list(dict.fromkeys(checked))
