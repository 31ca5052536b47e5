"""The recommendation task (``task = "recommendation"``): a two-tower model trained with InfoNCE over K uniformly
sampled unrated items per (user, item) interaction, evaluated by leave-last-out ranking.

This is the setting of Wu, Wu & Huang ("Rethinking InfoNCE: How Many Negative Samples Do You Need?", IJCAI
2022): an unrated item may be one the user would like, so every sampled negative is a possible false negative,
and K trades informativeness against noise. Strategies: ``uniform-k`` (fixed K) and ``ans`` (K adapted by
:class:`negkit.negatives.AdaptiveK`); their ``k``, ``temperature`` and schedule parameters mean what they mean
in the contrastive task. ``in-batch-softmax`` and ``in-batch-logq`` use the items of the batch's other
interactions as negatives instead, the latter with Yi et al.'s logQ correction (:mod:`negkit.negatives.frequency`).

Per anchor (user u, training item i): score ``s(u, j) = cos(user(u), item(j))``, candidates = item i and the K
sampled items the user has not interacted with in training (with replacement; they may include hidden and test
items, the known false negatives). Evaluation: for each user, every item except the user's other known positives
is ranked; HR@k = share of users whose test item is in the top k, nDCG@k = mean of ``1/log2(rank + 2)`` over those.

Data: MovieLens-100k (built in), or the user's interactions (``[data] train/user/item/time``, CSV or Parquet;
:func:`negkit.data.files.load_interactions_file`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from negkit._validation import check_tensor
from negkit.data.interactions import INTERACTION_DATASETS, InteractionData, load_interactions
from negkit.losses.functional.core import similarity_logits
from negkit.losses.functional.ranking import catalogue_logits, info_nce_from_logits
from negkit.models.two_tower import TwoTower
from negkit.negatives import ranking_quality, sample_unobserved
from negkit.report import plots
from negkit.report.tables import k_sweep_points
from negkit.strategies import create_strategy, parse_strategy_entry
from negkit.tasks.base import Column, StepResult, Strict, Task, Trainee, register_task

#: parameters of the shared strategies that have a fixed value here (negatives are catalogue items, not rows)
FIXED_PARAMS = {
    "uniform-k": {"in_batch": False, "importance_weights": False},
    "ans": {"in_batch": False, "class_conditional": False},
}


class RecommendSettings(Strict):
    """``[recommend]``: the two-tower model and the ranking cut-off."""

    embedding_dim: int = Field(64, ge=1)
    features: bool = True  # user attributes and item genres beside the id embeddings (when the data has them)
    top_k: int = Field(10, ge=1)


class InteractionFiles(Strict):
    """``[data]`` of the recommendation task: implicit feedback in a CSV or Parquet file."""

    train: str
    user: str = "user_id"
    item: str = "item_id"
    time: str | None = None  # leave-last-out by this column when given, else by row order


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


@register_task
class RecommendationTask(Task):
    name = "recommendation"
    description = "implicit feedback: a two-tower model over sampled unrated items, leave-last-out ranking"
    sections: ClassVar[dict[str, type[Strict]]] = {"recommend": RecommendSettings}
    data_settings = InteractionFiles
    default_dataset = "ml-100k"
    default_strategies = ("uniform-k:k=1", "uniform-k:k=8", "uniform-k:k=64", "ans")
    step_fields = ("false_negative_rate", "batch_q", "k_used")
    columns = (
        Column("hr@10", "HR@10"),
        Column("ndcg@10", "nDCG@10"),
        Column("mean_k", "mean K", "{:.1f}"),
        Column("false_negative_rate", "FN rate", "{:.4f}"),
        Column("train_seconds", "train s", "{:.1f}"),
    )

    data: InteractionData

    @classmethod
    def datasets(cls) -> list[str]:
        return list(INTERACTION_DATASETS)

    @classmethod
    def dataset_loader(cls, name: str) -> Any:
        return INTERACTION_DATASETS[name]

    @classmethod
    def check_strategy(cls, entry: str, params: dict[str, Any]) -> None:
        for key, required in FIXED_PARAMS.get(parse_strategy_entry(entry)[0], {}).items():
            if params.get(key, required) != required:
                raise ValueError(f"{key}={params[key]} is not supported by the recommendation task")

    @classmethod
    def summary_columns(cls, config: dict[str, Any]) -> tuple[Column, ...]:
        k = config["recommend"]["top_k"]  # the ranking columns follow the configured cut-off
        return (Column(f"hr@{k}", f"HR@{k}"), Column(f"ndcg@{k}", f"nDCG@{k}"), *cls.columns[2:])

    @property
    def top_k(self) -> int:
        return self.config.recommend.top_k

    # ------------------------------------------------------------------------------------ data and baselines

    def load(self) -> None:
        config = self.config
        if config.data is None:
            self.data = load_interactions(config.dataset, seed=config.seed, **config.dataset_options)
        else:
            from negkit.data.files import load_interactions_file

            files = config.data
            self.data = load_interactions_file(files.train, user=files.user, item=files.item, time=files.time)

    @property
    def dataset_name(self) -> str:
        return self.data.name

    @property
    def dataset_description(self) -> str:
        return self.data.description

    def baselines(self) -> dict[str, dict[str, Any]]:
        return {"popularity": popularity_ranking(self.data, self.top_k)}

    def run_metrics(self) -> dict[str, Any]:
        return {"known_false_negative_rate": self.data.known_false_negative_rate()}

    # --------------------------------------------------------------------------------------------- training

    def build(self, entry: str) -> Trainee:
        params = self.config.params_for(entry)
        settings = self.config.recommend
        has_features = self.data.item_features.shape[1] > 0 or len(self.data.user_feature_sizes) > 0
        model = TwoTower(self.data, settings.embedding_dim, features=settings.features and has_features)
        strategy = create_strategy(parse_strategy_entry(entry)[0], **params)
        schedule = getattr(strategy, "schedule", None)
        if schedule is not None and params.get("noise_rate") is None:
            schedule.noise_rate = self.data.known_false_negative_rate()
        observed = self.data.train_matrix()
        num_train = len(self.data.train_users)
        return Trainee(
            model,
            strategy,
            list(model.parameters()),
            scratch={
                "observed": observed,
                "known_unobserved": self.data.known & ~observed,  # hidden and test items: the known false negatives
                "batch_size": min(self.config.train.batch_size, num_train),
            },
        )

    def steps_per_epoch(self, trainee: Trainee) -> int:
        return len(self.data.train_users) // trainee.scratch["batch_size"]

    def batches(self, trainee: Trainee, generator: torch.Generator) -> Any:
        batch_size = trainee.scratch["batch_size"]
        order = torch.randperm(len(self.data.train_users), generator=generator)
        for step in range(self.steps_per_epoch(trainee)):
            yield order[step * batch_size : (step + 1) * batch_size]

    def step(self, trainee: Trainee, batch: Any, generator: torch.Generator) -> StepResult:
        model, strategy = trainee.model, trainee.strategy
        schedule = getattr(strategy, "schedule", None)
        users, items = self.data.train_users[batch], self.data.train_items[batch]
        if hasattr(strategy, "batch_loss"):  # in-batch negatives: the items of the other interactions
            return self.in_batch_step(trainee, users, items)
        k = schedule.k if schedule is not None else strategy.k
        negatives = sample_unobserved(users, trainee.scratch["observed"], k, generator)
        positive_logits, negative_logits = catalogue_logits(
            model.users(users), model.items(), items, negatives, strategy.temperature
        )
        loss = info_nce_from_logits(positive_logits, negative_logits)
        batch_q = ranking_quality(positive_logits.detach().squeeze(1), negative_logits.detach())
        if schedule is not None:
            schedule.update(batch_q)
        known = trainee.scratch["known_unobserved"][users.unsqueeze(1), negatives]
        return StepResult(
            loss, {"false_negative_rate": float(known.double().mean()), "batch_q": batch_q, "k_used": float(k)}
        )

    def in_batch_step(self, trainee: Trainee, users: Tensor, items: Tensor) -> StepResult:
        """In-batch negatives (``in-batch-softmax``, ``in-batch-logq``): user i's candidates are the batch's other
        items, minus duplicates of its own item and (``mask_observed``) items it interacted with in training."""
        model, strategy = trainee.model, trainee.strategy
        negatives = items.unsqueeze(0) != items.unsqueeze(1)
        if strategy.mask_observed:
            negatives &= ~trainee.scratch["observed"][users.unsqueeze(1), items.unsqueeze(0)]
        queries, item_vectors = model.users(users), model.items(items)
        loss = strategy.batch_loss(queries, item_vectors, items, negatives)
        with torch.no_grad():
            scores = similarity_logits(queries, item_vectors, 1.0)
            batch_q = ranking_quality(scores.diagonal(), scores, negatives) if bool(negatives.any()) else 0.0
        known = trainee.scratch["known_unobserved"][users.unsqueeze(1), items.unsqueeze(0)] & negatives
        count = float(negatives.sum())
        return StepResult(
            loss,
            {
                "false_negative_rate": float(known.sum()) / max(count, 1.0),
                "batch_q": batch_q,
                "k_used": count / max(len(users), 1),
            },
        )

    def end_epoch(self, trainee: Trainee, epoch: int, last: bool) -> dict[str, Any]:
        model = trainee.model
        with torch.no_grad():
            ranking = leave_last_out_ranking(
                model.users(torch.arange(self.data.num_users)), model.items(), self.data, self.top_k
            )
        return {**ranking, **trainee.strategy.epoch_metrics()}

    def final_metrics(self, trainee: Trainee, history: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
        k = self.top_k
        return {
            f"hr@{k}": history[-1][f"hr@{k}"],
            f"ndcg@{k}": history[-1][f"ndcg@{k}"],
            "false_negative_rate": sum(r["false_negative_rate"] for r in history) / len(history),
            "mean_k": sum(r["k_used"] for r in history) / len(history),
            "train_seconds": sum(r["seconds"] for r in history),
            "final_loss": history[-1]["loss"],
        }

    # --------------------------------------------------------------------------------------------- reporting

    @classmethod
    def report(cls, run_dir: Path, metrics: dict[str, Any], history: list[dict[str, str]]) -> tuple[str, list[str]]:
        strategies, config = metrics["strategies"], metrics["config"]
        top_k = config["recommend"]["top_k"]
        hr, ndcg = f"hr@{top_k}", f"ndcg@{top_k}"
        plot_dir = run_dir / "plots"
        plots.training_curves(history, plot_dir / "curves.png", metric=hr, metric_title=f"HR@{top_k}")
        sections = ["![training curves](plots/curves.png)"]
        sweep = k_sweep_points(strategies, (hr, ndcg))
        if sweep:
            plots.k_sweep(sweep, plot_dir / "k_sweep.png", titles=(f"HR@{top_k}", f"nDCG@{top_k}"))
            sections.append("## Ranking quality vs the number of negatives K\n\n![HR and nDCG vs K](plots/k_sweep.png)")
        if any(row.get("k") for row in history):
            plots.k_trajectory(history, plot_dir / "k_trajectory.png")
            sections.append("## Adaptive K\n\n![K and q during training](plots/k_trajectory.png)")
        train, task = config["train"], config["recommend"]
        setup = (
            f"Two-tower model (dimension {task['embedding_dim']}, {'with' if task['features'] else 'without'} "
            "user/item features), InfoNCE over each interaction's item and K sampled unrated items (cosine / "
            f"temperature), {train['epochs']} epochs, batch {train['batch_size']}, AdamW lr {train['lr']} (warm-up "
            f"{train['warmup_epochs']} epochs, cosine), weight decay {train['weight_decay']}, seed {config['seed']}. "
            "Evaluation: each user's held-out last item ranked against every item except the user's other known "
            "positives. FN rate = share of sampled negatives that are known positives of the user (hidden or test "
            "items); the data's rate for one uniform negative is "
            f"{metrics['known_false_negative_rate']:.4f} (a lower bound: unrecorded likes are not known)."
        )
        return setup, sections
