"""Dataset-wide negatives at small batch: SogCLR's global contrastive loss and EMC²'s MCMC negatives.

Both build their loss by name from :mod:`negkit.losses.registry` (``global_contrastive``, ``emc2``) and take
their default hyper-parameters from it.

Across processes (``torchrun ... -m negkit run``) both receive the gathered global batch and its dataset indices on
every rank (:mod:`negkit.train.loop`), so every rank updates the same per-sample estimates, chains and cache as one
process would, with no exchange of their own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from negkit._validation import normalize_rows
from negkit.losses import get_loss
from negkit.negatives import EmbeddingCache, HardnessSampler, MCMCSampler, NegativeSampler
from negkit.strategies.registry import StrategyLoss, register_strategy

_SOGCLR = get_loss("sogclr")  # global_contrastive
_EMC2 = get_loss("emc2")


@register_strategy("sogclr", "global contrastive loss with per-sample moving averages (SogCLR)", uses_labels=False)
class SogCLR(StrategyLoss):
    """``global_contrastive``: each view's negatives are the ``2B − 2`` other views of the batch, weighted by
    the anchor's moving-average estimate of its dataset-wide partition."""

    def __init__(
        self, temperature: float = _SOGCLR.defaults["temperature"], gamma: float = _SOGCLR.defaults["gamma"]
    ) -> None:
        super().__init__()
        self.temperature, self.gamma = temperature, gamma
        self.loss: nn.Module | None = None

    def bind(self, num_samples: int, dim: int) -> None:
        self.loss = _SOGCLR.create(num_samples=num_samples, temperature=self.temperature, gamma=self.gamma)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        return self.loss(z1, z2, index)

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        # The surrogate weights each in-batch negative by exp(l) / u: the softmax(s / T) tilt over the dataset.
        return HardnessSampler(batch_size - 1, 1.0 / self.temperature)


@register_strategy(
    "emc2", "global contrastive loss with Metropolis-Hastings negatives per anchor (EMC2)", uses_labels=False
)
class EMC2(StrategyLoss):
    """One EMC² step (Yau et al., ICML 2024) on a batch of two views.

    The proposals are the batch's ``2B`` views (a uniform sample of the dataset), so in-batch negatives carry
    gradients at no extra encoder cost. The chains persist across batches: a recorded state that is not in
    this batch is taken from a dataset-wide cache of projections (refreshed every epoch, rows overwritten by
    each batch), detached. EMC²'s code re-encodes such images instead; negkit's losses take features and
    never the model, and the cache row is at most one epoch old. The loss is EMC²'s gradient estimator of
    the global contrastive loss (:func:`negkit.losses.emc2`, the registry's ``emc2``)::

        S_i = −s_ii'/T + (1/k) Σ_{recorded states z} s_iz/T

    averaged over both views as anchors (view 2 continues view 1's chain). Its value is a surrogate.
    """

    needs_refresh = True

    def __init__(self, temperature: float = _EMC2.defaults["temperature"], k: int = 32, burn_in: float = 0.5) -> None:
        super().__init__()
        self.temperature, self.k, self.burn_in = temperature, int(k), burn_in
        # Unit vectors in, dot products out: the 2B views are normalised once, not once per gathered copy.
        self.loss = _EMC2.create(temperature=temperature, similarity="dot", reduction="none")
        self.sampler: MCMCSampler | None = None
        self.cache: EmbeddingCache | None = None

    def bind(self, num_samples: int, dim: int) -> None:
        self.sampler = MCMCSampler(num_samples, self.k, beta=1.0 / self.temperature, burn_in=self.burn_in)
        self.cache = EmbeddingCache(num_samples, dim)

    @torch.no_grad()
    def refresh(self, projections: Tensor, labels: Tensor) -> None:
        self.cache.update(torch.arange(len(projections)), projections, labels)
        self.sampler.reset_counters()

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        views = torch.cat([z1, z2])
        view_ids = torch.cat([index, index])
        unit = normalize_rows(views, dim=1)
        losses = []
        for anchors, positives in ((z1, z2), (z2, z1)):
            negatives = self.sampler.sample(
                anchors.detach(), views.detach(), anchor_ids=index, pool_ids=view_ids, generator=self.generator
            )
            in_batch = negatives.indices >= 0
            state_ids = self.sampler.last_state_ids
            # A recorded state is unset (-1) only if every proposal of a fresh chain was the anchor's own id (a
            # batch of one sample): the loss skips an anchor with no recorded state (strict mode: an error).
            recorded = in_batch | (state_ids >= 0)
            # In-batch states carry gradient; the others are cache rows, and only the gathered ones are
            # normalised: the step's cost does not grow with the dataset.
            stale = normalize_rows(self.cache.table[state_ids.clamp(min=0)], dim=2)
            negative_vectors = torch.where(in_batch.unsqueeze(2), unit[negatives.indices.clamp(min=0)], stale)
            a, p = normalize_rows(anchors, dim=1), normalize_rows(positives, dim=1)
            losses.append(self.loss(a, p, negative_vectors, negative_mask=recorded))
        self.cache.update(index, z2.detach(), labels)
        return 0.5 * (losses[0] + losses[1]).mean()

    def negative_sampler(self, batch_size: int) -> NegativeSampler:
        return HardnessSampler(self.k, 1.0 / self.temperature, replacement=True)

    def epoch_metrics(self) -> dict[str, float]:
        return {"acceptance_rate": self.sampler.acceptance_rate}
