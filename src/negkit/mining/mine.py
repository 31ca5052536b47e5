"""``mine()``: hard negatives for every query of a pairs file, from files to a training file and a report.

Stages (each resumable; the run folder ``OUT`` holds the state in ``OUT/.work``):

1. **read** PAIRS and the corpus (:mod:`negkit.mining.inputs`);
2. **encode** queries and documents into the sharded embedding cache (:mod:`negkit.mining.encode`), unless
   ``query_embeddings`` / ``corpus_embeddings`` give them;
3. **search** each block of ``query_block`` queries for its ``range_max`` + (the most documents the identity
   filters remove for a query of the block) nearest documents (:mod:`negkit.mining.search`); each block is written
   to ``OUT/.work/search/block-NNNNN.npz`` (a killed run resumes at the first missing block). An approximate index
   is measured against exact search on ``recall_sample`` queries;
4. **filter** (:mod:`negkit.mining.filters`), optionally after rescoring the window with a cross-encoder, and
   **sample** ``k`` negatives (:mod:`negkit.mining.sample`; one seeded generator per block);
5. **write** the outputs (:mod:`negkit.mining.outputs`), ``manifest.json`` last, then ``report.md``.

Across processes (``torchrun --nproc_per_node N``; gloo on CPU, NCCL when CUDA is there): a process group is
started from the environment when ``WORLD_SIZE > 1``; rank ``r`` encodes the shards and searches the blocks
``i ≡ r (mod N)``; rank 0 filters, samples and writes. The blocks, shards and seeds do not depend on ``N``, so the
output is byte-identical to one process. ``OUT`` and the cache must be on a file system every rank sees.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from negkit.io import atomic_write, read_json, write_json
from negkit.mining.encode import Callback, NpyRows, encode_cached, encoder_name, open_embeddings
from negkit.mining.filters import REASONS, identity_window, score_filters
from negkit.mining.inputs import MiningError, MiningInput, load_mining_input
from negkit.mining.outputs import FORMATS, Outputs, QueryRecord, remove_outputs, write_documents
from negkit.mining.sample import SAMPLINGS, block_generator, choose_negatives
from negkit.mining.search import (
    APPROXIMATE,
    INDEX_KINDS,
    Corpus,
    ExactSearcher,
    IndexOptions,
    build_searcher,
    choose_index,
    default_max_memory,
    index_parameters,
    normalise_rows,
    recall_at_k,
)

__all__ = ["MiningResult", "MiningSettings", "mine"]

logger = logging.getLogger(__name__)

SHORT_POLICIES = ("skip", "keep", "error")
SIMILARITIES = ("cosine", "dot")
WORK = ".work"
REPORT_SAMPLE = 256  # queries whose negatives negative_report ranks against the whole corpus


@dataclass(frozen=True)
class MiningSettings:
    """Every option of :func:`mine` (validated on construction; see :func:`mine` for their meaning)."""

    query: str = "query"
    positive: str = "positive"
    corpus: str | None = None
    model: str | None = None
    query_embeddings: str | None = None
    corpus_embeddings: str | None = None
    k: int = 5
    range_min: int = 0
    range_max: int | None = None
    margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None
    index: str = "auto"
    max_memory: int | None = None
    index_options: IndexOptions = field(default_factory=IndexOptions)
    sampling: str = "top"
    beta: float = 20.0
    format: str = "sentence-transformers"
    triplets: bool = False
    seed: int = 0
    on_short: str = "skip"
    cross_encoder: str | None = None
    similarity: str = "cosine"
    float16: bool = False
    batch_size: int = 64
    max_seq_length: int = 256
    shard_size: int = 8192
    query_block: int = 1024
    chunk_size: int = 16384
    recall_sample: int = 1000
    shard_rows: int = 100_000
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        def positive_int(name: str, value: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MiningError(f"{name} must be a whole number >= 1, got {value!r}")

        for name in ("k", "batch_size", "max_seq_length", "shard_size", "query_block", "chunk_size", "shard_rows"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.range_min, int) or self.range_min < 0:
            raise MiningError(f"range_min must be a whole number >= 0, got {self.range_min!r}")
        if self.range_max is not None and self.range_max <= self.range_min:
            raise MiningError(f"range_max ({self.range_max}) must be larger than range_min ({self.range_min})")
        if self.window < self.k:
            raise MiningError(
                f"the rank window [{self.range_min}, {self.window_max}) holds {self.window} documents, fewer than "
                f"k = {self.k}: raise --range-max or lower --k"
            )
        for name in ("margin", "relative_margin", "max_score", "beta"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise MiningError(f"{name} must be a finite number, got {value!r}")
        if self.relative_margin is not None and self.relative_margin < 0:
            raise MiningError(f"relative_margin must be >= 0, got {self.relative_margin}")
        choices = {
            "index": INDEX_KINDS,
            "sampling": SAMPLINGS,
            "format": FORMATS,
            "on_short": SHORT_POLICIES,
            "similarity": SIMILARITIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise MiningError(f"unknown {name} {getattr(self, name)!r}; choose one of: {', '.join(allowed)}")
        if self.triplets and self.format != "sentence-transformers":
            raise MiningError("triplets applies to --format sentence-transformers only")
        if self.recall_sample < 0:
            raise MiningError(f"recall_sample must be >= 0, got {self.recall_sample}")
        if self.max_memory is not None and self.max_memory < 1:
            raise MiningError(f"max_memory must be a positive number of bytes, got {self.max_memory}")

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in (self.margin, self.relative_margin, self.max_score, self.cross_encoder))

    @property
    def window_max(self) -> int:
        """``range_max``, or its default: ``range_min + k`` for ``top`` without score filters, else
        ``range_min + 10·k`` (room for the filters and the random draws)."""
        if self.range_max is not None:
            return self.range_max
        plain = self.sampling == "top" and not self.filtered
        return self.range_min + (self.k if plain else 10 * self.k)

    @property
    def window(self) -> int:
        return self.window_max - self.range_min

    def search_key(self, data: MiningInput, embeddings: dict[str, str]) -> dict[str, Any]:
        """What the saved search results depend on (a resumed run must match it)."""
        return {
            "input": data.digest,
            "embeddings": embeddings,
            "similarity": self.similarity,
            "index": self.index,
            "max_memory": self.max_memory,
            "index_options": self.index_options.as_dict(),
            "query_block": self.query_block,
            "range_min": self.range_min,
            "range_max": self.window_max,
            "seed": self.seed,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MiningResult:
    """What :func:`mine` wrote. ``stats`` holds every number of the report (``OUT/stats.json``)."""

    out: Path
    manifest: Path
    report: Path
    stats: dict[str, Any]


# --------------------------------------------------------------------------------------------- processes


def _world() -> tuple[int, int]:
    from negkit.distributed import world

    return world()


def _barrier() -> None:
    if _world()[1] > 1:
        torch.distributed.barrier()


def _start_group() -> bool:
    """Start a process group from torchrun's environment (``WORLD_SIZE > 1``) if none is running."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not torch.distributed.is_available():
        return False
    if torch.distributed.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    logger.info("process group: rank %d of %d (%s)", *_world(), backend)
    return True


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if _world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------------------------- the run folder


