"""The global contrastive loss (SogCLR; Yuan et al., ICML 2022): dataset-wide negatives at any batch size."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from negkit._validation import (
    check_finite_scalar,
    check_ids,
    check_int,
    check_reduction,
    degenerate,
    record_skipped,
)
from negkit.losses.functional.core import masked_logsumexp, reduce_loss, view_pair_logits
from negkit.losses.functional.decoupled import check_two_views
from negkit.losses.modules import SkipCounting, module_temperature

GAMMA_SCHEDULES = ("constant", "cosine")


class GlobalContrastiveLoss(SkipCounting):
    """SogCLR's global contrastive loss with a per-sample moving-average estimate of each anchor's partition.

    The objective (per anchor view ``i`` with logits ``l = cos / T`` and its other view ``i'``)::

        L_i = −l_ii' + log( (1/|D_i|) Σ_{z ∈ D_i} e^{l_iz} )

    where ``D_i`` is the *whole dataset* of negatives, not the batch. The mean inside the log is estimated by
    ``u[index]``, a moving average over the anchor's visits of the batch estimate
    ``g_i = (1/(2B−2)) Σ_{j ∉ {i, i'}} e^{l_ij}``::

        u_i ← (1 − γ) · u[index_i] + γ · g_i         (γ = 1 on a sample's first visit)

    computed for both views from the same stored value, and stored back as their average (SogCLR's
    ``dynamic_contrastive_loss``). ``forward`` returns the *surrogate*

        S_i = −l_ii' + (1/(2B−2)) Σ_j sg(e^{l_ij} / u_i) · l_ij

    whose gradient is the gradient of ``L_i`` with the partition replaced by its estimate; its value is not
    the loss. :attr:`last_global_loss` holds the estimated ``mean_i L_i`` of the last batch (``−l_ii' +
    log u_i``) for logging. Unlike SogCLR's code the logits are divided by ``T``, so the gradient is that of an
    InfoNCE-scale loss (SogCLR's is ``T`` times smaller) and SimCLR learning rates carry over.

    Everything is computed in log space (``u`` is stored as ``log u``), so the loss stays finite at
    ``T = 0.01``, where LibAUC's ``GCLoss_v1`` overflows. ``log_u`` is a persistent buffer: it is saved in
    checkpoints (LibAUC keeps it outside the ``state_dict``).

    A batch of fewer than two samples has no negative: ``forward`` returns 0 with a zero gradient, leaves the
    estimates untouched, sets :attr:`last_global_loss` to ``None`` and counts its views in
    :attr:`skipped_anchors`; in strict mode (:func:`negkit.losses.strict`) it raises.

    Args:
        num_samples: size of the dataset; ``index`` values must lie in ``[0, num_samples)``.
        temperature: T > 0 (a float; or a learnable ``nn.Parameter`` / tensor with ``requires_grad``, kept as
            given so that it receives a gradient).
        gamma: weight of the new batch estimate in the moving average, in (0, 1]; with
            ``gamma_schedule="cosine"`` it decays from 1 to ``gamma`` over ``decay_epochs`` (call
            :meth:`set_epoch`).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``, the two views averaged).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        temperature: float | Tensor = 0.1,
        gamma: float = 0.9,
        gamma_schedule: str = "constant",
        decay_epochs: int = 1,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        num_samples = check_int("num_samples", num_samples, low=1)
        if gamma_schedule not in GAMMA_SCHEDULES:
            raise ValueError(f"gamma_schedule must be one of {GAMMA_SCHEDULES}, got {gamma_schedule!r}")
        decay_epochs = check_int("decay_epochs", decay_epochs, low=1)
        check_reduction(reduction)
        self.num_samples = num_samples
        self.temperature = module_temperature(temperature)
        self.gamma_final = check_finite_scalar("gamma", gamma, low=0.0, high=1.0)
        if self.gamma_final == 0.0:
            raise ValueError("gamma must be > 0: with gamma = 0 the estimate never moves")
        self.gamma_schedule, self.decay_epochs, self.reduction = gamma_schedule, decay_epochs, reduction
        self.register_buffer("log_u", torch.full((num_samples,), float("-inf")))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.last_global_loss: Tensor | None = None

    @property
    def gamma(self) -> float:
        """The current γ (constant, or the cosine schedule at :attr:`epoch`)."""
        if self.gamma_schedule == "constant":
            return self.gamma_final
        progress = min(1.0, int(self.epoch) / self.decay_epochs)
        return (1.0 - self.gamma_final) * 0.5 * (1.0 + math.cos(math.pi * progress)) + self.gamma_final

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(int(epoch))

    def forward(self, z1: Tensor, z2: Tensor, index: Tensor) -> Tensor:
        """Surrogate loss for two views ``z1, z2 [B, d]`` of the samples ``index [B]`` (dataset indices)."""
        check_two_views(z1, z2)
        batch = z1.shape[0]
        check_ids("index", index, batch)
        if batch and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(
                f"index must lie in [0, {self.num_samples}), got values in [{int(index.min())}, {int(index.max())}]"
            )
        if len(torch.unique(index)) != batch:
            raise ValueError("index holds a sample twice; each sample's estimate is updated once per batch")
        if batch < 2:
            what = "an empty batch" if batch == 0 else "a batch of one sample"
            degenerate(f"{what} has no negative (z1 has {batch} rows); use batch size >= 2")
            record_skipped(2 * batch)
            self.skipped_anchors = 2 * batch
            self.last_global_loss = None
            zero = (z1 * 0).sum(dim=1) + (z2 * 0).sum(dim=1)  # [B] zeros, connected to the inputs
            return reduce_loss(zero, self.reduction)
        self.skipped_anchors = 0
        record_skipped(0)

        pairs = view_pair_logits(z1, z2, self.temperature)
        rows = torch.arange(2 * batch, device=z1.device)
        negative_mask = pairs.not_self.clone()
        negative_mask[rows, pairs.partner] = False
        num_negatives = 2 * batch - 2
        positive_logits = pairs.logits[rows, pairs.partner]

        with torch.no_grad():
            log_batch = masked_logsumexp(pairs.logits, negative_mask) - math.log(num_negatives)  # [2B]
            stored = self.log_u[index].to(log_batch.dtype).repeat(2)  # same stored value for both views
            first_visit = torch.isneginf(stored)
            gamma = torch.where(first_visit, 1.0, self.gamma).to(log_batch.dtype)
            log_u = torch.logaddexp(torch.log1p(-gamma) + stored, torch.log(gamma) + log_batch)
            log_u = torch.where(first_visit, log_batch, log_u)
            first, second = log_u.chunk(2)
            self.log_u[index] = (torch.logaddexp(first, second) - math.log(2.0)).to(self.log_u.dtype)
            weights = torch.exp(pairs.logits - log_u.unsqueeze(1)).masked_fill(~negative_mask, 0.0)
            self.last_global_loss = (log_u - positive_logits).mean().detach()

        surrogate = -positive_logits + (weights * pairs.logits.masked_fill(~negative_mask, 0.0)).sum(1) / num_negatives
        first, second = surrogate.chunk(2)
        return reduce_loss(0.5 * (first + second), self.reduction)

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, temperature={self.temperature!r}, gamma={self.gamma_final}, "
            f"gamma_schedule={self.gamma_schedule!r}"
        )
