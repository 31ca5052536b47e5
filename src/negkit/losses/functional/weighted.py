"""Learned soft negative weights: AdaMEOW (Yu, Ge, Li, Zhou; TKDE 2024, arXiv 2212.13847)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_features,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    check_tensor,
)
from negkit.losses.functional.core import nce_rows, reduce_loss, similarity_logits, skip_anchors


def adameow(
    anchor: Tensor,
    positive: Tensor,
    weight_logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    similarity: str = "cosine",
    reduction: str = "mean",
) -> Tensor:
    """AdaMEOW's weighted InfoNCE with soft weights ``w_ij = σ(weight_logits_ij)``.

    With ``l_ij = sim(anchor_i, positive_j) / T``::

        ℓ_i = −l_ii + log Σ_j w_ij e^{l_ij}

    Which negatives anchor ``i`` sees: every ``positive_j``, *including its own positive* ``j = i``, each
    weighted by ``w_ij`` (the reference ``weight_InfoNce`` sums over all ``j`` and weights ``j = i`` too; the
    numerator is unweighted). The weights enter the core as log-weights ``log σ(weight_logits)``. In AdaMEOW
    ``weight_logits_ij = MLP(z_i + z_j)`` (:class:`negkit.losses.AdaMEOW` holds that MLP). Note that this loss
    alone rewards smaller weights (``ℓ_i`` falls as every ``w_ij`` falls), as in the reference code, which has
    no term against it; the weights stay in (0, 1).

    Args:
        anchor: ``[B,d]`` (AdaMEOW's fine-grained view).
        positive: ``[B,d]`` (the coarse view).
        weight_logits: ``[B,B]`` pre-sigmoid weights of every (anchor, positive) pair.
        temperature: T > 0 (AdaMEOW: 1.0 on ACM, 0.9 on DBLP / AMiner / IMDB).
        similarity: ``"cosine"`` (the reference L2-normalises its projections) or ``"dot"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``).
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_similarity(similarity)
    _check_pair(anchor, positive)
    rows = anchor.shape[0]
    check_tensor("weight_logits", weight_logits, 2)
    if tuple(weight_logits.shape) != (rows, rows):
        raise ValueError(f"weight_logits must have shape [{rows}, {rows}], got {tuple(weight_logits.shape)}")
    logits = similarity_logits(anchor, positive, temperature, similarity, names="anchor, positive")
    log_weights = F.logsigmoid(weight_logits.to(logits.dtype))
    row = logits.diagonal().unsqueeze(1)
    result = nce_rows(row, logits, negative_log_weights=log_weights, include_positive=False)
    skipped = skip_anchors(rows, empty="anchor")
    return reduce_loss(result.loss, reduction, skipped=skipped)


def _check_pair(anchor: Tensor, positive: Tensor) -> None:
    check_features("anchor", anchor, 2)
    check_tensor("positive", positive, 2)
    if anchor.shape != positive.shape:
        raise ValueError(f"positive must have the shape of anchor {tuple(anchor.shape)}, got {tuple(positive.shape)}")
    check_compatible("anchor", anchor, positive=positive)
