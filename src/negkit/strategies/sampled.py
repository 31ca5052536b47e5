"""Strategies whose negatives come from beyond the batch: sampled from a dataset-wide cache, or a queue.

The cache holds one projection per training sample. It is refreshed with the current model at the start of
every epoch and the rows of each batch are overwritten with their new (detached) projections after every step,
so a row is at most one epoch old. Negatives taken from it carry no gradient (as in MoCo's queue): the
loss trains the anchors against them. The anchor's own row (its other view, one step old) is never a negative.

Every strategy here trains ``info_nce`` (:mod:`negkit.losses.registry`), built by name with that name's
default temperature.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from negkit._validation import normalize_rows
from negkit.losses import get_loss
from negkit.metrics import false_negative_rate, in_batch_false_negative_rate
from negkit.negatives import (
    AdaptiveK,
    ClassConditionalSampler,
    EmbeddingCache,
    HardnessSampler,
    MinedSampler,
    NegativeSampler,
    Queue,
    UniformSampler,
    collision_rate,
    ranking_quality,
)
from negkit.strategies.registry import StrategyLoss, register_strategy

_INFO_NCE = get_loss("info_nce")
# the default temperature of every strategy here: the info_nce loss's
_TEMPERATURE: float = _INFO_NCE.defaults["temperature"]


class CachedNegatives(StrategyLoss):
    """InfoNCE of ``z1`` against ``z2`` with ``k`` negatives per anchor sampled from the dataset cache.

    ``in_batch`` also keeps the other positives of the batch as negatives; ``importance_weights`` passes the
    sampler's log-weights to the loss (an estimate of the InfoNCE over the whole dataset instead of the loss on
    the sampled distribution).
    """

    needs_refresh = True
    uses_labels = False

    def __init__(self, k: int, temperature: float, in_batch: bool, importance_weights: bool) -> None:
        super().__init__()
        self.k, self.temperature = int(k), temperature
        self.in_batch, self.importance_weights = in_batch, importance_weights
        self.loss = _INFO_NCE.create(temperature=temperature, in_batch_negatives=in_batch)
        self.cache: EmbeddingCache | None = None
        self._last_fnr = 0.0

    @abc.abstractmethod
    def sampler(self) -> NegativeSampler:
        """The sampler that draws this step's negatives from the cache."""

    def bind(self, num_samples: int, dim: int) -> None:
        self.cache = EmbeddingCache(num_samples, dim)

    @torch.no_grad()
    def refresh(self, projections: Tensor, labels: Tensor) -> None:
        self.cache.update(torch.arange(len(projections)), projections, labels)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        cache = self.cache
        negatives = self.sampler().sample(
            z1,
            cache.table,
            anchor_labels=labels if self.uses_labels else None,
            pool_labels=cache.labels if self.uses_labels else None,
            anchor_ids=index,
            pool_ids=torch.arange(cache.num_samples),
            positives=z2,
            generator=self.generator,
        )
        self._last_fnr = false_negative_rate(labels, cache.labels[negatives.indices]) if len(labels) else 0.0
        gathered = negatives.gather(cache.table)
        if not self.importance_weights or gathered.log_weights is None:
            gathered = gathered._replace(log_weights=None)
        # With in-batch negatives too, a class-conditional strategy also removes same-label rows of the batch.
        batch_labels = labels if self.in_batch and self.masks_same_label_negatives else None
        loss = self.loss(z1, z2, gathered, labels=batch_labels)
        cache.update(index, z2.detach(), labels)
        cache.tick()
        return loss

    def false_negative_rate(self, labels: Tensor) -> float:
        return self._last_fnr

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        return self.sampler()


@register_strategy(
    "uniform-k",
    "InfoNCE with k negatives drawn uniformly from the dataset (UCL)",
    uses_labels=False,
    tasks=("contrastive", "recommendation"),
)
class UniformK(CachedNegatives):
    def __init__(
        self, k: int = 64, temperature: float = _TEMPERATURE, in_batch: bool = False, importance_weights: bool = False
    ) -> None:
        super().__init__(k, temperature, in_batch, importance_weights)

    def sampler(self) -> NegativeSampler:
        return UniformSampler(self.k)


@register_strategy("class-k", "InfoNCE with k negatives drawn from other classes (SCL)", uses_labels=True)
class ClassK(CachedNegatives):
    uses_labels = True
    masks_same_label_negatives = True

    def __init__(
        self, k: int = 64, temperature: float = _TEMPERATURE, in_batch: bool = False, importance_weights: bool = False
    ) -> None:
        super().__init__(k, temperature, in_batch, importance_weights)

    def sampler(self) -> NegativeSampler:
        return ClassConditionalSampler(self.k)


@register_strategy("hard-k", "InfoNCE with k negatives drawn with probability ∝ exp(beta·s)", uses_labels=False)
class HardK(CachedNegatives):
    def __init__(
        self,
        k: int = 64,
        temperature: float = _TEMPERATURE,
        beta: float = 5.0,
        in_batch: bool = False,
        importance_weights: bool = False,
    ) -> None:
        super().__init__(k, temperature, in_batch, importance_weights)
        self.beta = beta

    def sampler(self) -> NegativeSampler:
        return HardnessSampler(self.k, self.beta)


