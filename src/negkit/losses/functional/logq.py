"""In-batch softmax with the sampling-bias (logQ) correction of Yi et al. ("Sampling-Bias-Corrected Neural Modeling
for Large Corpus Item Recommendations", RecSys 2019, eqs. 3–4), on the core (:mod:`.core`)."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import check_mask, check_pair, check_positive_scalar, check_reduction, check_tensor
from negkit.losses.functional.core import nce_rows, reduce_loss, similarity_logits, skip_anchors


def logq_in_batch_nce(
    queries: Tensor,
    items: Tensor,
    log_q: Tensor | None,
    *,
    temperature: float | Tensor = 0.1,
    negative_mask: Tensor | None = None,
    correct_positive: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """In-batch InfoNCE of queries against their items, each logit corrected by its item's log sampling probability.

    ``queries [B, d]`` and ``items [B, d]``: row i is a (query, positive item) pair; the other rows' items are
    query i's negatives. With ``s_ij = cos(queries_i, items_j) / T`` and the corrected logits
    ``s^c_ij = s_ij − log_q_j``::

        ℓ_i = −s^c_ii + log( e^{s^c_ii} + Σ_{j ≠ i, mask_ij} e^{s^c_ij} )

    Which negatives query i sees: every other row's item ``j ≠ i`` that ``negative_mask [B, B]`` keeps (bool,
    ``None`` = all; its diagonal is ignored). Use it to remove duplicates of the positive item and the query's
    other known positives. The correction enters the core as log-weights ``−log_q_j`` of the candidates;
    ``correct_positive`` (the paper's form, the default) subtracts ``log_q_i`` from the positive logit too, so
    that a constant factor of ``q`` cancels; ``log_q=None`` is the uncorrected in-batch softmax.

    Args:
        log_q: ``[B]`` log sampling probability (or log expected count per batch) of each row's item, e.g.
            :meth:`negkit.negatives.frequency.StreamingFrequency.log_probability`; treated as a constant
            (detached).
        temperature: ``T > 0``.
        reduction: ``"mean"`` (over anchors kept), ``"sum"`` or ``"none"``.

    Degenerate rows (no negative left after masking) are skipped as in every negkit loss.
    """
    check_pair(queries, items, ("queries", "items"))
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    batch = queries.shape[0]
    logits = similarity_logits(queries, items, temperature, names="queries, items")
    eye = torch.eye(batch, dtype=torch.bool, device=logits.device)
    mask = (
        ~eye
        if negative_mask is None
        else check_mask("negative_mask", negative_mask, (batch, batch), logits.device) & ~eye
    )
    positive = logits.diagonal().unsqueeze(1)
    weights = None
    if log_q is not None:
        log_q = check_tensor("log_q", log_q, 1).detach()
        if log_q.shape[0] != batch:
            raise ValueError(f"log_q must have shape [{batch}], got {tuple(log_q.shape)}")
        log_q = log_q.to(device=logits.device, dtype=logits.dtype)
        weights = -log_q.unsqueeze(0)
        if correct_positive:
            positive = positive - log_q.unsqueeze(1)
    rows = nce_rows(positive, logits, negative_mask=mask, negative_log_weights=weights)
    skipped = skip_anchors(batch, no_negative=rows.no_negative, empty="queries", context="in-batch items masked")
    return reduce_loss(rows.loss, reduction, skipped=skipped)
