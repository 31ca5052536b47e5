"""Nearest documents of each query: exact chunked search, or a faiss index.

Every searcher returns, for a block of ``b`` query vectors, the ``k`` highest-scoring documents as
``(scores [b, k] float32, ids [b, k] int64)``, best first, ties broken by the smaller id, ``-1`` / ``-inf`` where
the corpus has fewer than ``k`` documents. Scores are inner products of the vectors as stored, or cosine
similarities (``similarity="cosine"``: every row is L2-normalised as it is read).

Indexes (``--index``):

========  =====================================================================================================
``exact``  chunked matrix product + running top-k (:func:`negkit.negatives.sampling.ranked_window`): corpus rows
           are read ``chunk_size`` at a time from disk, so memory is ``O(b · chunk_size + b · k)``, never
           ``b × N``; no faiss needed.
``flat``   ``faiss.IndexFlatIP``: exact too, and faster than ``exact`` for blocks of many queries; holds the
           corpus in memory (``N · d · 4`` bytes).
``ivf``    ``faiss.IndexIVFFlat``: k-means (10 iterations, seeded) into ``nlist`` lists (default ``4·√N`` rounded
           down to a power of two, in [16, 65536]), trained on ``train_size`` rows (default ``min(N, 40 · nlist)``),
           searching ``nprobe`` lists (default ``max(16, nlist / 64)``). Memory ``N · d · 4`` bytes.
``hnsw``   ``faiss.IndexHNSWFlat``: graph with ``hnsw_m`` links per node (32), ``ef_construction`` (80),
           ``ef_search`` (default ``max(2k, 64)``). Memory ``N · (d · 4 + 2 · hnsw_m · 4)`` bytes; building is
           slow on few cores (``auto`` never picks it).
``ivfpq``  ``faiss.IndexIVFPQ``: as ``ivf``, vectors compressed to ``pq_m`` bytes (default: the largest divisor
           of ``d`` that is ≤ ``d / 2``, two dimensions per sub-quantizer; 8 bits each). Memory
           ``N · (pq_m + 8)`` bytes (1.9 GB for 10⁷ vectors of d = 384, against 15.4 GB of float32). The
           ``refine · k`` best PQ candidates (``refine`` = 16; 0 = off) are re-scored exactly from the vectors on
           disk. Measured on clustered vectors (d = 384, 10⁴ per Gaussian cluster, nlist 2048, nprobe 32, 200
           queries; ``benchmarks/mining.py``): recall@10 with refine 16 / 32 / 64 was 0.82 / 0.92 / 0.98 with
           pq_m 96 (d/4; 0.83 at 10⁷ vectors) and 1.00 / 1.00 / 1.00 with pq_m 192 (d/2); IVF without
           compression 1.00; nprobe up to 128 changed nothing.
``auto``   ``exact`` without faiss; ``flat`` up to 200,000 documents; ``ivf`` while ``N · d · 4`` fits in half
           of ``max_memory``; else ``ivfpq``.
========  =====================================================================================================

The trained approximate indexes are written to the run folder (``index.faiss``) so that a resumed run and the
other ranks of a ``torchrun`` job use the very same index.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from negkit._optional import available, require
from negkit.io import atomic_write
from negkit.mining.encode import NpyRows
from negkit.mining.inputs import MiningError
from negkit.negatives.sampling import Eligibility, PoolView, ranked_window

__all__ = [
    "INDEX_KINDS",
    "IndexOptions",
    "Searcher",
    "build_searcher",
    "choose_index",
    "default_max_memory",
    "index_parameters",
    "normalise_rows",
    "recall_at_k",
]

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "exact", "flat", "ivf", "hnsw", "ivfpq")
APPROXIMATE = ("ivf", "hnsw", "ivfpq")
FLAT_LIMIT = 200_000
KMEANS_ITERATIONS = 10  # faiss's default is 25; 10 loses little on the lists and saves minutes at 10⁷ rows


@dataclass(frozen=True)
class IndexOptions:
    """faiss index parameters; ``None`` means the default of the module docstring."""

    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int | None = None
    pq_m: int | None = None
    pq_bits: int = 8
    refine: int = 16
    train_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_max_memory() -> int:
    """Half of the machine's physical memory, in bytes."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def choose_index(kind: str, n: int, d: int, max_memory: int) -> tuple[str, str]:
    """``(index, why)``: ``kind`` itself, or what ``auto`` picks for ``n`` documents of dimension ``d``."""
    if kind not in INDEX_KINDS:
        raise MiningError(f"unknown index {kind!r}; choose one of: {', '.join(INDEX_KINDS)}")
    if kind != "auto":
        if kind != "exact" and not available("faiss"):
            require("faiss", "faiss", f"the {kind!r} index")
        return kind, "chosen with --index"
    if not available("faiss"):
        return "exact", "faiss is not installed (pip install 'negkit[faiss]')"
    flat_bytes = n * d * 4
    if n <= FLAT_LIMIT:
        return "flat", f"{n:,} documents ≤ {FLAT_LIMIT:,}: exact search with faiss"
    if flat_bytes <= max_memory // 2:
        return "ivf", f"{n:,} documents; the vectors ({flat_bytes / 2**30:.1f} GiB) fit in half of --max-memory"
    return "ivfpq", (
        f"{n:,} documents; the vectors ({flat_bytes / 2**30:.1f} GiB) exceed half of --max-memory "
        f"({max_memory / 2**30:.1f} GiB): compressed"
    )


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ``[n, d]`` scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _ordered(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row sorted by score (highest first), ties by smaller id, padding (``-1``) last with ``-inf``."""
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    ids = ids.astype(np.int64)
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores.astype(np.float64)), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


class Corpus:
    """The corpus vectors as the searchers see them: ``read(start, stop)`` and ``take(rows)``, float32, checked
    for NaN/inf, L2-normalised when ``cosine``."""

    def __init__(self, rows: NpyRows, *, cosine: bool, chunk_size: int = 16384) -> None:
        self.rows, self.cosine, self.chunk_size = rows, cosine, chunk_size
        self.size, self.dim = rows.rows, rows.dim

    def _prepare(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            row = int(rows[int(np.argmin(finite))])
            raise MiningError(f"{self.rows.path}: non-finite values (NaN or inf) in row {row} (0-based)")
        return normalise_rows(x) if self.cosine else np.ascontiguousarray(x, dtype=np.float32)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._prepare(self.rows.read(start, stop), np.arange(start, min(stop, self.size)))

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._prepare(self.rows.take(rows), np.asarray(rows))

    def chunks(self) -> range:
        return range(0, self.size, self.chunk_size)


class Searcher(Protocol):
    """``search(queries [b, d] float32, k) -> (scores [b, k], ids [b, k])``, best first."""

    kind: str

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class ExactSearcher:
    """Chunked exact search over the corpus on disk (see the module docstring)."""

    kind = "exact"

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        corpus = self.corpus

        def logits(start: int, stop: int) -> torch.Tensor:
            return q @ torch.from_numpy(corpus.read(start, stop)).T

        view = PoolView(q.shape[0], corpus.size, logits, Eligibility(), q.device, corpus.chunk_size)
        ids, scores = ranked_window(view, 0, k)
        return _ordered(scores.numpy(), ids.numpy())

    def describe(self) -> dict[str, Any]:
        return {"index": "exact", "chunk_size": self.corpus.chunk_size}


class FaissSearcher:
    """A faiss index over the corpus (built by :func:`build_searcher`)."""

    def __init__(self, kind: str, index: Any, corpus: Corpus, params: dict[str, Any]) -> None:
        self.kind, self.index, self.corpus, self.params = kind, index, corpus, params

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        refine = self.params.get("refine", 0) if self.kind == "ivfpq" else 0
        fetch = min(self.corpus.size, k * refine) if refine else min(self.corpus.size, k)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.params["ef_search"], fetch)
        scores, ids = self.index.search(queries, fetch)
        if refine:
            scores = self._exact_scores(queries, ids)
        scores, ids = _ordered(scores, ids)
        if ids.shape[1] < k:  # the corpus is smaller than k
            pad = k - ids.shape[1]
            scores = np.concatenate([scores, np.full((len(ids), pad), -np.inf, np.float32)], axis=1)
            ids = np.concatenate([ids, np.full((len(ids), pad), -1, np.int64)], axis=1)
        return scores[:, :k], ids[:, :k]

    def _exact_scores(self, queries: np.ndarray, ids: np.ndarray, step: int = 64) -> np.ndarray:
        """Exact scores of the candidates ``ids [b, m]`` (``-inf`` for ``-1``), ``step`` queries at a time."""
        out = np.full(ids.shape, -np.inf, dtype=np.float32)
        for start in range(0, len(ids), step):
            block = ids[start : start + step]
            unique = np.unique(block[block >= 0])
            if unique.size == 0:
                continue
            vectors = self.corpus.take(unique)  # [u, d]
            products = queries[start : start + step] @ vectors.T  # [s, u]
            position = np.searchsorted(unique, np.maximum(block, 0))
            values = np.take_along_axis(products, position, axis=1)
            out[start : start + step] = np.where(block >= 0, values, -np.inf)
        return out

    def describe(self) -> dict[str, Any]:
        return {"index": self.kind, **self.params}


def _resolved_params(kind: str, n: int, d: int, options: IndexOptions, k: int) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if kind in ("ivf", "ivfpq"):
        nlist = options.nlist or int(2 ** math.floor(math.log2(max(16.0, 4 * math.sqrt(n)))))
        nlist = max(1, min(nlist, 65536, n))
        params["nlist"] = nlist
        params["nprobe"] = min(nlist, options.nprobe or max(16, nlist // 64))
        params["train_size"] = min(n, options.train_size or 40 * nlist)
        params["kmeans_iterations"] = KMEANS_ITERATIONS
    if kind == "hnsw":
        params.update(hnsw_m=options.hnsw_m, ef_construction=options.ef_construction)
        params["ef_search"] = options.ef_search or max(2 * k, 64)
    if kind == "ivfpq":
        pq_m = options.pq_m or max(m for m in range(1, max(1, d // 2) + 1) if d % m == 0)
        if d % pq_m:
            raise MiningError(f"pq_m = {pq_m} must divide the dimension {d}")
        params.update(pq_m=pq_m, pq_bits=options.pq_bits, refine=max(0, options.refine))
    return params


def index_parameters(kind: str, corpus: Corpus, options: IndexOptions | None = None, k: int = 10) -> dict[str, Any]:
    """The parameters ``kind`` uses over ``corpus`` (defaults resolved), as :meth:`Searcher.describe` gives them."""
    if kind == "exact":
        return {"index": "exact", "chunk_size": corpus.chunk_size}
    return {"index": kind, **_resolved_params(kind, corpus.size, corpus.dim, options or IndexOptions(), k)}


def _train_rows(corpus: Corpus, size: int, seed: int) -> np.ndarray:
    """``size`` distinct corpus rows chosen with ``seed``, read in sorted order."""
    if size >= corpus.size:
        return np.concatenate([corpus.read(start, start + corpus.chunk_size) for start in corpus.chunks()])
    rows = np.sort(np.random.default_rng(seed).choice(corpus.size, size=size, replace=False))
    return corpus.take(rows)


def build_searcher(
    kind: str,
    corpus: Corpus,
    *,
    options: IndexOptions | None = None,
    k: int = 10,
    index_path: Path | None = None,
    build: bool = True,
    seed: int = 0,
) -> ExactSearcher | FaissSearcher:
    """The searcher of ``kind`` (not ``auto``: see :func:`choose_index`) over ``corpus``.

    Approximate indexes are trained and filled once and written to ``index_path`` (atomically); with
    ``build=False`` (the other ranks, a resumed run) an existing ``index_path`` is read instead.
    """
    if kind == "exact":
        return ExactSearcher(corpus)
    faiss = require("faiss", "faiss", f"the {kind!r} index")
    options = options or IndexOptions()
    n, d = corpus.size, corpus.dim
    params = _resolved_params(kind, n, d, options, k)
    if kind in APPROXIMATE and index_path is not None and index_path.is_file():
        index = faiss.read_index(str(index_path))
        if index.ntotal != n or index.d != d:
            raise MiningError(f"{index_path}: holds {index.ntotal} vectors of dimension {index.d}, expected {n}×{d}")
        logger.info("read the %s index from %s", kind, index_path)
    elif not build:
        raise MiningError(f"{index_path}: the {kind} index is missing")
    else:
        metric = faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, params["hnsw_m"], metric)
            index.hnsw.efConstruction = params["ef_construction"]
        else:
            quantizer = faiss.IndexFlatIP(d)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, params["nlist"], metric)
            else:
                index = faiss.IndexIVFPQ(quantizer, d, params["nlist"], params["pq_m"], params["pq_bits"], metric)
            index.cp.seed = seed
            index.cp.niter = KMEANS_ITERATIONS
            sample = _train_rows(corpus, params["train_size"], seed)
            logger.info("training the %s index on %d rows (nlist %d)", kind, len(sample), params["nlist"])
            index.train(sample)
            del sample
        for start in corpus.chunks():
            index.add(corpus.read(start, start + corpus.chunk_size))
        logger.info("built the %s index over %d documents", kind, n)
        if kind in APPROXIMATE and index_path is not None:
            # streamed in 1 MB pieces: serialize_index would hold two more copies of the index in memory
            atomic_write(index_path, lambda handle: faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write)))
    if kind in ("ivf", "ivfpq"):
        index.nprobe = params["nprobe"]
    return FaissSearcher(kind, index, corpus, params)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over rows of ``|approximate[:, :k] ∩ exact[:, :k]| / |exact[:, :k]|`` (``-1`` ids ignored)."""
    total, found = 0, 0
    for a, e in zip(approximate[:, :k], exact[:, :k], strict=True):
        truth = {int(j) for j in e if j >= 0}
        total += len(truth)
        found += len(truth & {int(j) for j in a if j >= 0})
    return found / total if total else 1.0
