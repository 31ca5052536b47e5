"""The files ``negkit mine`` writes: training files in three formats, the ids record, and a manifest.

Every file is written atomically (a temporary file renamed into place), in shards of at most ``shard_rows`` rows
(``-00000``, ``-00001``, ...); ``manifest.json`` is written last and lists every file with its rows and SHA-256,
so a folder with a manifest is complete.

* ``--format sentence-transformers`` → ``train-NNNNN.parquet``: n-tuples ``anchor, positive, negative_1 ..
  negative_K``, one row per (query, positive) (a query with several positives gives several rows); a query with
  fewer than K negatives cannot be an n-tuple and is left out (counted). With ``triplets``: ``anchor, positive,
  negative``, one row per (query, positive, negative). Load with ``datasets.load_dataset("parquet",
  data_files="OUT/train-*.parquet")``.
* ``--format flagembedding`` → ``train-NNNNN.jsonl``: one line per query ``{"query", "pos", "neg", "pos_scores",
  "neg_scores"}`` (FlagEmbedding's fine-tuning format; the scores are those of the search or the cross-encoder),
  plus ``neg_log_weights`` when the sampling has importance weights.
* ``ids-NNNNN.parquet`` (always; the only training-side file of ``--format ids``): one row per query written:
  ``query_id`` (int64, the query's index in first-appearance order), ``query`` (text), ``positive_ids``,
  ``positive_scores``, ``negative_ids``, ``negative_scores``, ``negative_log_weights`` (lists; the weights are
  null for ``top``), ``negative_ranks`` (each negative's rank in the window, 0 = the first rank kept).
* ``documents.parquet``: ``id, text`` of every document an ids file references.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from negkit._optional import require
from negkit.io import atomic_write

__all__ = ["FORMATS", "QueryRecord", "ShardWriter", "remove_outputs", "write_documents"]

logger = logging.getLogger(__name__)

FORMATS = ("sentence-transformers", "flagembedding", "ids")
PATTERNS = ("train-*.parquet", "train-*.jsonl", "ids-*.parquet", "documents.parquet", "manifest.json")


@dataclass(frozen=True)
class QueryRecord:
    """What was mined for one query (texts and ids resolved)."""

    query_id: int
    query: str
    positives: list[str]
    positive_ids: list[str]
    positive_scores: list[float]
    negatives: list[str]
    negative_ids: list[str]
    negative_scores: list[float]
    negative_log_weights: list[float] | None
    negative_ranks: list[int]


def json_floats(values: Iterable[float]) -> list[float]:
    """float32 values as the shortest decimals that read back as the same float32."""
    return [float(str(np.float32(v))) for v in values]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parquet_bytes(columns: dict[str, list[Any]], schema: Any) -> bytes:
    pa = require("pyarrow", "cli", "writing Parquet files")
    pq = require("pyarrow.parquet", "cli", "writing Parquet files")
    table = pa.Table.from_pydict(columns, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class ShardWriter:
    """Rows of one output, buffered and written ``shard_rows`` at a time as ``<stem>-NNNNN.<suffix>``."""

    def __init__(self, out: Path, stem: str, suffix: str, shard_rows: int, schema: Any = None) -> None:
        self.out, self.stem, self.suffix, self.shard_rows, self.schema = out, stem, suffix, shard_rows, schema
        self.rows: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.total = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.files:
            return
        name = f"{self.stem}-{len(self.files):05d}.{self.suffix}"
        if self.suffix == "jsonl":
            data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows).encode("utf-8")
        else:
            columns = {field: [row[field] for row in self.rows] for field in self.schema.names}
            data = _parquet_bytes(columns, self.schema)
        atomic_write(self.out / name, lambda handle: handle.write(data))
        self.files.append({"path": name, "rows": len(self.rows), "sha256": _sha256(data)})
        self.total += len(self.rows)
        logger.info("wrote %s (%d rows)", name, len(self.rows))
        self.rows = []

    def close(self) -> list[dict[str, Any]]:
        if self.rows or not self.files:
            self.flush()
        return self.files


def ids_schema() -> Any:
    pa = require("pyarrow", "cli", "writing Parquet files")
    return pa.schema(
        [
            ("query_id", pa.int64()),
            ("query", pa.string()),
            ("positive_ids", pa.list_(pa.string())),
            ("positive_scores", pa.list_(pa.float32())),
            ("negative_ids", pa.list_(pa.string())),
            ("negative_scores", pa.list_(pa.float32())),
            ("negative_log_weights", pa.list_(pa.float32())),
            ("negative_ranks", pa.list_(pa.int32())),
        ]
    )


def st_schema(k: int, triplets: bool) -> Any:
    pa = require("pyarrow", "cli", "writing Parquet files")
    negatives = ["negative"] if triplets else [f"negative_{i}" for i in range(1, k + 1)]
    return pa.schema([(name, pa.string()) for name in ("anchor", "positive", *negatives)])


class Outputs:
    """The writers of one run: the training file of ``fmt`` and the ids record."""

    def __init__(self, out: Path, fmt: str, *, k: int, triplets: bool, shard_rows: int) -> None:
        self.fmt, self.k, self.triplets = fmt, k, triplets
        self.ids = ShardWriter(out, "ids", "parquet", shard_rows, ids_schema())
        self.train: ShardWriter | None = None
        if fmt == "sentence-transformers":
            self.train = ShardWriter(out, "train", "parquet", shard_rows, st_schema(k, triplets))
        elif fmt == "flagembedding":
            self.train = ShardWriter(out, "train", "jsonl", shard_rows)
        self.not_tuples = 0  # queries with fewer than k negatives left out of the n-tuples

    def add(self, record: QueryRecord) -> None:
        self.ids.add(
            {
                "query_id": record.query_id,
                "query": record.query,
                "positive_ids": record.positive_ids,
                "positive_scores": record.positive_scores,
                "negative_ids": record.negative_ids,
                "negative_scores": record.negative_scores,
                "negative_log_weights": record.negative_log_weights,
                "negative_ranks": record.negative_ranks,
            }
        )
        if self.fmt == "flagembedding":
            row: dict[str, Any] = {
                "query": record.query,
                "pos": record.positives,
                "neg": record.negatives,
                "pos_scores": json_floats(record.positive_scores),
                "neg_scores": json_floats(record.negative_scores),
            }
            if record.negative_log_weights is not None:
                row["neg_log_weights"] = json_floats(record.negative_log_weights)
            self.train.add(row)  # type: ignore[union-attr]
        elif self.fmt == "sentence-transformers":
            if self.triplets:
                for positive in record.positives:
                    for negative in record.negatives:
                        self.train.add({"anchor": record.query, "positive": positive, "negative": negative})  # type: ignore[union-attr]
            elif len(record.negatives) < self.k:
                self.not_tuples += 1
            else:
                for positive in record.positives:
                    row = {"anchor": record.query, "positive": positive}
                    row.update({f"negative_{i}": text for i, text in enumerate(record.negatives, start=1)})
                    self.train.add(row)  # type: ignore[union-attr]

    def close(self) -> dict[str, Any]:
        files = {"ids": self.ids.close()}
        if self.train is not None:
            files["train"] = self.train.close()
        return files


def write_documents(out: Path, ids: list[str], texts: list[str]) -> dict[str, Any]:
    """``documents.parquet`` with columns ``id, text``."""
    pa = require("pyarrow", "cli", "writing Parquet files")
    data = _parquet_bytes({"id": ids, "text": texts}, pa.schema([("id", pa.string()), ("text", pa.string())]))
    atomic_write(out / "documents.parquet", lambda handle: handle.write(data))
    return {"path": "documents.parquet", "rows": len(ids), "sha256": _sha256(data)}


def remove_outputs(out: Path) -> None:
    """Delete the files of an earlier (partial) output stage, so no stale shard survives a rewrite."""
    for pattern in PATTERNS:
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)
