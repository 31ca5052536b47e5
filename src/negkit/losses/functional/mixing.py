"""Metrix: mixing positives with hard negatives, with mixed labels (Venkataramanan et al., ICLR 2022)."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_finite_scalar,
    check_int,
    check_pair,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    check_tensor,
    normalize_rows,
)
from negkit.losses.functional.core import masked_logsumexp, positive_nll, reduce_loss, similarity_logits, skip_anchors


def _check_lam(lam: Tensor, rows: int, k: int) -> None:
    """Given mixing coefficients: ``[rows, k]`` values in ``[0, 1]`` (NaN fails the range check)."""
    check_tensor("lam", lam, 2)
    if tuple(lam.shape) != (rows, k):
        raise ValueError(f"lam must have shape [{rows}, {k}], got {tuple(lam.shape)}")
    if not bool(((lam >= 0) & (lam <= 1)).all()):
        raise ValueError("lam must lie in [0, 1]")


def metrix(
    anchor: Tensor,
    positive: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    alpha: float = 2.0,
    top_k: int = 3,
    weight: float = 1.0,
    lam: Tensor | None = None,
    mixed: Tensor | None = None,
    generator: torch.Generator | None = None,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    """InfoNCE plus Metrix's embedding-space mixes of each positive with its anchor's hardest negatives.

    Anchor ``i`` has positive ``p_i`` and the other rows' positives as negatives (``l_ij = sim(a_i, p_j)/T``).
    For each of its ``top_k`` hardest negatives ``n`` (highest ``l_ij``, ``j ≠ i``) a mixed example
    ``ũ = λ p_i + (1 − λ) p_n`` is made, ``λ ~ Beta(α, α)`` (Metrix's α = 2), with the *mixed label* "positive
    with weight λ, negative with weight 1 − λ". How a mixed label enters InfoNCE (negkit's reading of Metrix's
    ``λ ℓ⁺ + (1 − λ) ℓ⁻``; the reference code only has the contrastive margin loss), with ``m = sim(a_i, ũ)/T``
    and ``Z_i = e^{l_ii} + Σ_{j≠i} e^{l_ij}`` the clean denominator::

        ℓ⁺ = −log( e^m / (e^m + Σ_{j≠i} e^{l_ij}) )      ũ as the positive, against the anchor's negatives
        ℓ⁻ = log(Z_i + e^m) − log Z_i                     what ũ as one more negative adds to the clean loss
        loss_i = InfoNCE_i + weight · mean_ũ [ λ ℓ⁺ + (1 − λ) ℓ⁻ ]

    λ = 1 gives a second copy of the positive, λ = 0 one more copy of a hard negative. Without ``mixed`` this is
    the embedding-space variant (``ũ`` mixes the rows of ``positive``), which needs no encoder access. Metrix's
    default mixes in feature space (inside the encoder), or in input space: pick the pairs and λ with
    :func:`metrix_plan`, mix the positives' inputs or intermediate features with :func:`mix_rows`, encode the
    mixes and pass them as ``mixed [B, k, d]`` with the plan's ``lam``; the loss then uses those embeddings as
    ``ũ`` (the same formula; the encoder is never seen here). A batch of one row has no negative: 0 with a zero
    gradient; strict mode raises.

    Args:
        anchor: ``[B,d]``.
        positive: ``[B,d]``.
        temperature: T > 0.
        alpha: the Beta(α, α) parameter > 0 (2.0).
        top_k: hardest negatives mixed per anchor ≥ 1 (3; capped at ``B − 1``).
        weight: weight ≥ 0 of the mixed term (1.0).
        lam: optional ``[B, min(top_k, B−1)]`` mixing coefficients in [0, 1] (else drawn with ``generator``).
        mixed: optional ``[B, min(top_k, B−1), d]`` embeddings of mixes made outside (input or feature space,
            :func:`metrix_plan`); needs ``lam``, the λ they were mixed with.
        generator: the ``torch.Generator`` λ is drawn with.
        similarity: ``"cosine"`` or ``"dot"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).
    """
    check_positive_scalar("temperature", temperature)
    alpha_value = check_positive_scalar("alpha", alpha)
    top_k = check_int("top_k", top_k, low=1)
    weight_value = check_finite_scalar("weight", weight, low=0.0)
    check_reduction(reduction)
    check_similarity(similarity)
    check_pair(anchor, positive)
    rows = anchor.shape[0]
    k = min(top_k, max(rows - 1, 0))
    if lam is not None:
        _check_lam(lam, rows, k)
    logits = similarity_logits(anchor, positive, temperature, similarity, names="anchor, positive")
    index = torch.arange(rows, device=anchor.device)
    not_self = index.unsqueeze(0) != index.unsqueeze(1)
    log_negatives = masked_logsumexp(logits, not_self)  # [B]
    diagonal = logits.diagonal()
    log_clean = torch.logaddexp(diagonal, log_negatives)
    skipped = skip_anchors(
        rows, no_negative=torch.isneginf(log_negatives), context="a batch of one row has no negative", empty="anchor"
    )
    clean = log_clean - diagonal
    if k == 0:
        return reduce_loss(clean, reduction, skipped=skipped)
    if mixed is not None:
        if lam is None:
            raise ValueError("mixed needs lam: the mixing coefficients the mixes were made with (metrix_plan)")
        check_tensor("mixed", mixed, 3)
        if tuple(mixed.shape) != (rows, k, anchor.shape[1]):
            raise ValueError(f"mixed must have shape [{rows}, {k}, {anchor.shape[1]}], got {tuple(mixed.shape)}")
        check_compatible("anchor", anchor, mixed=mixed)
    if lam is None:
        lam = _draw_lambda(alpha_value, (rows, k), generator)
    lam = lam.to(device=anchor.device, dtype=logits.dtype)
    if mixed is None:
        hardest = _hardest(logits, not_self, k)  # [B,k]
        # cosine: mix directions (unit rows), so that a long vector does not outweigh its partner
        points = positive.to(logits.dtype)
        points = normalize_rows(points) if similarity == "cosine" else points
        mixed = mix_rows(points, hardest, lam)  # [B,k,d]
    mixed_logits = similarity_logits(anchor, mixed, temperature, similarity, names="anchor, mixed")
    as_positive = positive_nll(mixed_logits, log_negatives.unsqueeze(1))
    as_negative = torch.logaddexp(log_clean.unsqueeze(1), mixed_logits) - log_clean.unsqueeze(1)
    mixed_loss = (lam * as_positive + (1 - lam) * as_negative).mean(dim=1)
    return reduce_loss(clean + weight_value * mixed_loss, reduction, skipped=skipped)


class MetrixPlan(NamedTuple):
    """Which rows Metrix mixes: anchor ``i``'s positive with the positives of ``hardest[i] [k]`` (its hardest
    negatives, most similar first), with coefficients ``lam[i] [k]`` (the weight of ``i``'s own positive)."""

    hardest: Tensor
    lam: Tensor


def _draw_lambda(alpha: float, shape: tuple[int, int], generator: torch.Generator | None) -> Tensor:
    """``λ ~ Beta(α, α)`` of ``shape``, reproducible from ``generator`` (the global generator without one)."""
    beta = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha))
    with torch.random.fork_rng(devices=[]) if generator is not None else contextlib.nullcontext():
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return beta.sample(shape)


