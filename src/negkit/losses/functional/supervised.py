"""Supervised contrastive loss (SupCon, L_out)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import (
    check_features,
    check_int,
    check_labels,
    check_logits_finite,
    check_positive_scalar,
    check_reduction,
    normalize_rows,
)
from negkit.losses.functional.core import compute_dtype, nce_rows, reduce_loss, similarity_logits, skip_anchors
from negkit.losses.functional.nce import auto_chunk
from negkit.losses.functional.tiled import tiled_logsumexp


def sup_con(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """Supervised contrastive loss L_out (Khosla et al., NeurIPS 2020, Eq. 2).

    For row ``i`` of ``N`` embeddings (all views flattened into rows), ``A(i)`` = all rows but ``i`` and
    ``P(i) = {p ∈ A(i) : y_p = y_i}``::

        ℓ_i = −(1/|P(i)|) Σ_{p∈P(i)} log( e^{s_ip/T} / Σ_{a∈A(i)} e^{s_ia/T} )

    Which negatives anchor ``i`` sees: every other row; the denominator also holds the other positives,
    as in the paper (the average over positives sits outside the log).
    Anchors without a positive are skipped: left out of the mean (and 0 in ``"none"``), counted by
    :func:`negkit.losses.count_skipped`. A batch where no label repeats (or ``N ≤ 1``) gives 0 with a zero
    gradient, as pytorch-metric-learning does; in strict mode (:func:`negkit.losses.strict`) it raises.

    Args:
        embeddings: ``[N,d]``; cosine similarity (L2-normalised inside).
        labels: ``[N]`` class ids. Two views of one image carry the same id.
        temperature: T > 0, a float or a 0-dim tensor (learnable: it receives its gradient on both paths).
        reduction: ``"mean"`` over anchors with a positive | ``"sum"`` | ``"none"`` (``[N]``).
        chunk_size: compute the denominator in column tiles (memory O(N·chunk) instead of O(N²); see
            :mod:`negkit.losses.functional.tiled`). The positive term needs no tiles: the mean positive logit
            of row i is ``a_i · (S_{y_i} − a_i) / (T·|P(i)|)`` with ``S_c`` the sum of class c's rows.
            ``None`` tiles automatically as ``info_nce`` does (:func:`negkit.losses.functional.nce.auto_chunk`).

    Raises:
        ValueError: bad shapes or values; in strict mode an empty batch or no anchor with a positive.
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_features("embeddings", embeddings, 2)
    labels = check_labels("labels", labels, embeddings.shape[0], embeddings.device)
    n = embeddings.shape[0]
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, low=1)
    chunk = chunk_size if chunk_size is not None else auto_chunk(n, n, embeddings.shape[1], device=embeddings.device)
    if chunk is not None:
        return _sup_con_tiled(embeddings, labels, temperature, reduction, chunk)
    logits = similarity_logits(embeddings, embeddings, temperature, names="embeddings, embeddings")
    not_self = ~torch.eye(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
    same_label = labels.unsqueeze(0) == labels.unsqueeze(1)
    positive_mask = same_label & not_self
    rows = nce_rows(logits, logits, positive_mask=positive_mask, negative_mask=not_self, include_positive=False)
    skip_anchors(n, no_positive=rows.num_positives == 0, empty="embeddings", no_positive_error=_NO_POSITIVE)
    return reduce_loss(rows.loss, reduction, weights=(rows.num_positives > 0).to(rows.loss.dtype))


_NO_POSITIVE = "sup_con: no anchor has a positive (every label occurs once in labels)"


def _sup_con_tiled(
    embeddings: Tensor, labels: Tensor, temperature: float | Tensor, reduction: str, chunk: int
) -> Tensor:
    """L_out with the denominator in tiles and the positive term from per-class sums (no [N, N] tensor)."""
    a = normalize_rows(embeddings.to(compute_dtype(embeddings.dtype)))
    n = a.shape[0]
    ids = torch.arange(n, device=a.device)
    log_denominator = tiled_logsumexp(a, a, 1.0 / temperature, row_labels=ids, col_labels=ids, chunk_size=chunk)
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    class_sums = torch.zeros(len(classes), a.shape[1], dtype=a.dtype, device=a.device).index_add(0, inverse, a)
    positives = (counts[inverse] - 1).to(a.dtype)
    skip_anchors(n, no_positive=positives == 0, empty="embeddings", no_positive_error=_NO_POSITIVE)
    positive_sum = (a * (class_sums[inverse] - a)).sum(dim=1) / temperature
    # rows without a positive have an empty denominator (-inf): left out below, kept out of the check
    check_logits_finite(
        torch.where(positives > 0, log_denominator, 0.0).detach(),
        similarity="cosine",
        temperature=temperature,
        names="embeddings, embeddings",
    )
    loss = log_denominator - positive_sum / positives.clamp(min=1)
    return reduce_loss(loss, reduction, weights=(positives > 0).to(loss.dtype))