def _prepare_out(out: Path, *, resume: bool, force: bool) -> None:
    work = out / WORK
    if out.exists() and not out.is_dir():
        raise MiningError(f"{out}: exists and is not a folder (--out)")
    if (work / "search.json").is_file() and not resume and not force:
        raise MiningError(f"{out}: holds a mining run already; pass --resume to continue it or --force to start over")
    if force and _world()[0] == 0:
        shutil.rmtree(work, ignore_errors=True)
        remove_outputs(out)
    _barrier()


def _check_search_key(work: Path, key: dict[str, Any], *, resume: bool) -> None:
    path = work / "search.json"
    if path.is_file():
        saved = read_json(path)
        changed = sorted(name for name in set(saved) | set(key) if saved.get(name) != key.get(name))
        if changed:
            raise MiningError(
                f"{work.parent}: --resume with different settings ({', '.join(changed)}) than the run there; "
                "use the same ones, or --force to start over"
            )
        if resume:
            logger.info("resuming the run in %s", work.parent)
    elif _world()[0] == 0:
        (work / "search").mkdir(parents=True, exist_ok=True)
        write_json(path, key)
    _barrier()


# ------------------------------------------------------------------------------------------------ embeddings


def _embeddings(
    settings: MiningSettings, data: MiningInput, cache_dir: Path, callback: Callback | None
) -> tuple[NpyRows, NpyRows, dict[str, str]]:
    """The query ``[Q, d]`` and document ``[N, d]`` vectors, given or encoded; and their identity for resume."""
    encoder: list[Any] = []

    def load_encoder() -> Any:
        if not encoder:
            from negkit.models.text import load_sentence_encoder

            try:
                model = load_sentence_encoder(settings.max_seq_length, settings.model).eval()
            except FileNotFoundError as error:
                raise MiningError(str(error)) from None
            config = getattr(getattr(model[0], "auto_model", None), "config", None)
            limit = getattr(config, "max_position_embeddings", None)
            if isinstance(limit, int) and model.max_seq_length > limit:  # e.g. 256 asked of a 128-position model
                logger.info("max_seq_length %d > the model's %d positions", model.max_seq_length, limit)
                model.max_seq_length = limit
            encoder.append(model)
        return encoder[0]

    common = {
        "cache_dir": cache_dir,
        "model": settings.model,
        "load_encoder": load_encoder,
        "max_seq_length": settings.max_seq_length,
        "batch_size": settings.batch_size,
        "shard_size": settings.shard_size,
        "float16": settings.float16,
        "callback": callback,
    }
    identity: dict[str, str] = {}
    if settings.corpus_embeddings is not None:
        if data.num_documents != data.corpus_file_rows and settings.corpus is not None:
            missing = data.num_documents - data.corpus_file_rows
            raise MiningError(
                f"{settings.corpus_embeddings}: with --corpus-embeddings every positive must be a text of the corpus "
                f"file (its rows are the vectors' rows), but {missing} positives are not in {settings.corpus}"
            )
        order = "one row per corpus file row" if settings.corpus else "one row per distinct positive, first seen first"
        documents = open_embeddings(settings.corpus_embeddings, data.num_documents, "--corpus-embeddings", order)
        identity["documents"] = _file_identity(settings.corpus_embeddings)
    else:
        path = encode_cached(data.documents, kind="documents", **common)
        documents = NpyRows(path, "document embeddings")
        identity["documents"] = f"encoded:{encoder_name(settings.model)}:{path.parent.name}"
    if settings.query_embeddings is not None:
        queries = open_embeddings(
            settings.query_embeddings, data.num_queries, "--query-embeddings", "one row per distinct query"
        )
        identity["queries"] = _file_identity(settings.query_embeddings)
    else:
        path = encode_cached(data.queries, kind="queries", **common)
        queries = NpyRows(path, "query embeddings")
        identity["queries"] = f"encoded:{encoder_name(settings.model)}:{path.parent.name}"
    if queries.dim != documents.dim:
        raise MiningError(
            f"query vectors have dimension {queries.dim} but document vectors {documents.dim}: they must match"
        )
    return queries, documents, identity