def _hardest(logits: Tensor, not_self: Tensor, k: int) -> Tensor:
    """``[B,k]`` columns of the ``k`` highest off-diagonal logits of each row (no gradient)."""
    return logits.detach().masked_fill(~not_self, float("-inf")).topk(k, dim=1).indices


def mix_rows(points: Tensor, partners: Tensor, lam: Tensor) -> Tensor:
    """``[B, k, ...]`` Metrix mixes ``λ_im · points[i] + (1 − λ_im) · points[partners[i, m]]``.

    ``points [B, ...]`` are the batch's positives in any space: raw inputs (input-space Metrix, e.g. images
    ``[B, C, H, W]``), intermediate features (feature space) or embeddings; ``partners [B, k]`` and ``lam [B, k]``
    come from :func:`metrix_plan`. Differentiable in ``points``.
    """
    check_tensor("points", points, tuple(range(1, 9)))
    rows = points.shape[0]
    if not isinstance(partners, Tensor) or partners.dim() != 2 or partners.shape[0] != rows:
        raise ValueError(
            f"partners must be a [{rows}, k] tensor of row indices, got {getattr(partners, 'shape', None)}"
        )
    if partners.is_floating_point() or partners.dtype == torch.bool:
        raise ValueError(f"partners must hold integer row indices, got dtype {partners.dtype}")
    if partners.numel() and (int(partners.min()) < 0 or int(partners.max()) >= rows):
        raise ValueError(f"partners must hold row indices in [0, {rows})")
    check_tensor("lam", lam, 2)
    if lam.shape != partners.shape:
        raise ValueError(f"lam must have the shape of partners {tuple(partners.shape)}, got {tuple(lam.shape)}")
    weight = lam.to(device=points.device, dtype=points.dtype).reshape(*lam.shape, *([1] * (points.dim() - 1)))
    return weight * points.unsqueeze(1) + (1 - weight) * points[partners.to(points.device)]


