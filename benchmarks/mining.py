"""``negkit mine`` against sentence-transformers' ``mine_hard_negatives``, and ``negkit mine``'s search at scale.

**Comparison** (one cell per dataset and tool, each in a fresh process): Rotten Tomatoes (review → plot) and
chatterbot (question → answer), distinct queries, every document of the dataset as the corpus, the shipped
all-MiniLM-L6-v2 (batch 64, 256 tokens), K = 5 negatives per query, ``top`` sampling, no margin, one run each,
starting from nothing (negkit's embedding cache is a fresh folder; sentence-transformers has none):

* ``negkit``: ``negkit.mining.mine(pairs.jsonl, corpus=docs.jsonl, k=5, format="ids")`` (index ``auto`` → faiss flat);
* ``sentence-transformers``: ``mine_hard_negatives(dataset, model, corpus=docs, num_negatives=5,
  output_format="n-tuple")`` (its exact torch search), the dataset one row per (query, positive).

Measured: wall time and peak RSS of the call (files written included), and afterwards, with the same MiniLM
vectors: **overlap** = mean share of a query's mined negatives that are among its exact top-5 documents other than
its known positives (both tools are meant to return exactly those), **known FN rate** = share of mined negatives
that are a known positive of the query, **same-text rate** = share whose text equals the query's or a positive's
up to case, punctuation and spacing.

**Scale** (one cell per corpus size and index): clustered synthetic vectors, d = 384 (``--centres`` 1,000 Gaussian
centres, noise 0.35 per coordinate, L2-normalised, float32 ``.npy`` written once to ``--data-dir``), ``--queries``
10⁵ queries drawn the same way, searched by negkit's searchers as ``mine`` runs them (blocks of 1,024 queries, depth
20): wall time of building the index + searching every block (for ``exact`` and ``flat``, extrapolated from the
blocks that fit in ``--budget`` s when the whole would take longer, labelled as such), peak RSS of that, and
recall@10 against exact search on ``--recall-sample`` (200) queries. Indexes: ``exact``, ``flat``, ``ivf``,
``hnsw`` (≤ 10⁶), ``ivfpq``;
``--sizes`` 1e6 (add 1e7 for the full target: about 17 GB of disk and two hours; at 10⁷ the ``flat`` and ``ivf``
cells are skipped: each would hold the 15 GB of vectors in memory).

**Recall sweep** (``--sweep``, one cell): what ``ivfpq``'s parameters cost in recall, on vectors as dense as the
10⁷ corpus (10⁴ per Gaussian cluster: 10⁶ vectors around 100 centres, same noise): ``ivf`` and ``ivfpq`` with
pq_m = d/4 and d/2, each at nprobe = nlist/64 and 4× that, refine 16 / 32 / 64; recall@10 against exact search on
``--recall-sample`` queries and the search time per query.

``--quick``: chatterbot only with 150 queries; scale 2·10⁴ documents, 2,000 queries, every index.
Run: ``python benchmarks/mining.py [--quick]`` (or ``benchmarks/run.py mining`` once the suite is listed there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the harness lives next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import Cell, find, fmt, fmt_n, mark, ok

TITLE = "negkit mine benchmark"
K = 5
D = 384
DEPTH = 20
BLOCK = 1024
DATASETS = ("rotten-tomatoes", "chatterbot")
TOOLS = ("negkit", "sentence-transformers")
INDEXES = ("exact", "flat", "ivf", "hnsw", "ivfpq")
DEFAULT_DATA = Path(tempfile.gettempdir()) / "negkit-bench-mining"


def sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def add_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument("--datasets", default=None, help="comma-separated (rotten-tomatoes,chatterbot)")
    parser.add_argument("--limit", type=int, default=None, help="queries per dataset (all; quick 150)")
    parser.add_argument("--sizes", type=sizes, default=None, help="scale: corpus sizes (1e6; quick 2e4)")
    parser.add_argument("--queries", type=int, default=None, help="scale: queries (1e5; quick 2000)")
    parser.add_argument("--indexes", default=None, help="scale: comma-separated subset of " + ",".join(INDEXES))
    parser.add_argument("--centres", type=int, default=1000, help="scale: Gaussian centres of the synthetic vectors")
    parser.add_argument("--budget", type=float, default=900.0, help="scale: seconds of search before extrapolating")
    parser.add_argument("--recall-sample", type=int, default=200, help="scale: queries for recall@10 vs exact")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="scale: where the vectors are written")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="add the ivfpq recall sweep (10⁶ vectors, 100 centres)")


def plan(args: argparse.Namespace) -> list[Cell]:
    quick = args.quick
    cells: list[Cell] = []
    if not args.skip_compare:
        datasets = args.datasets.split(",") if args.datasets else (["chatterbot"] if quick else list(DATASETS))
        limit = args.limit or (150 if quick else 0)
        for dataset in datasets:
            for tool in TOOLS:
                params = {"dataset": dataset, "tool": tool, "limit": limit}
                cells.append(Cell("compare_cell", params, f"compare {dataset} {tool}", timeout=3600))
    if not args.skip_scale:
        grid = args.sizes or ([20_000] if quick else [1_000_000])
        queries = args.queries or (2_000 if quick else 100_000)
        chosen = args.indexes.split(",") if args.indexes else list(INDEXES)
        for n in grid:
            for index in chosen:
                skip = None
                if index == "hnsw" and n > 1_000_000:
                    skip = "hnsw builds for hours on 2 cores beyond 10⁶ (and is never auto-chosen)"
                if index in ("flat", "ivf") and n * D * 4 > 8 * 2**30:
                    skip = (
                        f"{index} holds every vector in memory ({n * D * 4 / 2**30:.0f} GiB); "
                        "`--index auto` picks ivfpq at this size"
                    )
                params = {
                    "n": n,
                    "queries": queries,
                    "index": index,
                    "centres": args.centres,
                    "budget_s": args.budget,
                    "recall_sample": args.recall_sample,
                    "data_dir": str(args.data_dir),
                }
                label = f"scale {index} {fmt_n(queries)}x{fmt_n(n)}"
                cells.append(Cell("scale_cell", params, label, timeout=args.budget * 3 + 3600, skip=skip))
    if args.sweep:
        params = {"n": 20_000 if quick else 1_000_000, "centres": 2 if quick else 100}
        params |= {"recall_sample": args.recall_sample, "data_dir": str(args.data_dir)}
        cells.append(Cell("sweep_cell", params, f"sweep ivfpq {fmt_n(params['n'])}", timeout=3600))
    return cells


# -- comparison cells ----------------------------------------------------------------------------------------------


def _dataset(name: str, limit: int) -> Any:
    from negkit.data.text import RetrievalData, load_retrieval_dataset

    data = load_retrieval_dataset(name, unique_queries=True)
    if limit and limit < data.num_queries:
        return RetrievalData(
            data.name, data.queries[:limit], data.documents, data.relevant[:limit], data.groups[:limit]
        )
    return data


def _write_inputs(data: Any, folder: Path) -> tuple[Path, Path]:
    pairs, corpus = folder / "pairs.jsonl", folder / "docs.jsonl"
    with pairs.open("w", encoding="utf-8") as handle:
        for query, relevant in zip(data.queries, data.relevant, strict=True):
            handle.write(json.dumps({"query": query, "positive": [data.documents[j] for j in relevant]}) + "\n")
    with corpus.open("w", encoding="utf-8") as handle:
        for j, text in enumerate(data.documents):
            handle.write(json.dumps({"id": str(j), "text": text}) + "\n")
    return pairs, corpus


def _run_negkit(data: Any, folder: Path) -> list[list[int]]:
    import pandas as pd

    from negkit.mining import mine

    pairs, corpus = _write_inputs(data, folder)
    mine(pairs, folder / "out", query="query", positive="positive", corpus=str(corpus), k=K, format="ids",
         cache_dir=str(folder / "cache"), recall_sample=0)  # fmt: skip
    table = pd.concat([pd.read_parquet(p) for p in sorted((folder / "out").glob("ids-*.parquet"))])
    mined = {int(row.query_id): [int(i) for i in row.negative_ids] for row in table.itertuples()}
    return [mined.get(i, []) for i in range(data.num_queries)]


def _run_sentence_transformers(data: Any, model: Any) -> list[list[int]]:
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    anchors, positives = [], []
    for query, relevant in zip(data.queries, data.relevant, strict=True):
        for j in relevant:
            anchors.append(query)
            positives.append(data.documents[j])
    dataset = Dataset.from_dict({"anchor": anchors, "positive": positives})
    mined = mine_hard_negatives(
        dataset, model, corpus=list(data.documents), num_negatives=K, output_format="n-tuple", batch_size=64,
        verbose=False,
    )  # fmt: skip
    index = {text: j for j, text in enumerate(data.documents)}
    by_query: dict[str, list[int]] = {}
    for row in mined:
        by_query.setdefault(row["anchor"], [index[row[f"negative_{i}"]] for i in range(1, K + 1)])
    return [by_query.get(query, []) for query in data.queries]


def _quality(data: Any, mined: list[list[int]], folder: Path) -> dict[str, Any]:
    """Overlap with the exact top-K non-positive documents, known-FN and same-text rates (MiniLM vectors)."""
    import numpy as np
    import torch

    from negkit.mining.inputs import match_key
    from negkit.models.text import load_sentence_encoder

    model = load_sentence_encoder(256).eval()
    with torch.inference_mode():
        q = model.encode(data.queries, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
        d = model.encode(data.documents, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
    keys = [match_key(text) for text in data.documents]
    overlap, known, same, total, written = [], 0, 0, 0, 0
    for i in range(0, len(data.queries), 512):
        scores = (q[i : i + 512] @ d.T).numpy()
        for r, row in enumerate(scores):
            query = i + r
            positives = set(data.relevant[query])
            row[list(positives)] = -np.inf
            exact = set(np.argsort(-row, kind="stable")[:K].tolist())
            negatives = mined[query]
            if not negatives:
                continue
            written += 1
            overlap.append(len(exact & set(negatives)) / K)
            query_keys = {match_key(data.queries[query]), *(keys[j] for j in positives)}
            known += sum(j in positives for j in negatives)
            same += sum(keys[j] in query_keys and j not in positives for j in negatives)
            total += len(negatives)
    return {
        "queries": data.num_queries,
        "queries_written": written,
        "documents": data.num_documents,
        "overlap_with_exact": float(np.mean(overlap)) if overlap else None,
        "known_fn_rate": known / total if total else None,
        "same_text_rate": same / total if total else None,
    }


def compare_cell(dataset: str, tool: str, limit: int) -> dict:
    """One mining run of ``tool`` on ``dataset`` (see the module docstring)."""
    import torch  # noqa: F401

    with contextlib.suppress(ImportError):
        import faiss  # noqa: F401
    data = _dataset(dataset, limit)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if tool == "negkit":
            stats, mined = harness.measure(lambda: _run_negkit(data, folder), repeats=1, warmup=0)
        else:
            from negkit.models.text import load_sentence_encoder

            model = load_sentence_encoder(256).eval()
            stats, mined = harness.measure(lambda: _run_sentence_transformers(data, model), repeats=1, warmup=0)
        quality = _quality(data, mined, folder)
    return {**stats, **quality}


# -- scale cells ---------------------------------------------------------------------------------------------------


def _vectors(path: Path, n: int, centres: int, seed: int, chunk: int = 100_000) -> Path:
    """``n`` clustered unit vectors (float32 ``.npy``), written chunk by chunk with file writes (no memory map)."""
    import numpy as np

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    means = np.random.default_rng(12345).normal(size=(centres, D)).astype(np.float32)  # shared by all files
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (n, D)}
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            x = means[rng.integers(0, centres, size)] + 0.35 * rng.standard_normal((size, D), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            handle.write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    tmp.replace(path)
    return path


def scale_cell(n: int, queries: int, index: str, centres: int, budget_s: float, recall_sample: int, data_dir: str):
    """Build ``index`` over ``n`` synthetic vectors and search ``queries`` queries in blocks (module docstring)."""
    import numpy as np

    from negkit.mining.encode import NpyRows
    from negkit.mining.search import Corpus, build_searcher, recall_at_k

    folder = Path(data_dir)
    corpus_path = _vectors(folder / f"corpus-{n}-{centres}.npy", n, centres, seed=1)
    query_path = _vectors(folder / f"queries-{queries}-{centres}.npy", queries, centres, seed=2)
    corpus = Corpus(NpyRows(corpus_path), cosine=True)
    query_rows = NpyRows(query_path)
    baseline = harness.current_rss_bytes()
    harness.reset_peak_rss()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        searcher = build_searcher(index, corpus, k=DEPTH, index_path=Path(tmp) / "index.faiss")
        build_s = time.perf_counter() - start
        blocks = math.ceil(queries / BLOCK)
        block_times, results, stopped = [], [], False
        for b in range(blocks):
            t0 = time.perf_counter()
            results.append(searcher.search(query_rows.read(b * BLOCK, (b + 1) * BLOCK), DEPTH)[1])
            block_times.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            projected = build_s + sum(block_times) / len(block_times) * blocks
            harness.progress(
                f"  [{index} {fmt_n(n)}] block {b + 1}/{blocks}: {block_times[-1]:.1f} s, ~{projected:.0f} s"
            )
            exhaustive = index in ("exact", "flat")  # an approximate index always searches every block
            if exhaustive and b + 1 < blocks and elapsed > budget_s and len(block_times) >= 2:
                stopped = True
                break
        measured_s = time.perf_counter() - start
        peak = harness.peak_rss_bytes()
        search_s = sum(block_times) / len(block_times) * blocks
        # after the peak: recall@10 of the first searched queries against exact search
        sample = min(recall_sample, len(results) * BLOCK)
        found = np.concatenate(results)[:sample]
        t0 = time.perf_counter()
        exact_searcher = build_searcher("exact", corpus)
        exact = np.concatenate(
            [exact_searcher.search(query_rows.read(i, min(i + 100, sample)), 10)[1] for i in range(0, sample, 100)]
        )
        exact_sample_s = time.perf_counter() - t0
    return {
        "build_s": build_s,
        "search_s": search_s,
        "total_s": build_s + search_s,
        "total_is_extrapolated": stopped,
        "blocks_measured": len(block_times),
        "blocks_total": blocks,
        "measured_s": measured_s,
        "baseline_rss_mb": baseline / harness.MB,
        "peak_rss_mb": peak / harness.MB,
        "growth_mb": (peak - baseline) / harness.MB,
        "vectors_gb": n * D * 4 / 1e9,
        "index_params": searcher.describe(),
        "recall_at_10": recall_at_k(found, exact, 10),
        "recall_queries": sample,
        "exact_sample_s": exact_sample_s,
        "exact_per_query_s": exact_sample_s / max(1, sample),
    }


def sweep_cell(n: int, centres: int, recall_sample: int, data_dir: str) -> dict:
    """recall@10 of ``ivf`` and ``ivfpq`` (pq_m d/4 and d/2) over nprobe and refine (module docstring)."""

    from negkit.mining.encode import NpyRows
    from negkit.mining.search import Corpus, IndexOptions, build_searcher, recall_at_k

    folder = Path(data_dir)
    corpus = Corpus(NpyRows(_vectors(folder / f"corpus-{n}-{centres}.npy", n, centres, seed=1)), cosine=True)
    queries = NpyRows(_vectors(folder / f"queries-2000-{centres}.npy", 2000, centres, seed=2)).read(0, recall_sample)
    exact = build_searcher("exact", corpus).search(queries, 10)[1]
    rows = []
    for kind, pq_m in (("ivf", None), ("ivfpq", D // 4), ("ivfpq", D // 2)):
        t0 = time.perf_counter()
        searcher = build_searcher(kind, corpus, options=IndexOptions(pq_m=pq_m), k=DEPTH)
        build_s = time.perf_counter() - t0
        nprobe = searcher.params["nprobe"]
        for probes in (nprobe, 4 * nprobe):
            searcher.index.nprobe = probes
            for refine in (16, 32, 64) if kind == "ivfpq" else (0,):
                if kind == "ivfpq":
                    searcher.params["refine"] = refine
                t0 = time.perf_counter()
                found = searcher.search(queries, DEPTH)[1]
                rows.append({
                    "index": kind, "pq_m": pq_m, "nlist": searcher.params["nlist"], "nprobe": probes,
                    "refine": refine, "build_s": build_s, "recall_at_10": recall_at_k(found, exact, 10),
                    "search_ms_per_query": 1e3 * (time.perf_counter() - t0) / len(queries),
                })  # fmt: skip
    return {"rows": rows, "recall_queries": len(queries), "peak_rss_mb": harness.peak_rss_bytes() / harness.MB}


# -- Markdown ------------------------------------------------------------------------------------------------------


def render(doc: dict) -> list[str]:
    lines: list[str] = []
    compare = [r for r in doc["cells"] if r["function"] == "compare_cell"]
    if compare:
        lines += [
            f"K = {K}, `top`, all-MiniLM-L6-v2, one run per cell from an empty cache (encoding included). Overlap: "
            "share of the mined negatives among the exact top-K non-positive documents; FN: mined negatives that are "
            "known positives; same text: equal to the query or a positive up to case/punctuation/spacing.",
            "",
            "| dataset | tool | queries | written | wall s | peak RSS MB | overlap with exact | known FN | same text |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in compare:
            p = r["params"]
            if not ok(r):
                lines.append(f"| {p['dataset']} | {p['tool']} | error: {harness.short_error(r)} | | | | | | |")
                continue
            lines.append(
                f"| {p['dataset']} | {p['tool']} | {r['queries']:,} | {r['queries_written']:,} | "
                f"{r['median_s']:.1f}{mark(r)} | {r['peak_rss_mb']:,.0f} | {fmt(r['overlap_with_exact'], 3)} | "
                f"{fmt(r['known_fn_rate'], 4)} | {fmt(r['same_text_rate'], 4)} |"
            )
    scale = [r for r in doc["cells"] if r["function"] == "scale_cell"]
    if scale:
        lines += [
            "",
            f"Scale: clustered synthetic unit vectors, d = {D}, depth {DEPTH}, blocks of {BLOCK} queries, negkit's "
            "searchers with their default parameters. Total = index build + search of every block (**bold**: "
            "extrapolated from the blocks measured). Speed-up: exact total / this total.",
            "",
            "| corpus | queries | index | build s | total s | speed-up vs exact | recall@10 | peak RSS MB | params |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in scale:
            p = r["params"]
            if not ok(r):
                why = r["error"] if r.get("skipped") else harness.short_error(r)
                lines.append(f"| {fmt_n(p['n'])} | {fmt_n(p['queries'])} | {p['index']} | {why} | | | | | |")
                continue
            exact = find(doc, "scale_cell", n=p["n"], queries=p["queries"], index="exact")
            speedup = exact["total_s"] / r["total_s"] if ok(exact) else None
            total = f"{r['total_s']:,.0f}"
            if r["total_is_extrapolated"]:
                total = f"**{total}** ({r['blocks_measured']}/{r['blocks_total']} blocks)"
            params = ", ".join(f"{k}={v}" for k, v in r["index_params"].items() if k != "index")
            lines.append(
                f"| {fmt_n(p['n'])} | {fmt_n(p['queries'])} | {p['index']} | {r['build_s']:,.1f} | {total}{mark(r)} | "
                f"{fmt(speedup, 1)} | {r['recall_at_10']:.3f} | {r['peak_rss_mb']:,.0f} | {params} |"
            )
    for r in (r for r in doc["cells"] if r["function"] == "sweep_cell"):
        p = r["params"]
        if not ok(r):
            lines += ["", f"Recall sweep: error: {harness.short_error(r)}"]
            continue
        lines += [
            "",
            f"Recall sweep: {fmt_n(p['n'])} clustered vectors around {p['centres']} centres (d = {D}, "
            f"{p['n'] // p['centres']:,} per cluster), recall@10 against exact search on {r['recall_queries']} "
            f"queries, depth {DEPTH}.{mark(r)}",
            "",
            "| index | pq_m | nlist | nprobe | refine | build s | recall@10 | search ms/query |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['index']} | {x['pq_m'] or '–'} | {x['nlist']} | {x['nprobe']} | {x['refine'] or '–'} | "
            f"{x['build_s']:.1f} | {x['recall_at_10']:.3f} | {x['search_ms_per_query']:.2f} |"
            for x in r["rows"]
        ]
    return lines


if __name__ == "__main__":
    harness.main(harness.load_suite(__file__), sys.argv[1:], name="mining")
