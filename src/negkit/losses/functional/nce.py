"""InfoNCE / NT-Xent with one positive per anchor: in-batch, explicit and shared negatives, symmetric."""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_features,
    check_labels,
    check_logits_finite,
    check_pair,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    check_tensor,
    normalize_rows,
)
from negkit.losses.functional.core import (
    average_kept,
    compute_dtype,
    nce_rows,
    reduce_loss,
    similarity_logits,
    skip_anchors,
)
from negkit.losses.functional.tiled import tiled_logsumexp
from negkit.negatives.types import GatheredNegatives


def info_nce(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor | GatheredNegatives | None = None,
    *,
    temperature: float | Tensor = 0.1,
    labels: Tensor | None = None,
    in_batch_negatives: bool = True,
    negative_log_weights: Tensor | None = None,
    symmetric: bool = False,
    similarity: str = "cosine",
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """InfoNCE (van den Oord et al., 2018; the NT-Xent of SimCLR, Chen et al., 2020) with one positive each.

    For anchor ``i`` with positive ``p_i`` and candidate set ``C(i)``::

        ℓ_i = −log( e^{s(a_i, p_i)/T} / ( e^{s(a_i, p_i)/T} + Σ_{c ∈ C(i)} w_ic · e^{s(a_i, c)/T} ) )

    Which negatives anchor ``i`` sees, ``C(i)``:

    * the other rows ``p_j`` (j ≠ i) of ``positive`` when ``in_batch_negatives`` — minus, when ``labels``
      is given, every ``p_j`` whose label equals ``labels[i]`` (label masking of false negatives);
    * every row of ``negatives``: ``[K,d]`` is shared by all anchors, ``[B,K,d]`` gives anchor i its own
      ``K`` negatives (as gathered by a sampler). ``negative_log_weights`` (``[K]`` or ``[B,K]``) are
      added to these logits: ``w_ic = exp(negative_log_weights)``, e.g. importance weights. A sampler's
      output gathered from its pool (``sampler.sample(...).gather(pool)``) can be passed as ``negatives``
      directly: it carries both the ``[B,K,d]`` rows and their log-weights.

    With ``negatives=None, in_batch_negatives=True, labels=None`` this equals
    ``F.cross_entropy(sim(anchor, positive) / T, arange(B))``.

    Degenerate batches: an anchor left with no negative (a batch of one pair, labels that mask every in-batch
    candidate) is skipped: its loss is 0 and it is left out of the mean; with no anchor left (or ``B = 0``)
    the loss is 0 with a zero gradient connected to the inputs. In strict mode (:func:`negkit.losses.strict`)
    they raise instead; :func:`negkit.losses.count_skipped` counts them (per direction when symmetric).

    Args:
        anchor: ``[B,d]``.
        positive: ``[B,d]``; row i is anchor i's positive.
        negatives: ``None``, ``[K,d]``, ``[B,K,d]``, or :class:`~negkit.negatives.GatheredNegatives`.
        temperature: T > 0 (a float or a scalar tensor, which may be learnable).
        labels: optional ``[B]`` class ids of the pairs, used to drop same-class in-batch negatives.
        in_batch_negatives: use the other positives as negatives.
        negative_log_weights: optional ``[K]`` or ``[B,K]`` log-weights of the explicit negatives.
        symmetric: average with the reverse direction: positive ``p_i`` as the anchor, the ``B`` anchors as its
            candidates (``a_i`` its positive). Explicit ``negatives`` (and their log-weights) enter the forward
            direction only, as in sentence-transformers' symmetric ranking loss; needs ``in_batch_negatives``.
        similarity: ``"cosine"`` (inputs L2-normalised inside) or ``"dot"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[B]``; the two directions averaged if symmetric, a
            skipped direction left out; 0 for a skipped anchor).
        chunk_size: compute the denominator over column tiles of this many candidates with a custom autograd
            function that stores only the per-row log-sum-exp and recomputes tiles in backward (memory
            O(B·chunk + (B+N)·d) instead of O(B·N); :mod:`negkit.losses.functional.tiled`). ``None`` tiles
            automatically (chunks of 128) once the logits would exceed ``AUTO_TILE_LOGITS`` = 2²⁶ entries
            (256 MB in float32). The tiled path covers in-batch and shared ``[K,d]`` negatives with ``[K]``
            log-weights and a float temperature; other inputs use the plain path.

    Raises:
        ValueError: on shape, dtype or device mismatches, non-finite inputs, a temperature ≤ 0, labels of
            the wrong length, an unknown reduction or similarity, symmetric without in-batch negatives, logits
            that overflow (``similarity="dot"`` of huge inputs); in strict mode
            (:class:`~negkit.losses.DegenerateBatchError`) an empty batch or an anchor with no negative left after
            masking (the message lists those anchors).
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_similarity(similarity)
    if isinstance(negatives, GatheredNegatives):
        if negative_log_weights is not None:
            raise ValueError("negatives already carries its log-weights; do not also pass negative_log_weights")
        negatives, negative_log_weights = negatives
    check_pair(anchor, positive)
    batch, dim = anchor.shape
    if negatives is not None:
        check_features("negatives", negatives, (2, 3))
        check_compatible("anchor", anchor, negatives=negatives)
        if negatives.shape[-1] != dim:
            raise ValueError(f"negatives must have {dim} features (the last dim of anchor), got {negatives.shape[-1]}")
        if negatives.dim() == 3 and negatives.shape[0] != batch:
            raise ValueError(
                f"per-anchor negatives [B,K,d] must have B = {batch} (the batch size of anchor), "
                f"got {negatives.shape[0]}"
            )
    if negative_log_weights is not None:
        if negatives is None:
            raise ValueError("negative_log_weights was given but negatives is None")
        num_neg = negatives.shape[-2]
        check_tensor("negative_log_weights", negative_log_weights, (1, 2))
        allowed = {(num_neg,), (batch, num_neg)}
        if tuple(negative_log_weights.shape) not in allowed:
            raise ValueError(
                f"negative_log_weights must have shape [{num_neg}] or [{batch}, {num_neg}], "
                f"got {tuple(negative_log_weights.shape)}"
            )
    if labels is not None:
        labels = check_labels("labels", labels, batch, anchor.device)
    if symmetric and not in_batch_negatives:
        raise ValueError("symmetric=True needs in_batch_negatives=True: the reverse direction's only candidates")
    if not in_batch_negatives and negatives is None:
        raise ValueError("no negatives: in_batch_negatives=False and negatives is None")

    columns = (batch if in_batch_negatives else 0) + (0 if negatives is None else negatives.shape[-2])
    tiled = _use_tiles(chunk_size, batch * columns, negatives, negative_log_weights, temperature)
    direction = _one_direction_tiled if tiled else _one_direction
    extra = {"chunk_size": chunk_size or AUTO_CHUNK} if tiled else {}
    context = "labels removed every in-batch candidate" if labels is not None else ""
    forward, no_negative = direction(
        anchor, positive, negatives, temperature, labels, in_batch_negatives, negative_log_weights, similarity, **extra
    )
    skipped = skip_anchors(batch, no_negative=no_negative, context=context, empty="anchor")
    if symmetric:
        backward, no_negative = direction(
            positive, anchor, None, temperature, labels, in_batch_negatives, None, similarity, **extra
        )
        reverse = f"{context}, positive → anchor direction" if context else "positive → anchor direction"
        backward_skipped = skip_anchors(batch, no_negative=no_negative, context=reverse, empty="anchor")
        forward, skipped = average_kept(forward, backward, skipped, backward_skipped)
    return reduce_loss(forward, reduction, skipped=skipped)


#: Above this many logits per direction, ``info_nce`` tiles the denominator even without ``chunk_size``.
AUTO_TILE_LOGITS = 1 << 26
AUTO_CHUNK = 128


def _use_tiles(
    chunk_size: int | None,
    logits: int,
    negatives: Tensor | None,
    negative_log_weights: Tensor | None,
    temperature: float | Tensor,
) -> bool:
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    supported = (
        (negatives is None or negatives.dim() == 2)
        and (negative_log_weights is None or negative_log_weights.dim() == 1)
        and not (isinstance(temperature, Tensor) and temperature.requires_grad)
    )
    return supported and (chunk_size is not None or logits > AUTO_TILE_LOGITS)


def _one_direction_tiled(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor | None,
    temperature: float | Tensor,
    labels: Tensor | None,
    in_batch_negatives: bool,
    negative_log_weights: Tensor | None,
    similarity: str,
    *,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """Per-anchor InfoNCE ``[B]`` with the denominator's log-sum-exp over column tiles (same value and gradient
    as :func:`_one_direction`), and the anchors with no negative ``[B]``."""
    batch = anchor.shape[0]
    dtype = compute_dtype(anchor.dtype)
    a, p = anchor.to(dtype), positive.to(dtype)
    if similarity == "cosine":
        a, p = normalize_rows(a), normalize_rows(p)
    scale = 1.0 / float(temperature)
    positive_logits = (a * p).sum(dim=1) * scale
    has_negative = torch.zeros(batch, dtype=torch.bool, device=anchor.device)
    parts = [] if in_batch_negatives else [positive_logits]
    if in_batch_negatives:
        own = torch.arange(batch, device=anchor.device)
        parts.append(
            tiled_logsumexp(a, p, scale, row_labels=labels, col_labels=labels, own_column=own, chunk_size=chunk_size)
        )
        if labels is None:
            has_negative |= batch > 1
        else:
            ordered = labels.sort().values
            same = torch.searchsorted(ordered, labels, right=True) - torch.searchsorted(ordered, labels)
            has_negative |= same < batch
    if negatives is not None:
        n = negatives.to(dtype)
        if similarity == "cosine":
            n = normalize_rows(n)
        weights = None if negative_log_weights is None else negative_log_weights.to(dtype)
        parts.append(tiled_logsumexp(a, n, scale, log_weights=weights, chunk_size=chunk_size))
        has_negative |= negatives.shape[0] > 0  # explicit negatives: every anchor has them
    log_denominator = parts[0] if len(parts) == 1 else torch.logaddexp(*parts)
    check_logits_finite(
        torch.stack([positive_logits.detach(), log_denominator.detach()]),
        similarity=similarity,
        temperature=temperature,
        names="anchor, candidates",
    )
    return log_denominator - positive_logits, ~has_negative


def _one_direction(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor | None,
    temperature: float | Tensor,
    labels: Tensor | None,
    in_batch_negatives: bool,
    negative_log_weights: Tensor | None,
    similarity: str,
) -> tuple[Tensor, Tensor]:
    """Per-anchor InfoNCE ``[B]`` for one direction, and the anchors with no negative ``[B]``; candidates
    assembled as columns for the core."""
    batch = anchor.shape[0]
    blocks: list[Tensor] = []
    masks: list[Tensor] = []
    weights: list[Tensor] = []
    if in_batch_negatives:
        batch_logits = similarity_logits(anchor, positive, temperature, similarity, names="anchor, positive")
        positive_logits = batch_logits.diagonal().unsqueeze(1)
        others = ~torch.eye(batch, dtype=torch.bool, device=anchor.device)
        if labels is not None:
            others = others & (labels.unsqueeze(0) != labels.unsqueeze(1))
        blocks.append(batch_logits)
        masks.append(others)
        if negative_log_weights is not None:
            weights.append(torch.zeros_like(batch_logits))
    else:
        positive_logits = similarity_logits(
            anchor, positive.unsqueeze(1), temperature, similarity, names="anchor, positive"
        )
    if negatives is not None:
        explicit = similarity_logits(anchor, negatives, temperature, similarity, names="anchor, negatives")
        blocks.append(explicit)
        masks.append(torch.ones_like(explicit, dtype=torch.bool))
        if negative_log_weights is not None:
            weights.append(negative_log_weights.to(explicit.dtype).expand_as(explicit))
    rows = nce_rows(
        positive_logits,
        torch.cat(blocks, dim=1),
        negative_mask=torch.cat(masks, dim=1),
        negative_log_weights=torch.cat(weights, dim=1) if weights else None,
        include_positive=True,
    )
    return rows.loss, rows.no_negative
