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
from torch import Tensor

from negkit._validation import (
    check_logits_finite,
    check_reduction,
    degenerate,
    format_rows,
    normalize_rows,
    record_skipped,
)

_LOW_PRECISION = (torch.float16, torch.bfloat16)
#: Below this temperature ``cos / T`` can overflow float32; the logits are checked.
_TINY_TEMPERATURE = 1e-30


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the core computes in: float32 for half-precision inputs, else the input's own dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def similarity_logits(
    a: Tensor, b: Tensor, temperature: float | Tensor, similarity: str = "cosine", *, names: str = "a, b"
) -> Tensor:
    """Logits ``sim(a_i, b_j) / temperature``.

    Shapes: ``a [B,d]`` with ``b [N,d]`` gives ``[B,N]``; ``a [B,d]`` with ``b [B,K,d]`` (per-anchor
    candidates) gives ``[B,K]``. Half-precision inputs are computed in float32. With ``similarity="cosine"``
    both sides are L2-normalised first by :func:`negkit._validation.normalize_rows`: scale-invariant (inputs
    ``× 1e30`` give the same logits), and an all-zero row has cosine 0 with everything and a zero gradient.

    Raises:
        ValueError: the logits overflow the compute dtype (``similarity="dot"`` of huge inputs, or a tiny
            temperature); ``names`` names the inputs in the message.
    """
    dtype = compute_dtype(a.dtype)
    a = a.to(dtype)
    b = b.to(dtype)
    if similarity == "cosine":
        a = normalize_rows(a)
        b = normalize_rows(b)
    sims = torch.einsum("bd,bkd->bk", a, b) if b.dim() == 3 else a @ b.transpose(0, 1)
    logits = sims / temperature
    if similarity != "cosine" or _temperature_value(temperature) < _TINY_TEMPERATURE:
        check_logits_finite(logits, similarity=similarity, temperature=temperature, names=names)
    return logits