def _file_identity(path: str | Path) -> str:
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------------- search


def _blocks(num_queries: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, num_queries)) for start in range(0, num_queries, size)]


def _query_vectors(queries: NpyRows, start: int, stop: int, cosine: bool) -> np.ndarray:
    x = queries.read(start, stop)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = start + int(np.argmin(finite))
        raise MiningError(f"{queries.path}: non-finite values (NaN or inf) in row {row} (0-based)")
    return normalise_rows(x) if cosine else x


def _search(
    settings: MiningSettings,
    data: MiningInput,
    queries: NpyRows,
    corpus: Corpus,
    work: Path,
    callback: Callback | None,
) -> dict[str, Any]:
    rank, world = _world()
    index_kind, why = choose_index(settings.index, corpus.size, corpus.dim, settings.max_memory or default_max_memory())
    depth_extra = data.excluded_counts()
    blocks = _blocks(data.num_queries, settings.query_block)
    files = [work / "search" / f"block-{b:05d}.npz" for b in range(len(blocks))]
    pending = [b for b in range(len(blocks)) if b % world == rank and not files[b].is_file()]
    index_path = work / "index.faiss"
    build = {
        "options": settings.index_options,
        "k": settings.window_max,
        "index_path": index_path,
        "seed": settings.seed,
    }
    searcher = None
    if index_kind in APPROXIMATE:
        # rank 0 trains and saves the index once; the other ranks (and a resumed run) read that very index
        if rank == 0 and not index_path.is_file() and not all(f.is_file() for f in files):
            clock = time.perf_counter()
            searcher = build_searcher(index_kind, corpus, **build)
            logger.info("%s index built in %.1f s", index_kind, time.perf_counter() - clock)
        _barrier()
        if pending and searcher is None:
            searcher = build_searcher(index_kind, corpus, build=False, **build)
    elif pending:
        searcher = build_searcher(index_kind, corpus, **build)
    done = sum(1 for f in files if f.is_file())
    cosine = settings.similarity == "cosine"
    for b in pending:
        start, stop = blocks[b]
        depth = min(corpus.size, settings.window_max + int(depth_extra[start:stop].max()))
        scores, ids = searcher.search(_query_vectors(queries, start, stop, cosine), depth)  # type: ignore[union-attr]
        atomic_write(files[b], lambda handle, s=scores, i=ids: np.savez(handle, scores=s, ids=i))
        done += 1
        if callback is not None:
            callback("search", done, len(blocks))
    _barrier()
    params = index_parameters(index_kind, corpus, settings.index_options, settings.window_max)
    info: dict[str, Any] = {"index": index_kind, "why": why, "blocks": len(blocks), "params": params}
    if rank == 0 and index_kind in APPROXIMATE and settings.recall_sample > 0:
        info["recall"] = _recall(settings, data, queries, corpus, blocks, files, work)
    return info


