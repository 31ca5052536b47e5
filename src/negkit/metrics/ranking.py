"""Query → document ranking metrics for dual-encoder retrieval: Recall@k (hit rate), MRR@10 and nDCG@10.

Each query is ranked against the *full* document corpus; the relevance judgements are binary and given per
query as the set of relevant document ids (one or several). Work is done ``chunk_size`` queries at a time, so
memory is ``O(chunk_size · D)`` and never ``Q × D``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from negkit._validation import check_similarity, check_tensor
from negkit.metrics._common import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_embeddings,
    check_int,
    check_same_dim,
    chunks,
    normalise,
)


class Relevance(NamedTuple):
    """Binary relevance judgements in compressed sparse row form.

    The relevant documents of query ``i`` are ``doc_ids[offsets[i]:offsets[i + 1]]``.

    Attributes:
        offsets: ``[Q + 1]`` int64, non-decreasing, ``offsets[0] == 0`` and ``offsets[-1] == len(doc_ids)``.
        doc_ids: ``[nnz]`` int64 document ids in ``[0, D)``, distinct within a query.
    """

    offsets: Tensor
    doc_ids: Tensor

    @classmethod
    def from_lists(cls, relevant: Sequence[Sequence[int] | Tensor]) -> Relevance:
        """Build from one sequence of document ids per query (e.g. ``RetrievalData.relevant``)."""
        if isinstance(relevant, str | bytes | Tensor) or not isinstance(relevant, Sequence):
            raise ValueError(
                "relevant must be a sequence with one sequence of document ids per query, "
                f"got {type(relevant).__name__}"
            )
        lengths: list[int] = []
        flat: list[object] = []
        for i, ids in enumerate(relevant):
            if isinstance(ids, Tensor):
                if ids.dim() != 1:
                    raise ValueError(
                        f"relevant[{i}] must be a 1-D tensor of document ids, got shape {tuple(ids.shape)}"
                    )
                if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                    raise ValueError(f"relevant[{i}] must hold integer document ids, got dtype {ids.dtype}")
                ids = ids.tolist()
            elif isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
                raise ValueError(f"relevant[{i}] must be a sequence of document ids, got {type(ids).__name__}")
            ids = list(ids)
            for value in ids:
                if isinstance(value, bool) or not hasattr(value, "__index__"):
                    raise ValueError(f"relevant[{i}] must hold integer document ids, got {value!r}")
            lengths.append(len(ids))
            flat.extend(int(value) for value in ids)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
        return cls(offsets, torch.tensor(flat, dtype=torch.int64))


def query_document_metrics(
    query_embeddings: Tensor,
    document_embeddings: Tensor,
    relevant: Sequence[Sequence[int] | Tensor] | Relevance,
    *,
    ks: Sequence[int] = (1, 10),
    cutoff: int = 10,
    similarity: str = "cosine",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """Rank the full corpus for every query and average binary-relevance metrics over the queries.

    For query ``q`` let ``d_1, d_2, ...`` be all ``D`` documents sorted by decreasing similarity to ``q``,
    ``rel(i) = 1`` if ``d_i`` is relevant to ``q`` (else 0) and ``R ≥ 1`` the number of relevant documents.
    Averaged over all ``Q`` queries:

    * ``recall@{k}``: ``1`` if ``Σ_{i≤k} rel(i) ≥ 1`` else ``0``: the share of queries with at least one relevant
      document in the top ``k`` (also called success@k or hit rate; equals textbook recall when ``R = 1``);
    * ``recall_fraction@{k}``: ``(1/R) Σ_{i≤k} rel(i)``: the share of the query's relevant documents found in the
      top ``k`` (the IR textbook recall@k; it cannot reach 1 when ``R > k``);
    * ``mrr@{cutoff}``: ``1/i*`` for the rank ``i*`` of the first relevant document if ``i* ≤ cutoff``, else 0;
    * ``ndcg@{cutoff}``: ``DCG / IDCG`` with ``DCG = Σ_{i≤cutoff} rel(i) / log2(i + 1)`` and
      ``IDCG = Σ_{i≤min(R, cutoff)} 1 / log2(i + 1)`` (all ``R`` relevant documents ranked first).

    A ``k`` or ``cutoff`` larger than ``D`` is the same as ``D`` (the whole ranking). Equal similarities are
    ordered as ``torch.topk`` returns them; use embeddings without exact ties for reproducible numbers.

    Similarity is cosine (rows L2-normalised inside) or, with ``similarity="dot"``, the raw inner product (each query,
    and the documents together, divided by a power of two first: rankings are unchanged, and inputs ``× 1e30`` or
    ``× 1e-30`` neither overflow nor underflow to ties).
    Half-precision inputs are computed in float32. Queries are processed ``chunk_size`` at a time: per chunk one
    ``[chunk_size, D]`` similarity block and one ``[chunk_size, D]`` relevance mask are held, never ``Q × D``.

    Args:
        query_embeddings: ``[Q, d]`` floating, finite (for cosine: no all-zero row), ``Q >= 1``.
        document_embeddings: ``[D, d]``, same dtype and device as the queries, ``D >= 1``.
        relevant: for each of the ``Q`` queries a non-empty sequence (or 1-D integer tensor) of distinct document
            ids in ``[0, D)``; or a :class:`Relevance` (CSR) structure.
        ks: non-empty sequence of ``k >= 1`` for the ``recall@k`` metrics.
        cutoff: rank cutoff of MRR and nDCG, ``>= 1``.
        similarity: ``"cosine"`` or ``"dot"``.
        chunk_size: queries per similarity block, ``>= 1``.

    Returns:
        ``{"recall@{k}": ..., "recall_fraction@{k}": ... for k in ks, "mrr@{cutoff}": ..., "ndcg@{cutoff}": ...}``,
        Python floats in ``[0, 1]``.

    Raises:
        ValueError: bad shapes, dtypes, devices or values (non-finite entries, zero rows for cosine); a query
            with no relevant document; an out-of-range or repeated document id; a bad ``k``, ``cutoff``,
            ``similarity`` or ``chunk_size``.
    """
    check_similarity(similarity)
    cosine = similarity == "cosine"
    queries = check_embeddings("query_embeddings", query_embeddings, cosine=cosine)
    # shape and device before values, so that a document matrix on another device is named as such
    check_same_dim(
        "document_embeddings",
        check_tensor("document_embeddings", document_embeddings, 2, finite=False),
        "query_embeddings",
        queries,
    )
    documents = check_embeddings("document_embeddings", document_embeddings, cosine=cosine)
    if documents.dtype != queries.dtype:
        raise ValueError(
            f"document_embeddings has dtype {documents.dtype} but query_embeddings has dtype {queries.dtype}; "
            "cast them to the same dtype"
        )
    num_queries, num_documents = queries.shape[0], documents.shape[0]
    offsets, doc_ids = _check_relevance(relevant, num_queries, num_documents)
    ks = _check_ks(ks)
    cutoff = check_int("cutoff", cutoff, low=1)
    chunk_size = check_chunk_size(chunk_size)

    dtype = torch.float64 if queries.dtype == torch.float64 else torch.float32
    device = queries.device
    offsets, doc_ids = offsets.to(device), doc_ids.to(device)
    num_relevant = offsets[1:] - offsets[:-1]  # [Q] R per query
    row_of = torch.repeat_interleave(torch.arange(num_queries, device=device), num_relevant)  # [nnz] query of entry
    documents = normalise(documents, dtype) if similarity == "cosine" else _power_of_two_scaled(documents.to(dtype))

    depth = min(max(max(ks), cutoff), num_documents)
    rank_cut = min(cutoff, num_documents)
    rank = torch.arange(1, depth + 1, device=device, dtype=torch.float64)  # i
    discount = 1.0 / torch.log2(rank + 1.0)  # [depth] 1/log2(i+1)
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64, device=device), discount[:rank_cut].cumsum(0)])

    hits = dict.fromkeys(ks, 0.0)
    fractions = dict.fromkeys(ks, 0.0)
    mrr_sum = 0.0
    ndcg_sum = 0.0
    for start, stop in chunks(num_queries, chunk_size):
        block = queries[start:stop]
        block = normalise(block, dtype) if similarity == "cosine" else _power_of_two_scaled(block.to(dtype), rows=True)
        sims = block @ documents.T  # [c, D]
        if similarity == "dot" and not bool(torch.isfinite(sims).all()):
            raise ValueError(
                f"similarity='dot' of query_embeddings and document_embeddings overflows {sims.dtype}; scale them "
                "down or use similarity='cosine'"
            )
        top_idx = torch.topk(sims, depth, dim=1).indices  # [c, depth], most similar first
        del sims
        lo, hi = int(offsets[start]), int(offsets[stop])
        mask = torch.zeros(stop - start, num_documents, dtype=torch.bool, device=device)  # [c, D] relevance
        mask[row_of[lo:hi] - start, doc_ids[lo:hi]] = True
        rel = mask.gather(1, top_idx)  # [c, depth] rel(i)
        del mask
        r = num_relevant[start:stop].to(torch.float64)  # [c]
        found = rel.to(torch.float64).cumsum(dim=1)  # [c, depth] Σ_{j≤i} rel(j)
        for k in ks:
            found_k = found[:, min(k, depth) - 1]  # [c] Σ_{i≤k} rel(i)
            hits[k] += float((found_k > 0).sum())
            fractions[k] += float((found_k / r).sum())
        rel_cut = rel[:, :rank_cut]
        first = torch.where(rel_cut.any(dim=1), rel_cut.to(torch.int8).argmax(dim=1) + 1, 0)  # [c] i*, 0: none
        mrr_sum += float(torch.where(first > 0, 1.0 / first.clamp(min=1).to(torch.float64), 0.0).sum())
        dcg = (rel_cut.to(torch.float64) * discount[:rank_cut]).sum(dim=1)  # [c]
        idcg = ideal[num_relevant[start:stop].clamp(max=rank_cut)]  # [c]
        ndcg_sum += float((dcg / idcg).sum())

    result: dict[str, float] = {}
    for k in ks:
        result[f"recall@{k}"] = hits[k] / num_queries
    for k in ks:
        result[f"recall_fraction@{k}"] = fractions[k] / num_queries
    result[f"mrr@{cutoff}"] = mrr_sum / num_queries
    result[f"ndcg@{cutoff}"] = ndcg_sum / num_queries
    return result


def _power_of_two_scaled(x: Tensor, *, rows: bool = False) -> Tensor:
    """``x`` divided by the power of two nearest its largest absolute entry (per row with ``rows``, else one
    scale for the whole matrix). A dot-product ranking is unchanged by a positive scale of a query, or of every
    document at once, and a power of two is exact, so ordinary inputs give the very same scores while inputs
    ``× 1e30`` or ``× 1e-30`` no longer overflow or underflow to ties."""
    largest = x.abs().amax(dim=1, keepdim=True) if rows else x.abs().amax().reshape(1, 1)
    exponent = torch.frexp(torch.where(largest > 0, largest, torch.ones_like(largest))).exponent
    return torch.ldexp(x, -exponent.to(x.dtype))


def _check_relevance(relevant: object, num_queries: int, num_documents: int) -> tuple[Tensor, Tensor]:
    """Validate ``relevant`` against ``Q`` queries and ``D`` documents; return CSR ``(offsets, doc_ids)``."""
    if not isinstance(relevant, Relevance):
        relevant = Relevance.from_lists(relevant)  # type: ignore[arg-type]
    offsets, doc_ids = relevant
    for name, t in (("relevant.offsets", offsets), ("relevant.doc_ids", doc_ids)):
        if not isinstance(t, Tensor) or t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    offsets, doc_ids = offsets.long().cpu(), doc_ids.long().cpu()
    if offsets.numel() != num_queries + 1:
        raise ValueError(
            f"relevant must give one entry per query: {num_queries} queries but {offsets.numel() - 1} relevance entries"
        )
    if int(offsets[0]) != 0 or int(offsets[-1]) != doc_ids.numel():
        raise ValueError(f"relevant.offsets must start at 0 and end at len(doc_ids) = {doc_ids.numel()}")
    lengths = offsets[1:] - offsets[:-1]
    if bool((lengths < 0).any()):
        raise ValueError("relevant.offsets must be non-decreasing")
    if bool((lengths == 0).any()):
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(
            f"every query needs at least one relevant document; {len(empty)} have none (first: query {empty[0]})"
        )
    if doc_ids.numel() and (int(doc_ids.min()) < 0 or int(doc_ids.max()) >= num_documents):
        bad = torch.nonzero((doc_ids < 0) | (doc_ids >= num_documents)).flatten()
        query = int(torch.searchsorted(offsets, bad[0], right=True)) - 1
        raise ValueError(
            f"relevant document ids must lie in [0, {num_documents}) (the number of documents); "
            f"query {query} has id {int(doc_ids[bad[0]])}"
        )
    rows = torch.repeat_interleave(torch.arange(num_queries), lengths)
    keys = (rows * num_documents + doc_ids).sort().values
    repeated = keys[1:] == keys[:-1]
    if bool(repeated.any()):
        key = int(keys[1:][repeated][0])
        raise ValueError(
            f"relevant ids must be distinct per query; query {key // num_documents} repeats {key % num_documents}"
        )
    return offsets, doc_ids


def _check_ks(ks: object) -> list[int]:
    """Validate ``ks``; return its distinct values in the given order."""
    if isinstance(ks, str | bytes) or not isinstance(ks, Iterable) or (isinstance(ks, Tensor) and ks.dim() != 1):
        raise ValueError(f"ks must be a sequence of ints such as (1, 10), got {ks!r}")
    ks = list(ks)
    if len(ks) == 0:
        raise ValueError("ks must contain at least one k")
    checked = [check_int("ks entries", k, low=1) for k in ks]
    return list(dict.fromkeys(checked))
