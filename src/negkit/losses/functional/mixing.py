"""Metrix: mixing positives with hard negatives, with mixed labels (Venkataramanan et al., ICLR 2022)."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from negkit._validation import (
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


def metrix(
    anchor: Tensor,
    positive: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    alpha: float = 2.0,
    top_k: int = 3,
    weight: float = 1.0,
    lam: Tensor | None = None,
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

    λ = 1 gives a second copy of the positive, λ = 0 one more copy of a hard negative. Metrix's default mixes in
    feature space (inside the encoder); this is the embedding-space variant, which needs no encoder access. A
    batch of one row has no negative: 0 with a zero gradient; strict mode raises.

    Args:
        anchor: ``[B,d]``.
        positive: ``[B,d]``.
        temperature: T > 0.
        alpha: the Beta(α, α) parameter > 0 (2.0).
        top_k: hardest negatives mixed per anchor ≥ 1 (3; capped at ``B − 1``).
        weight: weight ≥ 0 of the mixed term (1.0).
        lam: optional ``[B, min(top_k, B−1)]`` mixing coefficients in [0, 1] (else drawn with ``generator``).
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
        check_tensor("lam", lam, 2)
        if tuple(lam.shape) != (rows, k):
            raise ValueError(f"lam must have shape [{rows}, {k}], got {tuple(lam.shape)}")
        if not bool(((lam >= 0) & (lam <= 1)).all()):
            raise ValueError("lam must lie in [0, 1]")
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
    if lam is None:
        beta = torch.distributions.Beta(torch.tensor(alpha_value), torch.tensor(alpha_value))
        with torch.random.fork_rng(devices=[]) if generator is not None else contextlib.nullcontext():
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            lam = beta.sample((rows, k))
    lam = lam.to(device=anchor.device, dtype=logits.dtype)
    hardest = logits.detach().masked_fill(~not_self, float("-inf")).topk(k, dim=1).indices  # [B,k]
    # cosine: mix directions (unit rows), so that a long vector does not outweigh its partner
    points = positive.to(logits.dtype)
    points = normalize_rows(points) if similarity == "cosine" else points
    mixed = lam.unsqueeze(-1) * points.unsqueeze(1) + (1 - lam.unsqueeze(-1)) * points[hardest]  # [B,k,d]
    mixed_logits = similarity_logits(anchor, mixed, temperature, similarity, names="anchor, mixed")
    as_positive = positive_nll(mixed_logits, log_negatives.unsqueeze(1))
    as_negative = torch.logaddexp(log_clean.unsqueeze(1), mixed_logits) - log_clean.unsqueeze(1)
    mixed_loss = (lam * as_positive + (1 - lam) * as_negative).mean(dim=1)
    return reduce_loss(clean + weight_value * mixed_loss, reduction, skipped=skipped)