@register_strategy(
    "mined-k", "InfoNCE with k mined neighbours: skip the top ranks, drop those near the positive", uses_labels=False
)
class MinedK(CachedNegatives):
    def __init__(
        self,
        k: int = 64,
        temperature: float = _TEMPERATURE,
        skip: int = 10,
        window: int = 256,
        margin: float | None = 0.05,
        in_batch: bool = False,
    ) -> None:
        super().__init__(k, temperature, in_batch, importance_weights=False)
        self.skip, self.window, self.margin = int(skip), int(window), margin

    def sampler(self) -> NegativeSampler:
        return MinedSampler(
            self.k,
            (self.skip, self.skip + self.window),
            margin=self.margin,
            choose="random",
            fill="uniform",
            backend="exact",
        )


@register_strategy("queue", "InfoNCE with in-batch negatives plus a FIFO queue of past batches", uses_labels=False)
class QueueStrategy(StrategyLoss):
    def __init__(self, size: int = 1024, temperature: float = _TEMPERATURE) -> None:
        super().__init__()
        self.size, self.temperature = int(size), temperature
        self.loss = _INFO_NCE.create(temperature=temperature)
        self.queue: Queue | None = None
        self._last_fnr = 0.0

    def bind(self, num_samples: int, dim: int) -> None:
        self.queue = Queue(self.size, dim)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        queued = self.queue.embeddings
        in_batch, queue_size = max(0, len(labels) - 1), len(queued)
        rate = in_batch_false_negative_rate(labels) * in_batch if in_batch else 0.0
        if queue_size and len(labels):
            rate += false_negative_rate(labels, self.queue.labels.expand(len(labels), -1)) * queue_size
        self._last_fnr = rate / max(1, in_batch + queue_size)
        loss = self.loss(z1, z2, queued if len(queued) else None)
        self.queue.enqueue(z2.detach(), labels, index)
        return loss

    def false_negative_rate(self, labels: Tensor) -> float:
        return self._last_fnr


@register_strategy(
    "ans",
    "InfoNCE with K dataset negatives, K adapted to the model's ranking quality (ANS)",
    uses_labels=False,
    tasks=("contrastive", "recommendation"),
)
class ANS(CachedNegatives):
    """Adaptive negative sampling (Wu et al.'s idea, negkit's model: :mod:`negkit.negatives.how_many`).

    K negatives per anchor are drawn from the dataset cache (uniformly, or from other classes with
    ``class_conditional``); after every step the batch's ranking quality ``q`` (share of (positive, in-batch
    negative of another label) pairs with the positive scored higher) updates an :class:`AdaptiveK`, which
    moves K towards ``optimal_k(noise_rate, q)`` every ``interval`` steps. ``noise_rate`` defaults to the
    estimate from the training labels (:func:`collision_rate`, plus ``label_noise``).
    """

    def __init__(
        self,
        temperature: float = _TEMPERATURE,
        noise_rate: float | None = None,
        label_noise: float = 0.0,
        class_conditional: bool = False,
        interval: int = 20,
        k_min: int = 1,
        k_max: int = 256,
        initial_k: int = 4,
        harm: float = 0.0,
        in_batch: bool = False,
        model: str = "all_clean",
    ) -> None:
        super().__init__(initial_k, temperature, in_batch, importance_weights=False)
        self.noise_rate, self.label_noise, self.class_conditional = noise_rate, label_noise, class_conditional
        self.uses_labels = class_conditional
        self.masks_same_label_negatives = class_conditional
        self.schedule = AdaptiveK(
            noise_rate if noise_rate is not None else 0.0,
            interval=interval,
            k_min=k_min,
            k_max=k_max,
            harm=harm,
            initial_k=initial_k,
            model=model,
        )

    @torch.no_grad()
    def refresh(self, projections: Tensor, labels: Tensor) -> None:
        super().refresh(projections, labels)
        if self.noise_rate is None:
            self.schedule.noise_rate = collision_rate(
                labels, label_noise=self.label_noise, class_conditional=self.class_conditional
            )

    def sampler(self) -> NegativeSampler:
        k = self.schedule.k
        return ClassConditionalSampler(k) if self.class_conditional else UniformSampler(k)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        loss = super().forward(z1, z2, labels, index)
        with torch.no_grad():
            a, p = normalize_rows(z1, dim=1), normalize_rows(z2, dim=1)
            scores = a @ p.T
            true_negatives = labels.unsqueeze(1) != labels.unsqueeze(0)
            if bool(true_negatives.any()):
                self.schedule.update(ranking_quality(scores.diagonal(), scores, true_negatives))
        return loss

    def epoch_metrics(self) -> dict[str, float]:
        return {"k": float(self.schedule.k), "q": float(self.schedule.q), "noise_rate": self.schedule.noise_rate}
