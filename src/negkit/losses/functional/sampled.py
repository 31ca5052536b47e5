"""EMC²'s estimator of the global contrastive loss from negatives sampled per anchor (Yau et al., ICML 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_features,
    check_logits_finite,
    check_mask,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    check_tensor,
    normalize_rows,
)
from negkit.losses.functional.core import compute_dtype, reduce_loss, skip_anchors


def emc2(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor,
    *,
    negative_mask: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    """EMC²'s surrogate of the global contrastive loss, from negatives drawn ∝ ``e^{s/T}`` over the dataset.

    The global contrastive loss of anchor ``i`` is ``L_i = −s(a_i, p_i)/T + log Σ_{z ∈ D} e^{s(a_i, z)/T}``
    over the *whole dataset* ``D``. The gradient of the log-partition is the mean of ``∇ s(a_i, z)/T`` under
    the tilted distribution ``q_i(z) ∝ e^{s(a_i, z)/T}``; with ``K`` samples ``n_ik`` of ``q_i`` (EMC² draws
    them with one Metropolis–Hastings chain per anchor, :class:`negkit.negatives.MCMCSampler`) the estimator
    is the gradient of::

        S_i = −s(a_i, p_i)/T + (1/|M_i|) Σ_{k ∈ M_i} s(a_i, n_ik)/T

    Its value is a surrogate, not the loss; only its gradient estimates ``∇ L_i``. The samples are constants
    of the distribution, but gradients do flow into ``negatives`` when they carry any (in-batch samples).

    Which negatives anchor ``i`` sees: its own ``K`` rows ``negatives[i]``, those with ``negative_mask[i, k]``
    (all ``K`` when ``negative_mask`` is ``None``); a row drawn twice counts twice (the chain's recorded
    states are a sample with replacement). The positive never enters the negative mean. An anchor whose mask
    leaves no negative is skipped (0, left out of the mean; in strict mode an error).

    Args:
        anchor: ``[B,d]``.
        positive: ``[B,d]``; row i is anchor i's positive.
        negatives: ``[B,K,d]``; anchor i's sampled negatives.
        negative_mask: optional bool ``[B,K]``; ``False`` leaves a slot out (e.g. a chain that has recorded no
            state there yet).
        temperature: T > 0 (the tilt of the sampling distribution ``β = 1/T`` should match it).
        similarity: ``"cosine"`` (inputs L2-normalised inside) or ``"dot"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).

    Raises:
        ValueError: on shape, dtype or device mismatches, non-finite inputs, a temperature ≤ 0, an unknown
            reduction or similarity, similarities that overflow (``"dot"``); in strict mode, an empty batch or
            an anchor whose mask leaves no negative (the message lists them).
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_similarity(similarity)
    check_features("anchor", anchor, 2)
    check_tensor("positive", positive, 2)
    check_tensor("negatives", negatives, 3)
    if positive.shape != anchor.shape:
        raise ValueError(f"positive must have the shape of anchor {tuple(anchor.shape)}, got {tuple(positive.shape)}")
    batch, dim = anchor.shape
    if negatives.shape[0] != batch or negatives.shape[2] != dim:
        raise ValueError(f"negatives must have shape [{batch}, K, {dim}], got {tuple(negatives.shape)}")
    check_compatible("anchor", anchor, positive=positive, negatives=negatives)
    if negative_mask is None:
        negative_mask = torch.ones(negatives.shape[:2], dtype=torch.bool, device=anchor.device)
    else:
        negative_mask = check_mask("negative_mask", negative_mask, tuple(negatives.shape[:2]), anchor.device)
    count = negative_mask.sum(dim=1)
    skipped = skip_anchors(batch, no_negative=count == 0, context="negative_mask leaves none", empty="anchor")

    dtype = compute_dtype(anchor.dtype)
    a, p, n = anchor.to(dtype), positive.to(dtype), negatives.to(dtype)
    if similarity == "cosine":
        a, p, n = normalize_rows(a, dim=1), normalize_rows(p, dim=1), normalize_rows(n, dim=2)
    positive_similarity = (a * p).sum(dim=1)
    similarities = torch.einsum("bd,bkd->bk", a, n) * negative_mask
    negative_similarity = similarities.sum(dim=1) / (count if skipped is None else count.clamp(min=1))
    loss = (negative_similarity - positive_similarity) / temperature
    check_logits_finite(loss.detach(), similarity=similarity, temperature=temperature, names="anchor, negatives")
    return reduce_loss(loss, reduction, skipped=skipped)
