"""The one numerically stable core behind every negkit loss.

Every loss of the InfoNCE family is, for each anchor ``i`` and each of its positives ``p``,

    ℓ_ip = log( [e^{l_ip}] + Σ_{j ∈ N(i)} e^{l_ij + w_ij} ) − c_ip · l_ip

where ``l`` are logits (similarity / temperature), ``N(i)`` is the anchor's set of negatives (a mask over
candidate columns), ``w_ij`` are optional log-weights (importance weights, hardness tilts), the bracketed
positive term is present or not (InfoNCE keeps the positive in the denominator, DCL and SupCon-style
"all others" denominators do not add it again), and ``c_ip`` is an optional positive scale (DCLW).
The anchor's loss is the mean of ``ℓ_ip`` over its positives.

The work is split into two small pure functions so that a loss can transform the negative mass in between
(the debiased estimator of Chuang et al. does):

* :func:`masked_logsumexp` — ``log Σ_{j∈N(i)} e^{l_ij + w_ij}`` for every anchor, in log space;
* :func:`positive_nll` — combines positive logits with that log-mass, per (anchor, positive) pair.

:func:`nce_rows` composes them for the common case. Nothing in negkit exponentiates a logit directly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from negkit._validation import check_reduction, format_rows

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the core computes in: float32 for half-precision inputs, else the input's own dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def similarity_logits(a: Tensor, b: Tensor, temperature: float | Tensor, similarity: str = "cosine") -> Tensor:
    """Logits ``sim(a_i, b_j) / temperature``.

    Shapes: ``a [B,d]`` with ``b [N,d]`` gives ``[B,N]``; ``a [B,d]`` with ``b [B,K,d]`` (per-anchor
    candidates) gives ``[B,K]``. Half-precision inputs are computed in float32. With ``similarity="cosine"``
    both sides are L2-normalised first.
    """
    dtype = compute_dtype(a.dtype)
    a = a.to(dtype)
    b = b.to(dtype)
    if similarity == "cosine":
        a = F.normalize(a, dim=-1)
        b = F.normalize(b, dim=-1)
    sims = torch.einsum("bd,bkd->bk", a, b) if b.dim() == 3 else a @ b.transpose(0, 1)
    return sims / temperature


def masked_logsumexp(logits: Tensor, mask: Tensor | None = None, log_weights: Tensor | None = None) -> Tensor:
    """``log Σ_j mask_ij · exp(logits_ij + log_weights_ij)`` over the last dimension.

    Args:
        logits: ``[..., C]`` candidate logits.
        mask: bool, broadcastable to ``logits``; ``False`` removes a candidate. ``None`` keeps all.
        log_weights: broadcastable to ``logits``; added to the logits before the reduction.

    Returns:
        ``[...]``; ``-inf`` for rows with no candidate left. Such rows get zero (not NaN) gradient, so they
        can be carried along and excluded later.
    """
    x = logits if log_weights is None else logits + log_weights
    if mask is None:
        return torch.logsumexp(x, dim=-1)
    mask = mask.expand_as(x)
    empty = ~mask.any(dim=-1, keepdim=True)
    # Empty rows are filled with zeros so that their backward pass stays finite, then reported as -inf.
    x = x.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    return torch.logsumexp(x, dim=-1).masked_fill(empty.squeeze(-1), float("-inf"))


def positive_nll(
    positive_logits: Tensor,
    log_negative_mass: Tensor,
    *,
    include_positive: bool = True,
    positive_scale: Tensor | None = None,
) -> Tensor:
    """Per-pair loss ``log([e^{l_p}] + M) − c·l_p`` with ``log M = log_negative_mass``; broadcasts.

    ``include_positive=True`` is the InfoNCE form ``−log(e^{l_p} / (e^{l_p} + M))`` computed as
    ``logaddexp(l_p, log M) − l_p``; ``False`` is the decoupled form ``log M − l_p``.
    """
    denominator = torch.logaddexp(positive_logits, log_negative_mass) if include_positive else log_negative_mass
    scaled = positive_logits if positive_scale is None else positive_scale * positive_logits
    return denominator - scaled


class RowLoss(NamedTuple):
    """Per-anchor output of the core.

    Attributes:
        loss: ``[B]`` mean over each anchor's positives of ``ℓ_ip``; ``0`` for anchors without a positive.
        num_positives: ``[B]`` number of positives each anchor averaged over (``0`` = anchor left out).
    """

    loss: Tensor
    num_positives: Tensor


def mean_over_positives(pair_losses: Tensor, positive_mask: Tensor | None) -> RowLoss:
    """Average ``[B,P]`` pair losses over each row's positives (``positive_mask [B,P]``, ``None`` = all)."""
    if positive_mask is None:
        count = torch.full(pair_losses.shape[:1], pair_losses.shape[1], device=pair_losses.device)
        return RowLoss(pair_losses.mean(dim=1), count)
    positive_mask = positive_mask.expand_as(pair_losses)
    count = positive_mask.sum(dim=1)
    # where (not multiply) so that masked pairs, whose values may be infinite, never reach the gradient.
    total = torch.where(positive_mask, pair_losses, torch.zeros_like(pair_losses)).sum(dim=1)
    return RowLoss(total / count.clamp(min=1).to(total.dtype), count)