def _recall(
    settings: MiningSettings,
    data: MiningInput,
    queries: NpyRows,
    corpus: Corpus,
    blocks: list[tuple[int, int]],
    files: list[Path],
    work: Path,
) -> dict[str, Any]:
    """recall@10 and recall@depth of the saved approximate results against exact search on a query sample."""
    path = work / "recall.json"
    if path.is_file():
        return read_json(path)
    size = min(settings.recall_sample, data.num_queries)
    sample = np.sort(np.random.default_rng(settings.seed).choice(data.num_queries, size=size, replace=False))
    start = time.perf_counter()
    approx_ids = []
    for b, (lo, hi) in enumerate(blocks):
        inside = sample[(sample >= lo) & (sample < hi)]
        if len(inside):
            with np.load(files[b]) as saved:
                approx_ids.append(saved["ids"][inside - lo])
    depth = min(a.shape[1] for a in approx_ids)
    approx = np.concatenate([a[:, :depth] for a in approx_ids])
    vectors = normalise_rows(queries.take(sample)) if settings.similarity == "cosine" else queries.take(sample)
    exact_searcher = ExactSearcher(corpus)
    exact = np.concatenate([exact_searcher.search(vectors[i : i + 256], depth)[1] for i in range(0, len(vectors), 256)])
    result = {
        "queries": int(size),
        "depth": int(depth),
        "recall_at_10": recall_at_k(approx, exact, min(10, depth)),
        "recall_at_depth": recall_at_k(approx, exact, depth),
        "exact_seconds": time.perf_counter() - start,
    }
    write_json(path, result)
    return result


