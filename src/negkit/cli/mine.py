"""``negkit mine``: the command-line face of :func:`negkit.mining.mine` (options map one to one onto its settings)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_STAGES = {
    "encode-documents": "encoding documents (shards)",
    "encode-queries": "encoding queries (shards)",
    "search": "searching (query blocks)",
    "filter": "filtering and sampling",
}


def parse_bytes(text: str) -> int:
    """``"8GB"``, ``"512M"``, ``"1.5GiB"`` or a number of bytes → bytes (powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtKMGT]?)(i?[bB])?\s*", text)
    if not match:
        raise ValueError(f"--max-memory: cannot read {text!r}; write e.g. 8GB, 512MB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code=2)


def mine_command(
    pairs: Annotated[Path, typer.Argument(help="Query → positive pairs: JSONL, CSV, Parquet or a HF dataset folder.")],
    out: Annotated[Path, typer.Option(help="Run folder: training file, ids, manifest.json, report.md.")],
    query: Annotated[str, typer.Option(help="Column of the query text.")] = "query",
    positive: Annotated[str, typer.Option(help="Column of the positive (a text or a list of texts).")] = "positive",
    corpus: Annotated[Path | None, typer.Option(help="Corpus file (columns id, text); default: the positives.")] = None,
    model: Annotated[Path | None, typer.Option(help="Local sentence-transformers folder (default MiniLM).")] = None,
    query_embeddings: Annotated[Path | None, typer.Option(help=".npy, one row per distinct query.")] = None,
    corpus_embeddings: Annotated[Path | None, typer.Option(help=".npy, one row per corpus row.")] = None,
    k: Annotated[int, typer.Option("--k", help="Negatives per query.")] = 5,
    range_min: Annotated[int, typer.Option(help="First rank of the window (0 = nearest non-positive).")] = 0,
    range_max: Annotated[
        int | None, typer.Option(help="End of the window (default range-min + k, or + 10k with filters/sampling).")
    ] = None,
    margin: Annotated[float | None, typer.Option(help="Drop negatives scoring above positive − margin.")] = None,
    relative_margin: Annotated[
        float | None, typer.Option(help="Drop negatives above positive − |positive|·m (e.g. 0.05).")
    ] = None,
    max_score: Annotated[float | None, typer.Option(help="Drop negatives scoring above this.")] = None,
    index: Annotated[str, typer.Option(help="auto, exact, flat, ivf, hnsw or ivfpq.")] = "auto",
    max_memory: Annotated[str | None, typer.Option(help="Memory for the index, e.g. 8GB (default: RAM/2).")] = None,
    sampling: Annotated[str, typer.Option(help="top, random or hardness.")] = "top",
    beta: Annotated[float, typer.Option(help="Hardness sampling: probability ∝ exp(β·score).")] = 20.0,
    format: Annotated[str, typer.Option("--format", help="sentence-transformers, flagembedding or ids.")] = (
        "sentence-transformers"
    ),
    triplets: Annotated[bool, typer.Option("--triplets", help="sentence-transformers triplets, not n-tuples.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of random and hardness sampling and index training.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over in an --out that holds a run.")] = False,
    on_short: Annotated[str, typer.Option(help="Queries with < k negatives left: skip, keep or error.")] = "skip",
    cross_encoder: Annotated[Path | None, typer.Option(help="Local CrossEncoder folder to rescore the window.")] = None,
    similarity: Annotated[str, typer.Option(help="cosine or dot.")] = "cosine",
    float16: Annotated[bool, typer.Option("--float16", help="Store the embedding cache in float16.")] = False,
    batch_size: Annotated[int, typer.Option(help="Encoder batch size.")] = 64,
    max_seq_length: Annotated[int, typer.Option(help="Encoder max tokens.")] = 256,
    shard_size: Annotated[int, typer.Option(help="Texts per embedding-cache shard.")] = 8192,
    query_block: Annotated[int, typer.Option(help="Queries per search block.")] = 1024,
    chunk_size: Annotated[int, typer.Option(help="Corpus rows per exact-search step.")] = 16384,
    recall_sample: Annotated[int, typer.Option(help="Queries for the recall of an approximate index.")] = 1000,
    shard_rows: Annotated[int, typer.Option(help="Rows per output shard.")] = 100_000,
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache (default $NEGKIT_CACHE/mining).")] = None,
    nlist: Annotated[int | None, typer.Option(help="ivf/ivfpq: lists (default 4·√N, a power of 2).")] = None,
    nprobe: Annotated[int | None, typer.Option(help="ivf/ivfpq: lists searched (default nlist/64, ≥ 16).")] = None,
    hnsw_m: Annotated[int, typer.Option(help="hnsw: links per node.")] = 32,
    ef_construction: Annotated[int, typer.Option(help="hnsw: efConstruction.")] = 80,
    ef_search: Annotated[int | None, typer.Option(help="hnsw: efSearch (default max(2·depth, 64)).")] = None,
    pq_m: Annotated[int | None, typer.Option(help="ivfpq: bytes per vector (default ≤ d/2, divides d).")] = None,
    pq_bits: Annotated[int, typer.Option(help="ivfpq: bits per sub-quantiser.")] = 8,
    refine: Annotated[int, typer.Option(help="ivfpq: re-score refine·depth candidates exactly (0 = off).")] = 16,
    train_size: Annotated[int | None, typer.Option(help="ivf/ivfpq: training rows (default 40·nlist).")] = None,
) -> None:
    """Mine hard negatives for the queries of PAIRS and write a training file, the ids, a manifest and a report."""
    from negkit._optional import MissingDependencyError
    from negkit.data.files import DataFileError
    from negkit.mining import IndexOptions, MiningError, MiningSettings, mine

    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    try:
        memory = None if max_memory is None else parse_bytes(max_memory)
        settings = MiningSettings(
            query=query,
            positive=positive,
            corpus=text(corpus),
            model=text(model),
            query_embeddings=text(query_embeddings),
            corpus_embeddings=text(corpus_embeddings),
            k=k,
            range_min=range_min,
            range_max=range_max,
            margin=margin,
            relative_margin=relative_margin,
            max_score=max_score,
            index=index,
            max_memory=memory,
            index_options=IndexOptions(
                nlist=nlist,
                nprobe=nprobe,
                hnsw_m=hnsw_m,
                ef_construction=ef_construction,
                ef_search=ef_search,
                pq_m=pq_m,
                pq_bits=pq_bits,
                refine=refine,
                train_size=train_size,
            ),
            sampling=sampling,
            beta=beta,
            format=format,
            triplets=triplets,
            seed=seed,
            on_short=on_short,
            cross_encoder=text(cross_encoder),
            similarity=similarity,
            float16=float16,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            shard_size=shard_size,
            query_block=query_block,
            chunk_size=chunk_size,
            recall_sample=recall_sample,
            shard_rows=shard_rows,
            cache_dir=text(cache_dir),
        )
        show = os.environ.get("RANK", "0") == "0"
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not show,
            transient=False,
        ) as progress:
            tasks: dict[str, Any] = {}

            def callback(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(_STAGES.get(stage, stage), total=total)
                progress.update(tasks[stage], completed=done, total=total)

            result = mine(pairs, out, settings=settings, resume=resume, force=force, callback=callback)
    except (DataFileError, MiningError, MissingDependencyError, ValueError, FileNotFoundError) as error:
        _fail(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        return
    if os.environ.get("RANK", "0") != "0":
        return
    stats = result.stats
    written, short = stats["written"], stats["short"]
    recall = stats["search"].get("recall")
    extra = f", recall@10 {recall['recall_at_10']:.3f}" if recall else ""
    skipped = f"; {short['queries']:,} short of k ({short['policy']})" if short["queries"] else ""
    typer.echo(
        f"mined {written['queries']:,} queries ({written['training_rows']:,} {format} rows, index "
        f"{stats['search']['index']}{extra}{skipped}) -> {result.out}; report: {result.report}"
    )