def require_negatives(log_negative_mass: Tensor, anchors: Tensor | None = None, *, context: str = "") -> None:
    """Raise ``ValueError`` naming the anchors (among ``anchors``, a bool ``[B]``) that have no negative."""
    empty = torch.isneginf(log_negative_mass)
    if anchors is not None:
        empty = empty & anchors
    if bool(empty.any()):
        hint = f" ({context})" if context else ""
        raise ValueError(
            f"anchors {format_rows(empty)} have no negative left after masking{hint}; add negatives or relax the mask"
        )


def nce_rows(
    positive_logits: Tensor,
    negative_logits: Tensor,
    *,
    positive_mask: Tensor | None = None,
    negative_mask: Tensor | None = None,
    negative_log_weights: Tensor | None = None,
    include_positive: bool = True,
    positive_scale: Tensor | None = None,
    context: str = "",
) -> RowLoss:
    """The core: per-anchor contrastive loss from positive and candidate logits.

    Args:
        positive_logits: ``[B,P]`` logits of each anchor's positive candidates.
        negative_logits: ``[B,C]`` logits of the candidates that may enter the denominator (may be the same
            tensor as ``positive_logits``, as in SupCon).
        positive_mask: bool ``[B,P]``: which entries of ``positive_logits`` are positives (``None`` = all).
        negative_mask: bool ``[B,C]``: which candidates enter anchor i's denominator (``None`` = all).
        negative_log_weights: ``[B,C]`` (or broadcastable) log-weights added to the candidate logits.
        include_positive: add ``e^{l_ip}`` to the denominator of pair (i, p) (InfoNCE) or not (DCL).
        positive_scale: optional ``[B,P]`` (or broadcastable) factor on the positive logit (DCLW).
        context: appended to the error raised when an anchor with a positive has no negative.

    Returns:
        :class:`RowLoss` with the ``[B]`` per-anchor loss and the number of positives per anchor.

    Raises:
        ValueError: an anchor that has a positive has no candidate left in its denominator.
    """
    log_mass = masked_logsumexp(negative_logits, negative_mask, negative_log_weights)
    has_positive = None if positive_mask is None else positive_mask.any(dim=1)
    require_negatives(log_mass, has_positive, context=context)
    pairs = positive_nll(
        positive_logits, log_mass.unsqueeze(1), include_positive=include_positive, positive_scale=positive_scale
    )
    return mean_over_positives(pairs, positive_mask)


def reduce_loss(loss: Tensor, reduction: str, weights: Tensor | None = None) -> Tensor:
    """Reduce a ``[B]`` per-anchor loss.

    ``weights`` (``[B]``, ≥ 0) weight the mean; anchors with weight 0 are left out of every reduction and
    are reported as 0 by ``"none"``. ``"sum"`` sums the per-anchor values of the anchors kept.
    """
    check_reduction(reduction)
    if weights is not None:
        keep = weights > 0
        loss = torch.where(keep, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weights is None:
        return loss.mean()
    weights = weights.to(loss.dtype)
    return (loss * weights).sum() / weights.sum()


class ViewPairLogits(NamedTuple):
    """Logits of the SimCLR layout: two views ``z1, z2 [B,d]`` stacked into ``Z = [z1; z2]`` (``2B`` rows).

    Attributes:
        logits: ``[2B,2B]`` ``sim(Z_i, Z_j) / T``.
        partner: ``[2B]`` index of each row's other view (``i ± B``).
        not_self: bool ``[2B,2B]``, ``False`` on the diagonal.
    """

    logits: Tensor
    partner: Tensor
    not_self: Tensor


def view_pair_logits(z1: Tensor, z2: Tensor, temperature: float | Tensor, similarity: str = "cosine") -> ViewPairLogits:
    """Build :class:`ViewPairLogits` for two views of the same ``B`` samples."""
    batch = z1.shape[0]
    views = torch.cat([z1, z2], dim=0)
    logits = similarity_logits(views, views, temperature, similarity)
    index = torch.arange(2 * batch, device=z1.device)
    partner = (index + batch) % (2 * batch)
    not_self = index.unsqueeze(0) != index.unsqueeze(1)
    return ViewPairLogits(logits, partner, not_self)


def fold_views(per_view: Tensor) -> Tensor:
    """Average a ``[2B]`` per-view quantity over the two views of each sample: ``[B]``."""
    first, second = per_view.chunk(2)
    return 0.5 * (first + second)