def metrix_plan(
    anchor: Tensor,
    positive: Tensor,
    *,
    top_k: int = 3,
    alpha: float = 2.0,
    lam: Tensor | None = None,
    generator: torch.Generator | None = None,
    similarity: str = "cosine",
) -> MetrixPlan:
    """The pairs and coefficients of Metrix's mixes, for mixing outside the loss (input or feature space).

    Anchor ``i``'s hardest negatives are the ``k = min(top_k, B − 1)`` rows ``j ≠ i`` whose positives are most
    similar to ``anchor_i`` (the same choice :func:`metrix` makes), ``λ ~ Beta(α, α)`` drawn as :func:`metrix`
    draws it from ``generator``. Use::

        plan = metrix_plan(z_anchor, z_positive, generator=g)           # from this batch's embeddings
        x_mix = mix_rows(x_positive, plan.hardest, plan.lam)             # input space: [B, k, C, H, W]
        mixed = model(x_mix.flatten(0, 1)).unflatten(0, plan.lam.shape)  # encode the mixes: [B, k, d]
        loss = metrix(z_anchor, z_positive, lam=plan.lam, mixed=mixed)   # each mix labelled λ positive

    (feature space: mix the positives' backbone features and pass the mixes through the head).

    Args:
        anchor, positive: ``[B,d]`` (only their similarities are used; no gradient).
        top_k: hardest negatives per anchor ≥ 1 (capped at ``B − 1``).
        alpha: the Beta(α, α) parameter > 0.
        lam: optional ``[B, k]`` coefficients in [0, 1] (else drawn).
        generator: the ``torch.Generator`` λ is drawn with.
        similarity: ``"cosine"`` or ``"dot"``.
    """
    alpha_value = check_positive_scalar("alpha", alpha)
    top_k = check_int("top_k", top_k, low=1)
    check_similarity(similarity)
    check_pair(anchor, positive)
    rows = anchor.shape[0]
    k = min(top_k, max(rows - 1, 0))
    if lam is not None:
        _check_lam(lam, rows, k)
    with torch.no_grad():
        logits = similarity_logits(anchor.detach(), positive.detach(), 1.0, similarity, names="anchor, positive")
        index = torch.arange(rows, device=anchor.device)
        hardest = _hardest(logits, index.unsqueeze(0) != index.unsqueeze(1), k)
    if lam is None:
        lam = _draw_lambda(alpha_value, (rows, k), generator) if k else torch.zeros(rows, 0)
    return MetrixPlan(hardest, lam.to(anchor.device))
