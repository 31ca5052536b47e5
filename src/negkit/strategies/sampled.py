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
from torch import Tensor, nn

from negkit._validation import check_int, normalize_rows
from negkit.losses import get_loss
from negkit.losses.functional.core import similarity_logits
from negkit.losses.functional.logq import logq_in_batch_nce
from negkit.losses.functional.ranking import info_nce_from_logits
from negkit.metrics import false_negative_rate, in_batch_false_negative_rate
from negkit.models.momentum import BN_MODES, MOMENTUM_SCHEDULES, MomentumEncoder
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
from negkit.negatives.frequency import StreamingFrequency
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


def _queue_false_negative_rate(labels: Tensor, queue: Queue, in_batch: bool) -> float:
    """Share of same-label rows among an anchor's negatives: the other rows of the batch (when ``in_batch``)
    and the queue's rows, weighted by their numbers."""
    batch = max(0, len(labels) - 1) if in_batch else 0
    queued = len(queue.embeddings)
    rate = in_batch_false_negative_rate(labels) * batch if batch else 0.0
    if queued and len(labels):
        rate += false_negative_rate(labels, queue.labels.expand(len(labels), -1)) * queued
    return rate / max(1, batch + queued)


@register_strategy("queue", "InfoNCE with in-batch negatives plus a FIFO queue of past batches", uses_labels=False)
class QueueStrategy(StrategyLoss):
    """InfoNCE of ``z1`` against ``z2``: anchor i sees the other ``B − 1`` rows of ``z2`` and every row of a
    FIFO queue of the ``size`` latest (detached) ``z2`` rows of past batches, produced by the *same* encoder at
    earlier steps (stale keys; :class:`MoCo` computes them with a momentum encoder instead)."""

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
        self._last_fnr = _queue_false_negative_rate(labels, self.queue, in_batch=True)
        loss = self.loss(z1, z2, queued if len(queued) else None)
        self.queue.enqueue(z2.detach(), labels, index)
        return loss

    def false_negative_rate(self, labels: Tensor) -> float:
        return self._last_fnr


@register_strategy(
    "moco",
    "MoCo v2: keys from a momentum encoder, InfoNCE against the other keys of the batch and a queue of past keys",
    uses_labels=False,
)
class MoCo(StrategyLoss):
    """Momentum contrast (He et al., CVPR 2020; MoCo v2, Chen et al., 2020), shuffle-free, on one process.

    Queries are the online encoder's projections ``z1, z2 [B, d]`` of two views; keys ``k1, k2 [B, d]`` are the
    projections of the same views by a :class:`negkit.models.momentum.MomentumEncoder` (no gradient), which
    follows the online encoder by ``θ_k ← m·θ_k + (1 − m)·θ_q`` before every step. The loss is InfoNCE
    (``info_nce``) of query ``z1[i]`` with positive key ``k2[i]``; anchor i's negatives are the ``size`` (at most)
    keys of the queue (keys of past batches, oldest dropped first) and, with ``in_batch``, the other ``B − 1``
    keys ``k2[j]`` of this batch (MoCo's own first step has an empty queue; with them it already has
    negatives). ``symmetric`` averages it with the same loss for ``z2`` against ``k1`` (MoCo v3's symmetrised
    loss; the task computes both views anyway). After the loss, ``k2`` is enqueued with its dataset index.
    ``exclude_own`` removes from anchor i's negatives the queued keys of its own sample (an earlier epoch's key
    of the same image, which a queue covering much of a small dataset often holds); MoCo keeps them.

    The momentum encoder is attached by the task (:meth:`attach_encoder`, a copy of the freshly built model)
    and fed the two views of each batch (:meth:`encode_keys`) before :meth:`forward`. Used on embeddings alone
    (nothing attached or encoded) the keys are the detached ``z2, z1``: the ``queue`` strategy without gradient
    through the positives. ``momentum_schedule="cosine"`` raises the momentum from ``momentum`` to 1 over
    training (BYOL). ``bn`` is the key encoder's batch-norm mode (``"batch"`` or ``"running"``; see
    :mod:`negkit.models.momentum`). State (``state_dict``): the key encoder's weights and step count, the queue
    and its pointer.
    """

    def __init__(
        self,
        size: int = 1024,
        temperature: float = _TEMPERATURE,
        momentum: float = 0.99,
        momentum_schedule: str = "constant",
        bn: str = "batch",
        symmetric: bool = True,
        in_batch: bool = True,
        exclude_own: bool = False,
    ) -> None:
        super().__init__()
        self.size, self.temperature = check_int("size", size, low=1), temperature
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
        if momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ValueError(f"momentum_schedule must be one of {MOMENTUM_SCHEDULES}, got {momentum_schedule!r}")
        if bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
        self.momentum, self.momentum_schedule, self.bn = float(momentum), momentum_schedule, bn
        self.symmetric, self.in_batch, self.exclude_own = bool(symmetric), bool(in_batch), bool(exclude_own)
        self.loss = _INFO_NCE.create(temperature=temperature, in_batch_negatives=self.in_batch)
        self.queue: Queue | None = None
        self.key_encoder: MomentumEncoder | None = None
        self._online: list[nn.Module] = []  # the online encoder, not a submodule (its weights are the model's)
        self._keys: tuple[Tensor, Tensor] | None = None
        self._last_fnr = 0.0
        self._last_momentum = float(momentum)

    def bind(self, num_samples: int, dim: int) -> None:
        self.queue = Queue(self.size, dim)

    def attach_encoder(self, model: nn.Module, total_steps: int | None = None) -> None:
        """Copy ``model`` (freshly initialised) as the momentum key encoder; ``total_steps`` sizes the cosine
        momentum schedule. The online ``model`` is remembered (not registered) for the EMA updates."""
        self.key_encoder = MomentumEncoder(
            model, self.momentum, schedule=self.momentum_schedule, total_steps=total_steps, bn=self.bn
        )
        self._online = [model]

    @torch.no_grad()
    def encode_keys(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, Tensor]:
        """One EMA step of the key encoder towards the online encoder, then the keys ``(k1, k2)`` of the two
        views (one forward pass over both, as the online encoder's), kept for the next :meth:`forward`."""
        if self.key_encoder is None:
            raise RuntimeError("moco: attach_encoder(model) first (the task does it when it builds the strategy)")
        self._last_momentum = self.key_encoder.update(self._online[0])
        k1, k2 = self.key_encoder(torch.cat([view1, view2])).chunk(2)
        self._keys = (k1, k2)
        return k1, k2

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        k1, k2 = self._keys if self._keys is not None else (z1.detach(), z2.detach())
        self._keys = None
        if k1.shape != z1.shape or k2.shape != z2.shape:
            raise ValueError(f"moco: keys {tuple(k2.shape)} do not match the queries {tuple(z2.shape)}")
        queued = self.queue.embeddings.to(z1.dtype)
        negatives = queued if len(queued) else None
        self._last_fnr = _queue_false_negative_rate(labels, self.queue, self.in_batch)
        if not self.in_batch and negatives is None:  # no negative at all: a zero loss connected to the queries
            loss = 0.0 * (z1.sum() + z2.sum())
        else:
            loss = self._direction(z1, k2.to(z1.dtype), negatives, index)
            if self.symmetric:
                loss = 0.5 * (loss + self._direction(z2, k1.to(z2.dtype), negatives, index))
        self.queue.enqueue(k2.detach(), labels, index)
        return loss

    def _direction(self, queries: Tensor, keys: Tensor, queued: Tensor | None, index: Tensor) -> Tensor:
        """InfoNCE of ``queries`` with positive ``keys`` against the other keys (``in_batch``) and ``queued``."""
        if not self.exclude_own or queued is None:
            return self.loss(queries, keys, queued)
        batch = queries.shape[0]
        logits = similarity_logits(queries, torch.cat([keys, queued]), self.temperature, names="queries, keys")
        others = ~torch.eye(batch, dtype=torch.bool, device=logits.device)
        in_batch = others if self.in_batch else torch.zeros_like(others)
        not_own = self.queue.ids.to(logits.device).unsqueeze(0) != index.to(logits.device).unsqueeze(1)
        mask = torch.cat([in_batch, not_own], dim=1)
        return info_nce_from_logits(logits[:, :batch].diagonal().unsqueeze(1), logits, negative_mask=mask)

    def false_negative_rate(self, labels: Tensor) -> float:
        return self._last_fnr

    def epoch_metrics(self) -> dict[str, float]:
        return {"momentum": self._last_momentum} if self.key_encoder is not None else {}


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


