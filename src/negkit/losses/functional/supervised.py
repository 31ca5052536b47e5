"""Supervised contrastive loss (SupCon, L_out)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import check_labels, check_positive_scalar, check_reduction, check_tensor
from negkit.losses.functional.core import nce_rows, reduce_loss, similarity_logits


def sup_con(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """Supervised contrastive loss L_out (Khosla et al., NeurIPS 2020, Eq. 2).

    For row ``i`` of ``N`` embeddings (all views flattened into rows), ``A(i)`` = all rows but ``i`` and
    ``P(i) = {p ∈ A(i) : y_p = y_i}``::

        ℓ_i = −(1/|P(i)|) Σ_{p∈P(i)} log( e^{s_ip/T} / Σ_{a∈A(i)} e^{s_ia/T} )

    Which negatives anchor ``i`` sees: every other row; the denominator also holds the other positives,
    as in the paper (the average over positives sits outside the log).
    Anchors without a positive are left out of the mean (and are 0 in ``"none"``).

    Args:
        embeddings: ``[N,d]``; cosine similarity (L2-normalised inside).
        labels: ``[N]`` class ids. Two views of one image carry the same id.
        temperature: T > 0.
        reduction: ``"mean"`` over anchors with a positive | ``"sum"`` | ``"none"`` (``[N]``).

    Raises:
        ValueError: bad shapes or values, or no anchor has a positive.
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_tensor("embeddings", embeddings, 2)
    labels = check_labels("labels", labels, embeddings.shape[0], embeddings.device)
    logits = similarity_logits(embeddings, embeddings, temperature)
    not_self = ~torch.eye(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
    same_label = labels.unsqueeze(0) == labels.unsqueeze(1)
    positive_mask = same_label & not_self
    if not bool(positive_mask.any()):
        raise ValueError("sup_con: no anchor has a positive (every label occurs once in labels)")
    rows = nce_rows(logits, logits, positive_mask=positive_mask, negative_mask=not_self, include_positive=False)
    return reduce_loss(rows.loss, reduction, weights=(rows.num_positives > 0).to(rows.loss.dtype))