def _temperature_value(temperature: float | Tensor) -> float:
    return float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)


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
            Anchors in ``no_negative`` may hold any value (``-inf`` for decoupled forms): reduce with
            :func:`reduce_loss` and ``skipped=``, which replaces them by 0.
        num_positives: ``[B]`` number of positives each anchor averaged over (``0`` = anchor left out).
        no_negative: bool ``[B]``: anchors that have a positive but no candidate left in their denominator
            (``None`` when the core did not look).
    """

    loss: Tensor
    num_positives: Tensor
    no_negative: Tensor | None = None


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


def skip_anchors(
    count: int,
    *,
    no_negative: Tensor | None = None,
    no_positive: Tensor | None = None,
    context: str = "",
    empty: str = "the batch",
    no_positive_error: str = "no anchor has a positive",
) -> Tensor | None:
    """The degenerate-batch policy of every negkit loss, applied to ``count`` anchors.

    Args:
        count: number of anchors (rows the loss treats as anchors).
        no_negative: bool ``[count]``: anchors with a positive but no negative left after masking.
        no_positive: bool ``[count]``: anchors without any positive.
        context: why anchors lost their negatives, for the strict-mode message.
        empty: the argument named when ``count`` is 0.
        no_positive_error: the strict-mode message when no anchor has a positive.

    Returns:
        bool ``[count]``, the anchors to skip (loss 0, left out of the mean), or ``None`` when none is.

    Raises:
        DegenerateBatchError: in strict mode (:func:`negkit.losses.strict`), for an empty batch, an anchor with
            no negative left, or a batch where no anchor has a positive.
    """
    if count == 0:
        degenerate(f"{empty} is empty (0 rows): nothing to contrast")
        record_skipped(0)
        return None
    skipped = None
    if no_negative is not None and bool(no_negative.any()):
        hint = f" ({context})" if context else ""
        degenerate(
            f"anchors {format_rows(no_negative)} have no negative left after masking{hint}; add negatives or relax "
            "the mask"
        )
        skipped = no_negative
    if no_positive is not None and bool(no_positive.any()):
        if bool(no_positive.all()):
            degenerate(no_positive_error)
        skipped = no_positive if skipped is None else skipped | no_positive
    record_skipped(0 if skipped is None else int(skipped.sum()))
    return skipped


def average_kept(
    first: Tensor, second: Tensor, first_skipped: Tensor | None, second_skipped: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """``0.5 (first + second)`` per row, or the mean of the rows' values that are not skipped.

    Returns ``(values [B], skipped [B] or None)``: a row is skipped when both of its values are.
    """
    if first_skipped is None and second_skipped is None:
        return 0.5 * (first + second), None
    zeros = torch.zeros_like(first, dtype=torch.bool)
    skip_a = zeros if first_skipped is None else first_skipped
    skip_b = zeros if second_skipped is None else second_skipped
    a = torch.where(skip_a, torch.zeros_like(first), first)
    b = torch.where(skip_b, torch.zeros_like(second), second)
    kept = (~skip_a).to(first.dtype) + (~skip_b).to(first.dtype)
    return (a + b) / kept.clamp(min=1), skip_a & skip_b


def nce_rows(
    positive_logits: Tensor,
    negative_logits: Tensor,
    *,
    positive_mask: Tensor | None = None,
    negative_mask: Tensor | None = None,
    negative_log_weights: Tensor | None = None,
    include_positive: bool = True,
    positive_scale: Tensor | None = None,
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

    Returns:
        :class:`RowLoss` with the ``[B]`` per-anchor loss, the number of positives per anchor and the anchors
        that have a positive but no candidate left in their denominator (``no_negative``; pass it to
        :func:`skip_anchors`, which applies the degenerate-batch policy).
    """
    log_mass = masked_logsumexp(negative_logits, negative_mask, negative_log_weights)
    no_negative = torch.isneginf(log_mass)
    if positive_mask is not None:
        no_negative = no_negative & positive_mask.any(dim=1)
    pairs = positive_nll(
        positive_logits, log_mass.unsqueeze(1), include_positive=include_positive, positive_scale=positive_scale
    )
    rows = mean_over_positives(pairs, positive_mask)
    return RowLoss(rows.loss, rows.num_positives, no_negative)


def reduce_loss(
    loss: Tensor, reduction: str, weights: Tensor | None = None, *, skipped: Tensor | None = None
) -> Tensor:
    """Reduce a ``[B]`` per-anchor loss.

    ``weights`` (``[B]``, ≥ 0) weight the mean; anchors with weight 0 and the ``skipped`` anchors (bool ``[B]``,
    from :func:`skip_anchors`) are left out of every reduction and are reported as 0 by ``"none"``. ``"sum"``
    sums the per-anchor values of the anchors kept. When no anchor is kept (or ``B = 0``) ``"mean"`` and
    ``"sum"`` are 0, with a zero gradient that stays connected to the inputs.
    """
    check_reduction(reduction)
    if skipped is not None:
        kept = (~skipped).to(loss.dtype)
        weights = kept if weights is None else torch.where(skipped, torch.zeros_like(weights), weights)
    if weights is not None:
        keep = weights > 0
        loss = torch.where(keep, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum" or loss.numel() == 0:
        return loss.sum()
    if weights is None:
        return loss.mean()
    weights = weights.to(loss.dtype)
    total = weights.sum()
    if not bool(total > 0):
        return loss.sum()  # every anchor skipped: 0, connected to the inputs
    return (loss * weights).sum() / total


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


def fold_skipped_views(per_view: Tensor, skipped: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """:func:`fold_views` that averages only the views not ``skipped`` (bool ``[2B]``); returns ``(values [B],
    skipped samples [B] or None)``, a sample being skipped when both its views are."""
    if skipped is None:
        return fold_views(per_view), None
    first, second = per_view.chunk(2)
    first_skipped, second_skipped = skipped.chunk(2)
    return average_kept(first, second, first_skipped, second_skipped)
