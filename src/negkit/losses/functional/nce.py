"""InfoNCE / NT-Xent with one positive per anchor: in-batch, explicit and shared negatives, symmetric."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from negkit._validation import (
    check_compatible,
    check_features,
    check_finite,
    check_int,
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
    _TINY_TEMPERATURE,
    average_kept,
    compute_dtype,
    reduce_loss,
    skip_anchors,
)
from negkit.losses.functional.tiled import tiled_logsumexp, tiled_symmetric_logsumexp
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
        temperature: T > 0: a float or a 0-dim tensor, which may be learnable (its gradient flows on the plain
            and the tiled path; :class:`~negkit.losses.LogitScale` holds CLIP's clamped ``log(1/T)``).
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
            O(B·chunk + (B+N)·d) instead of O(B·N); :mod:`negkit.losses.functional.tiled`). Symmetric: both
            directions come from one pass over the tiles (row and column log-sum-exps of each tile). Every input
            layout and a learnable temperature work on both paths, with the same value and gradient. ``None``
            chooses by size (:func:`auto_chunk`): the plain path (one logits matrix and ``F.cross_entropy``, the
            reverse direction on its transpose) up to ``AUTO_TILE_LOGITS`` logits, tiles of ``AUTO_CHUNK``
            columns beyond.

    Performance: the value scans (non-finite inputs) cost one sum per tensor and one host synchronisation per
    call; :func:`negkit.fast_checks` skips them.

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
    check_pair(anchor, positive, finite=False)
    batch, dim = anchor.shape
    if negatives is not None:
        check_features("negatives", negatives, (2, 3), finite=False)
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
        check_tensor("negative_log_weights", negative_log_weights, (1, 2), finite=False)
        allowed = {(num_neg,), (batch, num_neg)}
        if tuple(negative_log_weights.shape) not in allowed:
            raise ValueError(
                f"negative_log_weights must have shape [{num_neg}] or [{batch}, {num_neg}], "
                f"got {tuple(negative_log_weights.shape)}"
            )
    check_finite(anchor=anchor, positive=positive, negatives=negatives, negative_log_weights=negative_log_weights)
    if labels is not None:
        labels = check_labels("labels", labels, batch, anchor.device)
    if symmetric and not in_batch_negatives:
        raise ValueError("symmetric=True needs in_batch_negatives=True: the reverse direction's only candidates")
    if not in_batch_negatives and negatives is None:
        raise ValueError("no negatives: in_batch_negatives=False and negatives is None")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, low=1)

    columns = (batch if in_batch_negatives else 0) + (0 if negatives is None else negatives.shape[-2])
    chunk = chunk_size if chunk_size is not None else auto_chunk(batch, columns, dim, device=anchor.device)
    inputs = _Inputs(anchor, positive, negatives, negative_log_weights, labels, in_batch_negatives, similarity)
    if chunk is None:
        forward, backward = _plain(inputs, temperature, symmetric)
    else:
        forward, backward = _tiled(inputs, temperature, symmetric, chunk)

    # which anchors have no negative left: known from the shapes and labels, without reading the logits
    explicit = negatives is not None and negatives.shape[-2] > 0
    in_batch_missing = _no_in_batch_negative(batch, labels, anchor.device) if in_batch_negatives else True
    context = "labels removed every in-batch candidate" if labels is not None else ""
    no_negative = None if explicit else _as_rows(in_batch_missing, batch, anchor.device)
    skipped = skip_anchors(batch, no_negative=no_negative, context=context, empty="anchor")
    if backward is None:
        return reduce_loss(forward, reduction, skipped=skipped)
    reverse = f"{context}, positive → anchor direction" if context else "positive → anchor direction"
    reverse_missing = _as_rows(in_batch_missing, batch, anchor.device)
    backward_skipped = skip_anchors(batch, no_negative=reverse_missing, context=reverse, empty="anchor")
    loss, skipped = average_kept(forward, backward, skipped, backward_skipped)
    return reduce_loss(loss, reduction, skipped=skipped)


# ---------------------------------------------------------------------------------------- path and tile choice

#: Without ``chunk_size``, on a CPU, the logits of one direction are tiled beyond this many entries (16 MB in
#: float32, half the last-level cache of the machine measured): past it the plain path's ``[B, N]`` matrix leaves
#: the caches and its ~10 passes over memory (product, softmax, its backward, the transposed copy when symmetric)
#: cost more than recomputing the tiles; below it the two paths measured alike, and the plain one has fewer
#: parallel regions for a busy core to stall.
AUTO_TILE_LOGITS = 1 << 22
#: ... for feature dimensions up to this: the tiles' backward recomputes each tile's product (4 products of
#: ``2·B·N·d`` FLOPs instead of 3), and beyond it the extra product costs more than the memory traffic saved.
AUTO_TILE_MAX_DIM = 256
#: Beyond this many logits (256 MB in float32) the denominator is tiled whatever ``d`` and the device: memory.
AUTO_TILE_MEMORY_LOGITS = 1 << 26
#: The tile width (columns) of the automatic choice on a CPU, per thread (up to 4 threads): wide enough that a core
#: busy with another process stalls few parallel regions (128-column tiles ran 5.7× slower than plain torch with
#: one core busy; on 2 threads of a loaded machine 512-column tiles took 2.0×, 1,024 1.5×, 2,048 1.2×, 4,096
#: 0.9× plain torch's time at B = 4,096), narrow enough on one thread to stay near the caches (there 512–1,024
#: columns were the fastest).
AUTO_CHUNK = 1024
#: A tile holds at most this many logits (64 MB in float32) unless that would make it narrower than AUTO_CHUNK.
AUTO_TILE_MAX_ENTRIES = 1 << 24
#: The tile width on an accelerator (where tiles are used for memory only).
AUTO_CHUNK_DEVICE = 8192


def auto_chunk(
    rows: int, columns: int, dim: int, threads: int | None = None, device: torch.device | str | None = None
) -> int | None:
    """The tile width ``info_nce`` (and ``sup_con``) use without ``chunk_size``, or ``None`` for the plain path
    (one ``[rows, columns]`` logits matrix and ``F.cross_entropy``).

    On a CPU (measured on 2 cores, ``benchmarks/tiles.py`` → ``benchmarks/results/tiles.md``): the plain path up to
    ``AUTO_TILE_LOGITS`` logits, where it is as fast as plain torch; beyond, tiles of ``AUTO_CHUNK`` columns when
    ``dim ≤ AUTO_TILE_MAX_DIM`` (faster than plain torch there, and than open_clip's ``ClipLoss`` when symmetric,
    at a fraction of the memory); with larger ``dim``, the plain path until ``AUTO_TILE_MEMORY_LOGITS``. On other
    devices tiles are chosen for memory only (beyond ``AUTO_TILE_MEMORY_LOGITS``, ``AUTO_CHUNK_DEVICE`` columns; not
    measured here). The CPU tile width grows with the threads (``threads``, default ``torch.get_num_threads()``):
    ``AUTO_CHUNK × min(threads, 4)`` columns, fewer parallel regions for a busy core to stall, but no more than
    ``AUTO_TILE_MAX_ENTRIES`` logits per tile (never below ``AUTO_CHUNK`` columns).
    """
    logits = rows * columns
    if device is not None and torch.device(device).type != "cpu":
        return min(AUTO_CHUNK_DEVICE, max(columns, 1)) if logits > AUTO_TILE_MEMORY_LOGITS else None
    if logits <= AUTO_TILE_LOGITS or (dim > AUTO_TILE_MAX_DIM and logits <= AUTO_TILE_MEMORY_LOGITS):
        return None
    threads = torch.get_num_threads() if threads is None else threads
    width = AUTO_CHUNK * min(max(int(threads), 1), 4)
    width = min(width, max(AUTO_CHUNK, AUTO_TILE_MAX_ENTRIES // max(rows, 1)))
    return min(width, max(columns, 1))


# ------------------------------------------------------------------------------------------------ the two paths


class _Inputs(NamedTuple):
    anchor: Tensor
    positive: Tensor
    negatives: Tensor | None
    log_weights: Tensor | None
    labels: Tensor | None
    in_batch: bool
    similarity: str


def _no_in_batch_negative(batch: int, labels: Tensor | None, device: torch.device) -> Tensor | bool:
    """Anchors without an in-batch negative: all of them for ``B = 1``; with labels, those whose label every
    row shares (``[B]`` bool; sorted counts, no ``[B, B]`` mask)."""
    if labels is None or batch <= 1:
        return batch <= 1
    ordered = labels.sort().values
    same = torch.searchsorted(ordered, labels, right=True) - torch.searchsorted(ordered, labels)
    return same >= batch


def _as_rows(flag: Tensor | bool, batch: int, device: torch.device) -> Tensor | None:
    if isinstance(flag, Tensor):
        return flag
    return torch.ones(batch, dtype=torch.bool, device=device) if flag else None


def _prepared(inputs: _Inputs) -> tuple[Tensor, Tensor, Tensor | None]:
    """The inputs in the compute dtype, L2-normalised for cosine (each row once, shared by both directions)."""
    dtype = compute_dtype(inputs.anchor.dtype)
    a, p = inputs.anchor.to(dtype), inputs.positive.to(dtype)
    n = None if inputs.negatives is None else inputs.negatives.to(dtype)
    if inputs.similarity == "cosine":
        a, p = normalize_rows(a), normalize_rows(p)
        n = None if n is None else normalize_rows(n)
    return a, p, n


def _must_check(similarity: str, temperature: float | Tensor) -> bool:
    """Whether the logits can overflow: dot products of unbounded inputs, or a cosine over a tiny temperature."""
    return similarity != "cosine" or _temperature_value(temperature) < _TINY_TEMPERATURE


def _temperature_value(temperature: float | Tensor) -> float:
    return float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)


def _explicit_logits(scaled_a: Tensor, n: Tensor, log_weights: Tensor | None) -> Tensor:
    """``[B, K]`` logits of the explicit negatives (shared ``[K,d]`` or per anchor ``[B,K,d]``) plus log-weights."""
    logits = scaled_a @ n.T if n.dim() == 2 else torch.einsum("bd,bkd->bk", scaled_a, n)
    return logits if log_weights is None else logits + log_weights.to(logits.dtype)


def _plain(inputs: _Inputs, temperature: float | Tensor, symmetric: bool) -> tuple[Tensor, Tensor | None]:
    """Per-anchor InfoNCE ``[B]`` of each direction (the reverse one ``None`` unless ``symmetric``) from one logits
    matrix: ``F.cross_entropy`` on the candidates' logits (``-inf`` for label-masked ones), and for the reverse
    direction on the transposed in-batch block (open_clip's ``ClipLoss`` does the same). Shared negatives are
    stacked under the positives first, so that one normalisation and one product give every column, as
    sentence-transformers' ``MultipleNegativesRankingLoss`` does."""
    dtype = compute_dtype(inputs.anchor.dtype)
    a, p = inputs.anchor.to(dtype), inputs.positive.to(dtype)
    n = None if inputs.negatives is None else inputs.negatives.to(dtype)
    batch = a.shape[0]
    stacked = inputs.in_batch and n is not None and n.dim() == 2
    if stacked:
        p = torch.cat([p, n])  # [B + K, d]: the in-batch and the shared candidates, one matrix
        n = None
    if inputs.similarity == "cosine":
        a, p = normalize_rows(a), normalize_rows(p)
        n = None if n is None else normalize_rows(n)
    scaled_a = a / temperature  # [B,d]: the temperature is applied once per row, not once per logit
    if inputs.in_batch:
        logits = scaled_a @ p.T
        target = torch.arange(batch, device=a.device)
        if stacked and inputs.log_weights is not None:
            logits = torch.cat([logits[:, :batch], logits[:, batch:] + inputs.log_weights.to(dtype)], dim=1)
    else:
        logits = (scaled_a * p).sum(dim=1, keepdim=True)
        target = torch.zeros(batch, dtype=torch.long, device=a.device)
    if n is not None:  # per-anchor negatives [B,K,d], or shared ones without in-batch candidates
        logits = torch.cat([logits, _explicit_logits(scaled_a, n, inputs.log_weights)], dim=1)
    if _must_check(inputs.similarity, temperature):
        check_logits_finite(logits, similarity=inputs.similarity, temperature=temperature, names=_NAMES)
    if inputs.in_batch and inputs.labels is not None:
        same = inputs.labels.unsqueeze(1) == inputs.labels.unsqueeze(0)
        same.fill_diagonal_(False)
        if logits.shape[1] > batch:
            same = torch.cat([same, same.new_zeros(batch, logits.shape[1] - batch)], dim=1)
        logits = logits.masked_fill(same, float("-inf"))
    forward = F.cross_entropy(logits, target, reduction="none")
    if not symmetric or not inputs.in_batch:
        return forward, None
    return forward, F.cross_entropy(logits[:, :batch].T, target, reduction="none")


_NAMES = "anchor, candidates"


def _check_logits(logits: Tensor, similarity: str, temperature: float | Tensor) -> None:
    """Overflowed log-sum-exps are ``+inf`` or NaN (``-inf``, a row with no candidate, is legal)."""
    values = logits.detach()
    check_logits_finite(
        torch.where(torch.isneginf(values), torch.zeros_like(values), values),
        similarity=similarity,
        temperature=temperature,
        names=_NAMES,
    )


def _tiled(
    inputs: _Inputs, temperature: float | Tensor, symmetric: bool, chunk_size: int
) -> tuple[Tensor, Tensor | None]:
    """:func:`_plain` (same value and gradient) with the in-batch and shared candidates' log-sum-exp over column
    tiles (:mod:`negkit.losses.functional.tiled`); symmetric: both directions from one pass over the tiles."""
    a, p, n = _prepared(inputs)
    batch = a.shape[0]
    scale = 1.0 / temperature
    positive_logits = (a * p).sum(dim=1) * scale
    labels, backward = inputs.labels, None
    parts = [] if inputs.in_batch else [positive_logits]
    if inputs.in_batch and symmetric:
        row, column = tiled_symmetric_logsumexp(a, p, scale, labels=labels, chunk_size=chunk_size)
        parts.append(row)
        backward = column - positive_logits
    elif inputs.in_batch:
        own = torch.arange(batch, device=a.device)
        parts.append(
            tiled_logsumexp(a, p, scale, row_labels=labels, col_labels=labels, own_column=own, chunk_size=chunk_size)
        )
    if n is not None and n.dim() == 2:
        weights = None if inputs.log_weights is None else inputs.log_weights.to(a.dtype)
        parts.append(tiled_logsumexp(a, n, scale, log_weights=weights, chunk_size=chunk_size))
    elif n is not None:  # per-anchor negatives: [B, K] logits, no tiles needed
        parts.append(torch.logsumexp(_explicit_logits(a * scale, n, inputs.log_weights), dim=1))
    log_denominator = parts[0] if len(parts) == 1 else torch.logaddexp(*parts) if len(parts) == 2 else None
    if log_denominator is None:
        log_denominator = torch.logsumexp(torch.stack(parts), dim=0)
    if _must_check(inputs.similarity, temperature):
        _check_logits(torch.stack([positive_logits, log_denominator]), inputs.similarity, temperature)
        if backward is not None:
            _check_logits(backward, inputs.similarity, temperature)
    return log_denominator - positive_logits, backward
