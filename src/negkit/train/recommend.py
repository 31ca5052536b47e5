"""The recommendation task of ``negkit run`` (``task = "recommendation"``): a two-tower model trained with InfoNCE
over K uniformly sampled unrated items per (user, item) interaction, evaluated by leave-last-out ranking.

This is the setting of Wu, Wu & Huang ("Rethinking InfoNCE: How Many Negative Samples Do You Need?", IJCAI
2022): an unrated item may be one the user would like, so every sampled negative is a possible false negative,
and K trades informativeness against noise. Strategies: ``uniform-k`` (fixed K) and ``ans`` (K adapted by
:class:`negkit.negatives.AdaptiveK`); their ``k``, ``temperature`` and schedule parameters mean what they mean
for images.

Per anchor (user u, training item i): score ``s(u, j) = cos(user(u), item(j))``, candidates = item i and the K
sampled items the user has not interacted with in training (with replacement; they may include hidden and test
items, the known false negatives). Evaluation: for each user, every item except the user's other known positives
is ranked; HR@k = share of users whose test item is in the top k, nDCG@k = mean of ``1/log2(rank + 2)`` over those.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from negkit._validation import check_tensor
from negkit.data.interactions import InteractionData, load_interactions
from negkit.io import write_json
from negkit.losses.functional.core import nce_rows, similarity_logits
from negkit.negatives import ranking_quality, sample_unobserved
from negkit.strategies import create_strategy, get_strategy, parse_strategy_entry
from negkit.train.checkpoint import load_training_state, save_training_state
from negkit.train.schedule import warmup_cosine

if TYPE_CHECKING:
    from collections.abc import Callable

    from negkit.train.config import RunConfig
    from negkit.train.runner import RunPaths


class TwoTower(nn.Module):
    """User and item towers into one ``dim``-dimensional space.

    User tower: id embedding (+ age bucket, gender and occupation embeddings with ``features``); item tower: id
    embedding (+ a linear map of the multi-hot genres). ``users(ids) -> [B, dim]``, ``items(ids) -> [..., dim]``.
    """

    def __init__(self, data: InteractionData, dim: int, *, features: bool = True) -> None:
        super().__init__()
        self.user_id = nn.Embedding(data.num_users, dim)
        self.item_id = nn.Embedding(data.num_items, dim)
        for table in (self.user_id, self.item_id):
            nn.init.normal_(table.weight, std=0.1)
        self.features = features
        if features:
            self.user_attributes = nn.ModuleList(nn.Embedding(size, dim) for size in data.user_feature_sizes)
            self.genres = nn.Linear(data.item_features.shape[1], dim, bias=False)
            self.register_buffer("user_features", data.user_features.clone(), persistent=False)
            self.register_buffer("item_features", data.item_features.clone(), persistent=False)

    def users(self, ids: Tensor) -> Tensor:
        vectors = self.user_id(ids)
        if self.features:
            attributes = self.user_features[ids]
            for column, table in enumerate(self.user_attributes):
                vectors = vectors + table(attributes[..., column])
        return vectors

    def items(self, ids: Tensor | None = None) -> Tensor:
        ids = torch.arange(self.item_id.num_embeddings) if ids is None else ids
        vectors = self.item_id(ids)
        if self.features:
            vectors = vectors + self.genres(self.item_features[ids])
        return vectors


def catalogue_logits(
    model: TwoTower, users: Tensor, items: Tensor, negatives: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """``([B, 1], [B, K])`` logits ``cos(user, item) / T`` of each user's positive item and its K negatives.

    The catalogue is small, so scoring every item ``[B, I]`` and gathering is cheaper than gathering ``B·K``
    item vectors; the loss is the same as ``info_nce(users, items, negatives [B, K, d], in_batch_negatives=False)``.
    """
    logits = similarity_logits(model.users(users), model.items(), temperature)
    return logits.gather(1, items.unsqueeze(1)), logits.gather(1, negatives)


@torch.no_grad()
def leave_last_out_ranking(
    user_vectors: Tensor, item_vectors: Tensor, data: InteractionData, k: int = 10
) -> dict[str, float]:
    """HR@k and nDCG@k of each user's test item among all items but the user's other known positives.

    ``user_vectors [U, d]``, ``item_vectors [I, d]`` (cosine similarity). Ties count against the test item.
    Non-finite vectors are an error (a NaN score would never rank above the test item: a silent perfect HR).
    """
    users = check_tensor("user_vectors", user_vectors, 2)
    items = check_tensor("item_vectors", item_vectors, 2)
    if users.shape[0] != data.num_users or items.shape[0] != data.num_items:
        raise ValueError(
            f"need [{data.num_users}, d] user and [{data.num_items}, d] item vectors, "
            f"got {tuple(users.shape)} and {tuple(items.shape)}"
        )
    return _rank_metrics(similarity_logits(users.double(), items.double(), 1.0), data, k)


def _rank_metrics(scores: Tensor, data: InteractionData, k: int) -> dict[str, float]:
    users = torch.arange(data.num_users)
    test_scores = scores[users, data.test_items]
    # every known positive (the test item included) leaves the ranking; count what scores at least as high
    rank = (scores.masked_fill(data.known, -math.inf) >= test_scores.unsqueeze(1)).sum(dim=1)
    hit = rank < k
    gain = torch.where(hit, 1.0 / torch.log2(rank.double() + 2), torch.zeros((), dtype=torch.float64))
    return {f"hr@{k}": float(hit.double().mean()), f"ndcg@{k}": float(gain.mean())}


def popularity_ranking(data: InteractionData, k: int = 10) -> dict[str, float]:
    """The non-personalised baseline: rank items by their number of training interactions."""
    counts = torch.bincount(data.train_items, minlength=data.num_items).double()
    return _rank_metrics(counts.expand(data.num_users, -1).clone(), data, k)


def train_recommender(
    entry: str,
    config: RunConfig,
    data: InteractionData,
    paths: RunPaths,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one strategy (``uniform-k`` or ``ans``) on ``data``, resuming from its checkpoint; return its metrics."""
    params = config.params_for(entry)
    settings, task = config.train, config.recommend
    torch.manual_seed(config.seed)
    model = TwoTower(data, task.embedding_dim, features=task.features)
    strategy = create_strategy(parse_strategy_entry(entry)[0], **params)
    schedule = getattr(strategy, "schedule", None)
    if schedule is not None and params.get("noise_rate") is None:
        schedule.noise_rate = data.known_false_negative_rate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    num_train = len(data.train_users)
    batch_size = min(settings.batch_size, num_train)
    steps_per_epoch = num_train // batch_size
    scheduler = warmup_cosine(optimizer, settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    observed = data.train_matrix()
    known_unobserved = data.known & ~observed  # hidden and test items: the known false negatives
    stateful = {"model": model, "strategy": strategy, "optimizer": optimizer, "scheduler": scheduler}
    history, start_epoch = load_training_state(paths.checkpoint(entry), generator=generator, **stateful)

    for epoch in range(start_epoch, settings.epochs):
        model.train()
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        sums = {"loss": 0.0, "false_negative_rate": 0.0, "batch_q": 0.0, "k_used": 0.0}
        order = torch.randperm(num_train, generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            users, items = data.train_users[batch], data.train_items[batch]
            k = schedule.k if schedule is not None else strategy.k
            negatives = sample_unobserved(users, observed, k, generator)
            positive_logits, negative_logits = catalogue_logits(model, users, items, negatives, strategy.temperature)
            loss = nce_rows(positive_logits, negative_logits).loss.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            batch_q = ranking_quality(positive_logits.detach().squeeze(1), negative_logits.detach())
            if schedule is not None:
                schedule.update(batch_q)
            sums["loss"] += loss.item()
            sums["false_negative_rate"] += float(known_unobserved[users.unsqueeze(1), negatives].double().mean())
            sums["batch_q"] += batch_q
            sums["k_used"] += k
        model.eval()
        with torch.no_grad():
            ranking = leave_last_out_ranking(model.users(torch.arange(data.num_users)), model.items(), data, task.top_k)
        record = {
            "strategy": entry,
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": time.perf_counter() - started,
            **{key: value / steps_per_epoch for key, value in sums.items()},
            **ranking,
            **strategy.epoch_metrics(),
        }
        history.append(record)
        save_training_state(paths.checkpoint(entry), generator=generator, epoch=epoch + 1, history=history, **stateful)
        if on_epoch_end is not None:
            on_epoch_end(record)

    spec = get_strategy(parse_strategy_entry(entry)[0])
    metrics: dict[str, Any] = {
        **{key: history[-1][key] for key in ranking},
        "false_negative_rate": sum(r["false_negative_rate"] for r in history) / len(history),
        "mean_k": sum(r["k_used"] for r in history) / len(history),
        "train_seconds": sum(r["seconds"] for r in history),
        "final_loss": history[-1]["loss"],
        "strategy": spec.name,
        "description": spec.description,
        "uses_labels": False,
        "params": {**spec.defaults(), **params},
    }
    write_json(paths.result(entry), {"metrics": metrics, "history": history})
    return metrics


def run_recommendation(
    paths: RunPaths,
    config: RunConfig,
    *,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_strategy_start: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Every strategy of a recommendation config, beside the popularity baseline; writes ``metrics.json``."""
    from negkit.train.runner import run_strategies

    started = time.perf_counter()
    data = load_interactions(config.dataset, seed=config.seed, **config.dataset_options)
    strategies = run_strategies(
        paths,
        config,
        lambda entry: train_recommender(entry, config, data, paths, on_epoch_end=on_epoch_end),
        on_strategy_start,
    )
    metrics = {
        "task": "recommendation",
        "dataset": config.dataset,
        "dataset_description": data.description,
        "config": config.model_dump(mode="json"),
        "baselines": {"popularity": popularity_ranking(data, config.recommend.top_k)},
        "known_false_negative_rate": data.known_false_negative_rate(),
        "strategies": strategies,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(paths.metrics, metrics)
    return metrics
