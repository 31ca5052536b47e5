"""What ``negkit mine`` reads: query → positive pairs, an optional corpus with ids, optional precomputed embeddings.

The pairs file is read by :func:`negkit.data.files.load_pairs_file` (JSONL, CSV, Parquet or a Hugging Face dataset
folder; a list of positives per row or repeated rows; every problem a :class:`~negkit.data.files.DataFileError`
naming the file, the column and the row). On top of it this module keeps what mining needs and the training
loader does not: document ids, the corpus file's row order, and each query's excluded documents.

**Documents** (the rows that precomputed ``--corpus-embeddings`` must follow):

* with ``--corpus``: the corpus file's rows, in file order, with their ``id`` (a text that occurs in several rows
  is several documents), then every positive text that is not in the corpus file, with id ``pos-J`` (``J`` its
  document index). ``--corpus-embeddings`` then has one row per corpus file row, and every positive must be in the
  corpus file (there would be no vector for it otherwise);
* without: the distinct positive texts in order of first appearance in PAIRS, ids ``pos-J``.

**Queries** (the rows of ``--query-embeddings``): one per distinct whitespace-normalised query text, in order of
first appearance in PAIRS; a query's positives are those of all its rows.

**Excluded documents** per query, by reason: ``positive``, every document whose (whitespace-normalised) text is one
of the query's positives; ``same_text``, every other document whose :func:`match_key` (case, punctuation and
spacing ignored) equals the key of the query or of one of its positives.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from negkit.data.files import load_pairs_file
from negkit.data.text import normalise_text

__all__ = ["MiningError", "MiningInput", "load_mining_input", "match_key"]

logger = logging.getLogger(__name__)

_PUNCTUATION = re.compile(r"[^\w\s]", flags=re.UNICODE)


class MiningError(ValueError):
    """Bad input or settings for mining; the message is one line that says what to change."""


def match_key(text: str) -> str:
    """The key under which two texts count as the same for the ``same_text`` filter: NFKC, case-folded,
    punctuation removed, whitespace collapsed (``"What is AI?"`` and ``"what is  AI"`` share a key)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


@dataclass(frozen=True)
class MiningInput:
    """Queries, documents and each query's excluded documents (see the module docstring).

    With ``Q`` queries and ``N`` documents:

    Attributes:
        queries: ``Q`` distinct whitespace-normalised query texts (first-appearance order).
        documents: ``N`` whitespace-normalised document texts.
        document_ids: ``N`` distinct string ids.
        positive_texts: ``Q`` lists of each query's distinct positive texts (first-appearance order).
        positive_docs: ``Q`` lists, the document index of each positive text (its first document).
        positives: ``Q`` sorted tuples: every document whose text is one of the query's positives.
        same_text: ``Q`` sorted tuples: the other documents whose :func:`match_key` equals the query's or a
            positive's.
        corpus_file_rows: number of rows of the corpus file (0 without one); documents past it are positives
            missing from the corpus file.
        description: one line: the source and the sizes.
        digest: a hash of the texts, ids and positives (resume checks that the input did not change).
    """

    queries: list[str]
    documents: list[str]
    document_ids: list[str]
    positive_texts: list[list[str]]
    positive_docs: list[list[int]]
    positives: list[tuple[int, ...]]
    same_text: list[tuple[int, ...]]
    corpus_file_rows: int
    description: str
    digest: str

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_documents(self) -> int:
        return len(self.documents)

    def excluded_counts(self) -> np.ndarray:
        """``[Q]`` int64: how many documents the identity filters remove for each query."""
        return np.array([len(p) + len(s) for p, s in zip(self.positives, self.same_text, strict=True)], np.int64)


def _corpus_rows(path: Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of a corpus file, one per row (already validated by ``load_pairs_file``)."""
    from negkit.data.files import _records  # the reader load_pairs_file used; the rows were validated there

    ids, texts = [], []
    for _, record in _records(path).rows():
        value = record["id"]
        value = value.item() if isinstance(value, np.generic) else value
        ids.append(str(value).strip())
        texts.append(normalise_text(str(record["text"])))
    return ids, texts


def load_mining_input(pairs: str | Path, *, query: str, positive: str, corpus: str | Path | None = None) -> MiningInput:
    """Read PAIRS (and the corpus file) for mining; see the module docstring for ids, order and filters.

    Raises:
        DataFileError: every problem of the files (missing file or column, empty text, a query without a
            positive, duplicate corpus ids, ...), naming the file, the column and the row.
    """
    data = load_pairs_file(pairs, query=query, positive=positive, corpus=corpus)
    if corpus is not None:
        documents_ids, documents = _corpus_rows(Path(corpus))
    else:
        documents_ids, documents = [], []
    corpus_file_rows = len(documents)
    rows_of: dict[str, list[int]] = defaultdict(list)
    for j, text in enumerate(documents):
        rows_of[text].append(j)
    for text in data.documents:  # positives (and corpus texts, already present) in first-appearance order
        if text not in rows_of:
            rows_of[text].append(len(documents))
            documents.append(text)
            documents_ids.append("")
    taken = set(documents_ids[:corpus_file_rows])
    for j in range(corpus_file_rows, len(documents)):
        candidate = f"pos-{j}"
        while candidate in taken:
            candidate = "_" + candidate
        documents_ids[j] = candidate
        taken.add(candidate)

    by_key: dict[str, list[int]] = defaultdict(list)
    for j, text in enumerate(documents):
        by_key[match_key(text)].append(j)
    positive_texts, positive_docs, positives, same_text = [], [], [], []
    for text, relevant in zip(data.queries, data.relevant, strict=True):
        texts = [data.documents[j] for j in relevant]
        exact = sorted({j for t in texts for j in rows_of[t]})
        keys = {match_key(text), *(match_key(t) for t in texts)}
        near = sorted({j for key in keys for j in by_key.get(key, ())} - set(exact))
        positive_texts.append(texts)
        positive_docs.append([rows_of[t][0] for t in texts])
        positives.append(tuple(exact))
        same_text.append(tuple(near))

    digest = hashlib.sha256()
    for part in (*data.queries, "\x01", *documents, "\x01", *documents_ids):
        digest.update(part.encode("utf-8") + b"\x00")
    for exact in positives:
        digest.update(np.asarray(exact, dtype=np.int64).tobytes() + b"\x02")
    result = MiningInput(
        queries=list(data.queries),
        documents=documents,
        document_ids=documents_ids,
        positive_texts=positive_texts,
        positive_docs=positive_docs,
        positives=positives,
        same_text=same_text,
        corpus_file_rows=corpus_file_rows,
        description=f"{data.description}; {len(documents)} documents searched",
        digest=digest.hexdigest()[:16],
    )
    logger.info("mining input: %s", result.description)
    return result
