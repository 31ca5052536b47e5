"""Hard-negative objectives: H-UCL (Robinson et al.'s HCL estimator with debiasing) and H-SCL."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from negkit._validation import check_finite_scalar, check_labels, check_positive_scalar, check_reduction
from negkit.losses.functional.core import (
    fold_skipped_views,
    masked_logsumexp,
    mean_over_positives,
    positive_nll,
    reduce_loss,
    skip_anchors,
    view_pair_logits,
)
from negkit.losses.functional.decoupled import check_two_views

#: Largest ``beta / temperature``: the tilted logits ``β·l`` (|l| ≤ 1/T) must stay far from float32's 3.4e38.
_MAX_TILT = 1e37


def hardness_log_weights(logits: Tensor, negative_mask: Tensor, beta: float) -> Tensor:
    """Self-normalised log importance weights of the hardness tilt ``q_β(j) ∝ e^{β·l_ij}`` (Robinson et al.).

    Returns ``[B,C]`` ``log w_ij = β·l_ij − log Σ_{k∈N(i)} e^{β·l_ik} + log n_i`` with ``n_i = |N(i)|``, so the
    weights of each row sum to ``n_i``: ``Σ_j w_ij e^{l_ij}`` is ``n_i`` times the tilted mean of
    ``e^{l_ij}``. With ``β = 0`` every weight is 1. Entries outside ``negative_mask`` are meaningless.
    """
    tilted = beta * logits
    count = negative_mask.sum(dim=1, keepdim=True).clamp(min=1).to(logits.dtype)
    return tilted - masked_logsumexp(tilted, negative_mask).unsqueeze(1) + torch.log(count)


def debiased_log_mass(
    log_mass: Tensor, positive_logits: Tensor, num_negatives: Tensor, tau_plus: float, temperature: float
) -> Tensor:
    """Log of Chuang et al.'s debiased negative mass, in log space (NeurIPS 2020, Eq. 9, with clamp).

    ``Ng = max( (M − τ⁺·n·e^{l_pos}) / (1 − τ⁺), n·e^{−1/T} )`` where ``M = e^{log_mass}`` is the
    (re-weighted) negative mass, ``n`` the number of negatives and ``e^{−1/T}`` the smallest value
    ``e^{s/T}`` can take for a cosine ``s ≥ −1``. The clamp is a constant: no gradient flows through it.
    All inputs ``[B]``.
    """
    floor = torch.log(num_negatives.to(log_mass.dtype)) - 1.0 / temperature
    if tau_plus == 0.0:
        return torch.maximum(log_mass, floor)
    log_subtracted = math.log(tau_plus) + torch.log(num_negatives.to(log_mass.dtype)) + positive_logits
    gap = log_subtracted - log_mass  # log(b / a); the difference a − b is positive iff gap < 0
    positive_gap = gap < 0
    safe_gap = torch.where(positive_gap, gap, torch.full_like(gap, -1.0))
    log_difference = log_mass + torch.log1p(-torch.exp(safe_gap)) - math.log1p(-tau_plus)
    log_difference = torch.where(positive_gap, log_difference, torch.full_like(gap, float("-inf")))
    return torch.maximum(log_difference, floor)


def hard_nce(
    z1: Tensor,
    z2: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.5,
    beta: float = 1.0,
    tau_plus: float = 0.0,
    detach_weights: bool = False,
    positives: str = "label",
    reduction: str = "mean",
) -> Tensor:
    """Hard-negative contrastive loss: H-UCL without labels, H-SCL with labels.

    Views are stacked as ``Z = [z1; z2]`` (``2B`` rows, cosine similarity ``s``, logits ``l = s/T``).

    **H-UCL** (``labels=None``; Robinson et al., ICLR 2021, with Chuang et al.'s debiasing). Anchor ``i``
    has one positive, its other view ``i'``, and sees all ``n = 2B − 2`` other views as negatives,
    re-weighted towards the hard ones by importance weights ``∝ e^{β·l_ij}`` (self-normalised to sum to n)::

        M_i  = n · Σ_j e^{β l_ij} e^{l_ij} / Σ_j e^{β l_ij}
        Ng_i = max( (M_i − τ⁺·n·e^{l_ii'}) / (1 − τ⁺), n·e^{−1/T} )
        ℓ_i  = −log( e^{l_ii'} / (e^{l_ii'} + Ng_i) )

    ``β = 0, τ⁺ = 0`` is NT-Xent over ``2B`` views.

    **H-SCL** (``labels`` ``[B]`` shared by both views; Jiang et al., arXiv 2209.00078). Anchor ``i``'s
    positives are all other rows with its label (its other view included), its negatives ``N(i)`` only rows
    with a different label, ``n_i = |N(i)|``. For each positive ``p``::

        ℓ_ip = −log( e^{l_ip} / (e^{l_ip} + n_i · Σ_{j∈N(i)} e^{β l_ij} e^{l_ij} / Σ_{j∈N(i)} e^{β l_ij}) )

    With ``positives="view"`` only the other view is a positive (the negatives stay the other classes): the
    form the paper's verification script logs to check ``L_H-SCL ≤ L_H-UCL``.
    ``"mean"`` averages over all (anchor, positive) pairs, as the reference code does; ``"none"``
    gives each sample's mean over its pairs (both views), so ``"mean"`` is the pair-count-weighted mean
    of ``"none"``. With labels the negatives are known, so ``tau_plus`` must be 0.

    Args:
        z1, z2: ``[B,d]`` two views.
        labels: optional ``[B]`` class ids.
        temperature: T > 0 (the papers use 0.5).
        beta: hardness β ≥ 0; it multiplies the logit, so the tilt on the cosine is β/T.
        tau_plus: class prior τ⁺ ∈ [0, 1) for debiasing (H-UCL only).
        detach_weights: stop the gradient through the importance weights (the reference codes do not).
        positives: with labels, ``"label"`` (every same-class row) or ``"view"`` (the other view only).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).

    Degenerate batches: a view with no negative (a batch of one sample; with labels, a batch of one class) is
    skipped: 0, left out of the mean, counted by :func:`negkit.losses.count_skipped`; with none left the loss is
    0 with a zero gradient. In strict mode they raise.

    Raises:
        ValueError: bad shapes or values; labels with ``tau_plus > 0``; ``beta / temperature`` too large for the
            logits' dtype; in strict mode an empty batch or an anchor with no negative.
    """
    temperature_value = check_positive_scalar("temperature", temperature)
    beta = check_finite_scalar("beta", beta, low=0.0)
    tau_plus = check_finite_scalar("tau_plus", tau_plus, low=0.0, high=1.0, high_inclusive=False)
    check_reduction(reduction)
    check_two_views(z1, z2)
    if positives not in ("label", "view"):
        raise ValueError(f"positives must be 'label' or 'view', got {positives!r}")
    if labels is not None:
        labels = check_labels("labels", labels, z1.shape[0], z1.device)
        if tau_plus > 0:
            raise ValueError("tau_plus debiases unlabelled negatives; with labels (H-SCL) set tau_plus=0")
    if beta / temperature_value > _MAX_TILT:
        raise ValueError(
            f"beta / temperature = {beta / temperature_value:g} tilts the logits beyond float32; lower beta or raise "
            "temperature"
        )
    pairs = view_pair_logits(z1, z2, temperature)
    logits = pairs.logits
    rows_index = torch.arange(logits.shape[0], device=z1.device)
    partner_mask = torch.zeros_like(pairs.not_self)
    partner_mask[rows_index, pairs.partner] = True
    if labels is None:
        positive_mask = partner_mask
        negative_mask = pairs.not_self & ~positive_mask
    else:
        view_labels = torch.cat([labels, labels])
        same = view_labels.unsqueeze(0) == view_labels.unsqueeze(1)
        positive_mask = same & pairs.not_self if positives == "label" else partner_mask
        negative_mask = ~same

    log_weights = hardness_log_weights(logits, negative_mask, beta)
    if detach_weights:
        log_weights = log_weights.detach()
    log_mass = masked_logsumexp(logits, negative_mask, log_weights)
    context = "every sample in the batch shares their label" if labels is not None else "a batch of one sample"
    skipped = skip_anchors(2 * z1.shape[0], no_negative=torch.isneginf(log_mass), context=context, empty="z1")

    if labels is None:
        positive_logits = logits[rows_index, pairs.partner]
        num_negatives = negative_mask.sum(dim=1)
        log_mass = debiased_log_mass(log_mass, positive_logits, num_negatives, tau_plus, temperature_value)
        per_view = positive_nll(positive_logits, log_mass)
        per_sample, skipped = fold_skipped_views(per_view, skipped)
        return reduce_loss(per_sample, reduction, skipped=skipped)

    rows = mean_over_positives(positive_nll(logits, log_mass.unsqueeze(1)), positive_mask)
    per_sample, skipped = fold_skipped_views(rows.loss, skipped)
    pair_counts = rows.num_positives[: z1.shape[0]]
    return reduce_loss(per_sample, reduction, weights=pair_counts.to(per_sample.dtype), skipped=skipped)