# ------------------------------------------------------------------------------------------ filter and sample


def _cross_encoder_scores(
    model: Any, data: MiningInput, rows: np.ndarray, window_ids: np.ndarray, keep: np.ndarray, batch_size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cross-encoder scores of the kept window candidates ``[b, W]`` (``-inf`` elsewhere) and of each query's
    positives."""
    pairs, where = [], []
    for r, q in enumerate(rows):
        for c in np.nonzero(keep[r])[0]:
            pairs.append((data.queries[q], data.documents[window_ids[r, c]]))
            where.append((r, c))
    positive_pairs = [(data.queries[q], text) for q in rows for text in data.positive_texts[q]]
    scores = model.predict(pairs + positive_pairs, batch_size=batch_size, show_progress_bar=False)
    scores = np.asarray(scores, dtype=np.float32).reshape(len(pairs) + len(positive_pairs), -1)[:, -1]
    window = np.full(window_ids.shape, -np.inf, dtype=np.float32)
    for (r, c), value in zip(where, scores[: len(pairs)], strict=True):
        window[r, c] = value
    positives, offset = [], len(pairs)
    for q in rows:
        count = len(data.positive_texts[q])
        positives.append(scores[offset : offset + count])
        offset += count
    return window, positives


@dataclass
class _Tally:
    """What the report needs, accumulated block by block."""

    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    positive_scores: list[np.ndarray] = field(default_factory=list)
    negative_scores: list[np.ndarray] = field(default_factory=list)
    negative_ranks: list[np.ndarray] = field(default_factory=list)
    collisions: int = 0
    collision_slots: int = 0
    collisions_top_k: int = 0
    top_k_slots: int = 0
    short: int = 0
    short_written: int = 0
    empty: int = 0
    written: int = 0
    short_examples: list[str] = field(default_factory=list)
    left_counts: list[np.ndarray] = field(default_factory=list)
    sample_queries: list[int] = field(default_factory=list)
    sample_negatives: list[np.ndarray] = field(default_factory=list)
    pairs: int = 0  # (hardest positive, window candidate) pairs before the score filters
    pairs_won: int = 0  # ... in which the positive scores higher


def _post_process(
    settings: MiningSettings,
    data: MiningInput,
    queries: NpyRows,
    corpus: Corpus,
    work: Path,
    out: Path,
    callback: Callback | None,
) -> tuple[dict[str, Any], _Tally, list[int]]:
    blocks = _blocks(data.num_queries, settings.query_block)
    tally = _Tally()
    remove_outputs(out)
    outputs = Outputs(out, settings.format, k=settings.k, triplets=settings.triplets, shard_rows=settings.shard_rows)
    cross = None
    if settings.cross_encoder is not None:
        cross = _load_cross_encoder(settings.cross_encoder)
    cosine = settings.similarity == "cosine"
    referenced: set[int] = set()
    for b, (start, stop) in enumerate(blocks):
        with np.load(work / "search" / f"block-{b:05d}.npz") as saved:
            ids, scores = saved["ids"], saved["scores"]
        rows = np.arange(start, stop)
        window = identity_window(
            ids,
            scores,
            [data.positives[q] for q in rows],
            [data.same_text[q] for q in rows],
            range_min=settings.range_min,
            range_max=settings.window_max,
            k=settings.k,
            num_documents=data.num_documents,
        )
        ranks = np.broadcast_to(np.arange(window.ids.shape[1]), window.ids.shape).copy()
        vectors = _query_vectors(queries, start, stop, cosine)
        counts = [len(data.positive_docs[q]) for q in rows]
        positives = corpus.take(np.concatenate([np.asarray(data.positive_docs[q]) for q in rows]))  # one read
        positive_scores = [block @ vectors[r] for r, block in enumerate(np.split(positives, np.cumsum(counts)[:-1]))]
        if cross is not None:
            window.scores, positive_scores = _cross_encoder_scores(
                cross, data, rows, window.ids, window.keep, settings.batch_size
            )
            order = np.lexsort((ranks, -window.scores.astype(np.float64)), axis=-1)
            window.ids = np.take_along_axis(window.ids, order, axis=1)
            window.scores = np.take_along_axis(window.scores, order, axis=1)
            window.keep = np.take_along_axis(window.keep, order, axis=1)
            ranks = np.take_along_axis(ranks, order, axis=1)
        floor = np.array([float(np.min(p)) for p in positive_scores], dtype=np.float64)
        tally.pairs += int(window.keep.sum())  # q: the ranking quality over the window, before the score filters
        tally.pairs_won += int((window.keep & (window.scores < floor[:, None])).sum())
        score_filters(
            window,
            floor,
            margin=settings.margin,
            relative_margin=settings.relative_margin,
            max_score=settings.max_score,
        )
        positions, log_weights = choose_negatives(
            window.scores,
            window.keep,
            settings.k,
            settings.sampling,
            beta=settings.beta,
            generator=block_generator(settings.seed, b),
        )
        for reason, count in window.removed.items():
            tally.removed[reason] = tally.removed.get(reason, 0) + count
        tally.collisions += int(window.collisions.sum())  # type: ignore[union-attr]
        tally.collision_slots += len(rows) * settings.window
        tally.collisions_top_k += int(window.collisions_top_k.sum())  # type: ignore[union-attr]
        tally.top_k_slots += len(rows) * settings.k
        left = window.keep.sum(axis=1)
        tally.left_counts.append(left)
        for r, q in enumerate(rows):
            chosen = positions[r][positions[r] >= 0]
            tally.positive_scores.append(np.asarray(positive_scores[r], dtype=np.float32))
            if len(chosen) < settings.k:
                tally.short += 1
                if len(tally.short_examples) < 3:
                    tally.short_examples.append(data.queries[q])
                if settings.on_short == "error":
                    raise MiningError(
                        f"query {q} ({data.queries[q][:60]!r}) has {len(chosen)} negatives left after the filters, "
                        f"fewer than k = {settings.k}; widen --range-max, relax the filters, lower --k, or pass "
                        "--on-short skip/keep"
                    )
                if settings.on_short == "skip" or len(chosen) == 0:
                    tally.empty += len(chosen) == 0
                    continue
                tally.short_written += 1
            negative_ids = window.ids[r, chosen]
            negative_scores = window.scores[r, chosen]
            tally.negative_scores.append(negative_scores)
            tally.negative_ranks.append(ranks[r, chosen])
            if len(chosen) == settings.k and len(tally.sample_queries) < REPORT_SAMPLE:
                tally.sample_queries.append(int(q))
                tally.sample_negatives.append(negative_ids)
            referenced.update(int(j) for j in negative_ids)
            referenced.update(int(j) for j in data.positive_docs[q])
            weights = None if log_weights is None else log_weights[r, : len(chosen)]
            outputs.add(
                QueryRecord(
                    query_id=int(q),
                    query=data.queries[q],
                    positives=data.positive_texts[q],
                    positive_ids=[data.document_ids[j] for j in data.positive_docs[q]],
                    positive_scores=[float(v) for v in positive_scores[r]],
                    negatives=[data.documents[j] for j in negative_ids],
                    negative_ids=[data.document_ids[j] for j in negative_ids],
                    negative_scores=[float(v) for v in negative_scores],
                    negative_log_weights=None if weights is None else [float(v) for v in weights],
                    negative_ranks=[int(v) for v in ranks[r, chosen]],
                )
            )
            tally.written += 1
        if callback is not None:
            callback("filter", b + 1, len(blocks))
    if tally.written == 0:
        raise MiningError(
            f"no query has k = {settings.k} negatives left after the filters ({tally.short} short, "
            f"{data.num_documents} documents): widen --range-max, relax the filters or lower --k"
        )
    files = outputs.close()
    docs = sorted(referenced)
    files["documents"] = [write_documents(out, [data.document_ids[j] for j in docs], [data.documents[j] for j in docs])]
    extra = {"not_tuples": outputs.not_tuples}
    return {"files": files, **extra}, tally, docs


def _load_cross_encoder(path: str) -> Any:
    from negkit._optional import require

    st = require("sentence_transformers", "text", "--cross-encoder")
    if not Path(path).is_dir():
        raise MiningError(f"{path}: cross-encoder folder not found (a local sentence-transformers CrossEncoder)")
    return st.CrossEncoder(path, device="cpu", local_files_only=True)


# ------------------------------------------------------------------------------------------------------ mine


def mine(
    pairs: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    callback: Callable[[str, int, int], None] | None = None,
    settings: MiningSettings | None = None,
    **options: Any,
) -> MiningResult:
    """Mine hard negatives for the queries of ``pairs`` and write a training file, the ids and a report to ``out``.

    Args:
        pairs: PAIRS file (JSONL, CSV, Parquet, or a Hugging Face dataset folder).
        out: the run folder.
        resume: continue the run in ``out`` (its embeddings, index and search blocks are reused; the filters,
            sampling and outputs may differ from the first attempt).
        force: start over in an ``out`` that holds a run.
        callback: ``callback(stage, done, total)`` after every encoded shard (``encode-queries``,
            ``encode-documents``), searched block (``search``) and filtered block (``filter``); an exception it
            raises stops the run (what tests use to simulate a kill).
        settings: a :class:`MiningSettings` (``options`` then override its fields).
        **options: the fields of :class:`MiningSettings`:

            * ``query``, ``positive``: column names; ``corpus``: a corpus file (columns ``id``, ``text``);
            * ``model``: a local sentence-transformers folder (default the shipped all-MiniLM-L6-v2),
              ``max_seq_length`` (256), ``batch_size`` (64), ``shard_size`` (8192 texts per cache shard),
              ``float16`` (store half-precision vectors), ``cache_dir`` (default ``$NEGKIT_CACHE/mining``, else
              ``~/.cache/negkit/mining``);
            * ``query_embeddings``, ``corpus_embeddings``: ``.npy`` files instead of encoding (row order: see
              :mod:`negkit.mining.inputs`);
            * ``similarity``: ``"cosine"`` (rows L2-normalised, default) or ``"dot"``;
            * ``index`` (``auto``, ``exact``, ``flat``, ``ivf``, ``hnsw``, ``ivfpq``), ``max_memory`` (bytes;
              default half the machine's memory), ``index_options`` (:class:`IndexOptions`), ``query_block``
              (1024 queries per search block), ``chunk_size`` (16384 corpus rows per exact-search step),
              ``recall_sample`` (1000 queries for the recall of an approximate index; 0 = skip);
            * ``k`` (5), ``range_min`` (0), ``range_max`` (default: see :attr:`MiningSettings.window_max`),
              ``margin``, ``relative_margin``, ``max_score``, ``cross_encoder`` (a local CrossEncoder folder);
            * ``sampling`` (``top``, ``random``, ``hardness``), ``beta`` (20, for hardness), ``seed`` (0),
              ``on_short`` (``skip``: leave out queries with fewer than k negatives; ``keep``: write what they
              have, where the format allows; ``error``);
            * ``format`` (``sentence-transformers``, ``flagembedding``, ``ids``), ``triplets``, ``shard_rows``.

    Returns:
        :class:`MiningResult`.

    Raises:
        DataFileError: a problem in PAIRS or the corpus file (names the file, the column and the row).
        MiningError: bad settings, mismatched embeddings, a run folder in the way, nothing left to write.
        MissingDependencyError: faiss, sentence-transformers, pandas or pyarrow is needed and missing.
    """
    valid = {f.name for f in fields(MiningSettings)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise MiningError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    settings = replace(settings, **options) if settings is not None else MiningSettings(**options)
    started = _start_group()
    try:
        return _mine(Path(pairs), Path(out), settings, resume=resume, force=force, callback=callback)
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _mine(
    pairs: Path, out: Path, settings: MiningSettings, *, resume: bool, force: bool, callback: Callback | None
) -> MiningResult:
    from negkit.mining.report import write_report

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    rank, world = _world()
    data = load_mining_input(pairs, query=settings.query, positive=settings.positive, corpus=settings.corpus)
    if settings.corpus_embeddings is None or settings.query_embeddings is None:
        from negkit._optional import require

        require("sentence_transformers", "text", "encoding texts (or pass --query-embeddings/--corpus-embeddings)")
    timings["read"] = time.perf_counter() - clock
    _prepare_out(out, resume=resume, force=force)
    work = out / WORK
    default_cache = Path(os.environ.get("NEGKIT_CACHE", Path.home() / ".cache" / "negkit")) / "mining"
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache

    clock = time.perf_counter()
    query_rows, document_rows, identity = _embeddings(settings, data, cache_dir, callback)
    timings["encode"] = time.perf_counter() - clock
    _check_search_key(work, settings.search_key(data, identity), resume=resume)

    corpus = Corpus(document_rows, cosine=settings.similarity == "cosine", chunk_size=settings.chunk_size)
    clock = time.perf_counter()
    search = _search(settings, data, query_rows, corpus, work, callback)
    timings["search"] = time.perf_counter() - clock

    manifest_path, report_path = out / "manifest.json", out / "report.md"
    stats: dict[str, Any] = {}
    if rank == 0:
        clock = time.perf_counter()
        written, tally, _ = _post_process(settings, data, query_rows, corpus, work, out, callback)
        timings["filter_sample_write"] = time.perf_counter() - clock
        manifest = _manifest(settings, data, search, written, tally, pairs)
        atomic_write(manifest_path, lambda h: h.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8")))
        clock = time.perf_counter()
        stats = write_report(
            out,
            settings=settings,
            data=data,
            search=search,
            manifest=manifest,
            tally=tally,
            queries=query_rows,
            corpus=corpus,
            timings=timings,
            world=world,
        )
        logger.info("mined %d queries into %s", tally.written, out)
    _barrier()
    stats = _broadcast(stats)
    return MiningResult(out, manifest_path, report_path, stats)


def _manifest(
    settings: MiningSettings,
    data: MiningInput,
    search: dict[str, Any],
    written: dict[str, Any],
    tally: _Tally,
    pairs: Path,
) -> dict[str, Any]:
    """``manifest.json``: the files, the counts and the settings (no times, so equal runs give equal bytes)."""
    from negkit import __version__

    files = written["files"]
    train = files.get("train", [])
    settings_dict = settings.as_dict()
    for name in ("cache_dir",):
        settings_dict.pop(name, None)
    return {
        "negkit_version": __version__,
        "format": settings.format,
        "triplets": settings.triplets,
        "pairs": pairs.name,
        "input_digest": data.digest,
        "queries": data.num_queries,
        "documents": data.num_documents,
        "queries_written": tally.written,
        "queries_short": tally.short,
        "queries_short_written": tally.short_written,
        "queries_not_tuples": written["not_tuples"],
        "training_rows": sum(f["rows"] for f in train),
        "index": search["index"],
        "files": files,
        "settings": {k: v for k, v in settings_dict.items() if k not in ("query_embeddings", "corpus_embeddings")},
    }