@register_strategy(
    "in-batch-softmax",
    "two-tower in-batch softmax: the items of the batch's other interactions are the negatives",
    uses_labels=False,
    tasks=("recommendation",),
)
class InBatchItems(nn.Module):
    """In-batch negatives for the recommendation task (:func:`negkit.losses.functional.logq.logq_in_batch_nce`).

    For a batch of (user, item) interactions, user i's negatives are the items of the other interactions of the
    batch, minus duplicates of its own item and (``mask_observed``) items the user interacted with in training.
    Items enter a batch in proportion to their popularity, so popular items are over-represented negatives;
    ``in-batch-logq`` corrects for it. The task calls :meth:`batch_loss`.
    """

    def __init__(self, temperature: float = _TEMPERATURE, mask_observed: bool = True) -> None:
        super().__init__()
        self.temperature, self.mask_observed = temperature, bool(mask_observed)
        self.frequency: StreamingFrequency | None = None
        self.correct_positive = True

    def batch_loss(self, queries: Tensor, items: Tensor, item_ids: Tensor, negative_mask: Tensor | None) -> Tensor:
        """The loss of one batch: ``queries, items [B, d]`` (row i: user i and its item), ``item_ids [B]``."""
        log_q = None
        if self.frequency is not None:
            self.frequency.update(item_ids)  # this step's items first: every item of the batch has an estimate
            log_q = self.frequency.log_probability(item_ids)
        return logq_in_batch_nce(
            queries,
            items,
            log_q,
            temperature=self.temperature,
            negative_mask=negative_mask,
            correct_positive=self.correct_positive,
        )

    def epoch_metrics(self) -> dict[str, float]:
        return {}


@register_strategy(
    "in-batch-logq",
    "in-batch softmax with the logQ correction: logits minus log of each item's streamed sampling frequency",
    uses_labels=False,
    tasks=("recommendation",),
)
class InBatchLogQ(InBatchItems):
    """``in-batch-softmax`` with Yi et al.'s sampling-bias correction (RecSys 2019): every logit of item j (the
    positive's too, unless ``correct_positive=False``) is lowered by ``log p̂_j``, the item's frequency per batch
    estimated on the stream of batches by :class:`negkit.negatives.frequency.StreamingFrequency` (``alpha``,
    ``num_buckets``, ``num_hashes``); the estimator is updated with each batch's items before its loss, and is
    saved in ``state_dict``."""

    def __init__(
        self,
        temperature: float = _TEMPERATURE,
        mask_observed: bool = True,
        alpha: float = 0.01,
        num_buckets: int = 1 << 16,
        num_hashes: int = 1,
        correct_positive: bool = True,
    ) -> None:
        super().__init__(temperature, mask_observed)
        self.frequency = StreamingFrequency(num_buckets, alpha=alpha, num_hashes=num_hashes)
        self.correct_positive = bool(correct_positive)
