"""Chunked sampling engines over a pool: memory O(B · chunk), never the full ``[B, N]`` matrix.

* :func:`perturbed_top_k` — Gumbel-top-k: the k largest ``logit + Gumbel`` keys are a sample *without
  replacement* from ``softmax(logit)`` over the eligible items (Vieira 2014; Kool, van Hoof & Welling, ICML
  2019). Also returns the (k+1)-th key, the threshold of Kool et al.'s unbiased estimator.
* :func:`categorical_draws` — k draws *with replacement* from ``softmax(logit)`` by inverse CDF in two passes.
* :func:`ranked_window` — the items ranked ``lo .. hi-1`` by logit among the eligible ones (exact top-k).

A pool is described by a :class:`PoolView`: a function giving the logits of a column chunk and an
:class:`Eligibility` telling which columns are allowed for each anchor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from negkit._validation import check_ids, check_int

ChunkLogits = Callable[[int, int], Tensor]  # (start, stop) -> [B, stop - start]


@dataclass(frozen=True)
class Eligibility:
    """Which pool rows may be negatives of which anchors.

    A row is eligible for anchor i unless it has the anchor's id (``anchor_ids``/``pool_ids``), or, with
    ``drop_same_label``, the anchor's label, or its score exceeds ``ceiling[i]`` (margin filters).
    """

    anchor_ids: Tensor | None = None
    pool_ids: Tensor | None = None
    anchor_labels: Tensor | None = None
    pool_labels: Tensor | None = None
    drop_same_label: bool = False
    ceiling: Tensor | None = None  # [B, 1]

    def mask(self, rows: Tensor | slice, columns: Tensor, scores: Tensor | None) -> Tensor | None:
        """Bool mask ``[r, m]`` for anchors ``rows`` against pool ``columns`` (``[1, m]`` or ``[r, m]``) whose
        scores are ``scores [r, m]``; ``None`` when every pair is eligible."""
        mask = None
        if self.anchor_ids is not None and self.pool_ids is not None:
            mask = self.anchor_ids[rows].unsqueeze(1) != self.pool_ids[columns]
        if self.drop_same_label:
            other = self.anchor_labels[rows].unsqueeze(1) != self.pool_labels[columns]
            mask = other if mask is None else mask & other
        if self.ceiling is not None:
            below = scores <= self.ceiling[rows]
            mask = below if mask is None else mask & below
        return mask


@dataclass(frozen=True)
class PoolView:
    rows: int  # B, anchors
    size: int  # N, pool items
    logits: ChunkLogits | None  # None: every eligible item has the same logit (uniform)
    eligibility: Eligibility
    device: torch.device
    chunk_size: int = 8192
    #: ``(rows [r], start, stop) -> [r, c]``: the logits of some anchors only (``None``: the full chunk, indexed)
    row_logits: Callable[[Tensor, int, int], Tensor] | None = None

    def chunks(self) -> range:
        return range(0, self.size, self.chunk_size)

    def chunk_logits(self, start: int) -> tuple[int, Tensor]:
        """``(stop, logits [B, c])`` of the chunk at ``start`` (zeros if uniform), without its mask."""
        stop = min(start + self.chunk_size, self.size)
        if self.logits is None:
            return stop, torch.zeros(self.rows, stop - start, device=self.device)
        return stop, self.logits(start, stop)

    def rows_block(self, rows: Tensor, start: int) -> tuple[int, Tensor, Tensor | None]:
        """``(stop, logits [r, c], mask [r, c] or None)`` of anchors ``rows`` against the chunk at ``start``."""
        stop = min(start + self.chunk_size, self.size)
        if self.logits is None:
            logits = torch.zeros(len(rows), stop - start, device=self.device)
        elif self.row_logits is not None:
            logits = self.row_logits(rows, start, stop)
        else:
            logits = self.logits(start, stop)[rows]
        columns = torch.arange(start, stop, device=self.device).unsqueeze(0)
        return stop, logits, self.eligibility.mask(rows, columns, logits)

    def block(self, start: int) -> tuple[int, Tensor, Tensor | None]:
        """``(stop, logits [B, c] (zeros if uniform), mask [B, c] or None)`` of the chunk at ``start``."""
        stop, logits = self.chunk_logits(start)
        columns = torch.arange(start, stop, device=self.device).unsqueeze(0)
        return stop, logits, self.eligibility.mask(slice(None), columns, logits)


def _matches(keys: Tensor, queries: Tensor) -> Tensor:
    """``[B]`` how many entries of ``keys [N]`` equal each of ``queries [B]`` (sorting, not a [B, N] compare)."""
    ordered = keys.sort().values
    return torch.searchsorted(ordered, queries, right=True) - torch.searchsorted(ordered, queries)


def count_eligible(view: PoolView) -> Tensor:
    """``[B]`` number of eligible pool items per anchor.

    Without a score ceiling the count follows from sorted ids and labels in O((N + B) log N); with one, the
    pool is scanned chunk by chunk.
    """
    rule = view.eligibility
    if rule.ceiling is None:
        counts = torch.full((view.rows,), view.size, dtype=torch.long, device=view.device)
        by_id = rule.anchor_ids is not None and rule.pool_ids is not None
        if by_id:
            counts -= _matches(rule.pool_ids, rule.anchor_ids)
        if rule.drop_same_label:
            counts -= _matches(rule.pool_labels, rule.anchor_labels)
            if by_id:  # rows with the anchor's id and label were subtracted twice
                offset = int(torch.cat([rule.pool_labels, rule.anchor_labels]).min())
                width = int(torch.cat([rule.pool_labels, rule.anchor_labels]).max()) - offset + 1
                pool_pairs = rule.pool_ids * width + (rule.pool_labels - offset)
                anchor_pairs = rule.anchor_ids * width + (rule.anchor_labels - offset)
                counts += _matches(pool_pairs, anchor_pairs)
        return counts
    counts = torch.zeros(view.rows, dtype=torch.long, device=view.device)
    needs_scores = view.eligibility.ceiling is not None
    for start in view.chunks():
        stop = min(start + view.chunk_size, view.size)
        scores = view.logits(start, stop) if needs_scores and view.logits is not None else None
        columns = torch.arange(start, stop, device=view.device).unsqueeze(0)
        mask = view.eligibility.mask(slice(None), columns, scores)
        counts += (stop - start) if mask is None else mask.sum(dim=1)
    return counts


def _gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gumbel noise ``-log(-log U)`` in float64: float32 uniforms are too coarse near 1, where the
    largest keys of a big pool come from, and would bias the choice and the inclusion probabilities."""
    uniform = torch.rand(shape, generator=generator, device=device, dtype=torch.float64).clamp_min_(1e-300)
    return uniform.log_().neg_().log_().neg_()


#: A row's chunk gets dense Gumbel keys when more than this share of its items could beat its running threshold;
#: below it, only the items that can are drawn (:func:`_keys_above`).
SPARSE_BELOW = 0.25


def _keys_above(
    logits: Tensor, rows: Tensor, gap: Tensor, p: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The Gumbel keys of one chunk that can exceed each row's running threshold, without drawing the others.

    For row ``rows[r]`` every item's noise ``G`` exceeds ``gap[r] = threshold − max logit of the chunk`` with
    probability ``p[r] = 1 − exp(−e^{−gap})``, independently; an item whose noise does not can never reach the
    threshold (its key is at most ``logit + gap ≤ threshold``). So the items that do are drawn as a Bernoulli(p)
    process over the chunk (geometric gaps between them), and their noise from the Gumbel law truncated to
    ``(gap, ∞)``: ``E = −log(1 − V·p)`` is an exponential truncated to ``(0, e^{−gap})`` and ``G = −log E``. Every
    key that can matter has exactly the law it has under dense noise (the "lazy" Gumbel sampling of Mussmann,
    Levy & Ermon, UAI 2017, with a per-row bound), at a cost proportional to the number of such items.

    Returns ``(row [m], column [m], key [m])`` (float64 keys, columns within the chunk), ordered by row.
    """
    width = logits.shape[1]
    device = logits.device
    log_stay = torch.log1p(-p).unsqueeze(1)  # log(1 − p) < 0
    offset = torch.full((len(rows),), -1, dtype=torch.long, device=device)
    pending = torch.arange(len(rows), device=device)
    draws = int(width * float(p.max()) * 1.25) + 16
    found_rows, found_columns = [], []
    while len(pending):
        uniform = 1.0 - torch.rand(len(pending), draws, generator=generator, device=device, dtype=torch.float64)
        gaps = (uniform.log_() / log_stay[pending]).clamp_(max=width + 1).floor_().long() + 1
        positions = offset[pending].unsqueeze(1) + gaps.cumsum(dim=1)
        inside = positions < width
        found_rows.append(pending.unsqueeze(1).expand_as(positions)[inside])
        found_columns.append(positions[inside])
        offset[pending] = positions[:, -1]
        pending = pending[offset[pending] < width]
    row = torch.cat(found_rows)
    column = torch.cat(found_columns)
    order = row.argsort(stable=True)
    row, column = row[order], column[order]
    truncated = -torch.log1p(
        -(1.0 - torch.rand(len(row), generator=generator, device=device, dtype=torch.float64)) * p[row]
    )
    key = logits[rows[row], column].to(torch.float64) - torch.log(truncated)
    return row, column, key


def perturbed_top_k(view: PoolView, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Gumbel-top-k over the eligible items of each row.

    Returns ``(indices [B, k], logits [B, k], threshold [B])``: the chosen items, their (unperturbed) logits
    and the (k+1)-th largest perturbed key (``-inf`` when a row has exactly k eligible items), float64.
    Rows with fewer than k eligible items keep ``-1`` in the unused slots; callers check the counts first.

    Cost: the logits of every chunk (one pass) and noise only where it can matter. A row's first chunk(s), until
    it holds k + 1 keys, get dense float64 Gumbel noise; after that each chunk draws only the keys that can beat
    the row's running (k+1)-th key (:func:`_keys_above`; about ``k · chunk / seen`` items per chunk on a flat
    pool), so the noise is a vanishing share of the work on a large pool. The sample has exactly the law of
    dense Gumbel-top-k (the same as with ``chunk_size ≥ N``), not the same draws.
    """
    rows = view.rows
    best_keys = torch.full((rows, k + 1), float("-inf"), dtype=torch.float64, device=view.device)
    best_logits = torch.zeros((rows, k + 1), dtype=torch.float64, device=view.device)
    best_index = torch.full((rows, k + 1), -1, dtype=torch.long, device=view.device)
    everyone = torch.arange(rows, device=view.device)
    for start in view.chunks():
        stop, logits = view.chunk_logits(start)
        threshold = best_keys[:, k]
        gap = threshold - logits.max(dim=1).values.to(torch.float64)
        p = -torch.expm1(-torch.exp(-gap))  # share of the chunk whose noise can lift it above the threshold
        dense = p > SPARSE_BELOW
        chosen = everyone if bool(dense.all()) else torch.nonzero(dense).flatten()
        if len(chosen) < rows:
            sparse = torch.nonzero(~dense & (p > 0)).flatten()
            if len(sparse):
                row, column, key = _keys_above(logits, sparse, gap[sparse], p[sparse], generator)
                counts = torch.bincount(row, minlength=len(sparse))
                width = int(counts.max()) if len(row) else 0
                if width:
                    slot = torch.arange(len(row), device=view.device) - (counts.cumsum(0) - counts)[row]
                    keys = torch.full((len(sparse), width), float("-inf"), dtype=torch.float64, device=view.device)
                    columns = torch.zeros((len(sparse), width), dtype=torch.long, device=view.device)
                    keys[row, slot] = key
                    columns[row, slot] = column
                    chunk_logits = logits[sparse.unsqueeze(1), columns]
                    mask = view.eligibility.mask(sparse, columns + start, chunk_logits)
                    if mask is not None:  # only the drawn items are checked
                        keys = keys.masked_fill(~mask, float("-inf"))
                    _merge(best_keys, best_logits, best_index, sparse, keys, chunk_logits.double(), columns + start, k)
            if len(chosen) == 0:
                continue
        dense_logits = (logits if len(chosen) == rows else logits[chosen]).to(torch.float64)
        keys = dense_logits + _gumbel(tuple(dense_logits.shape), generator, view.device)
        columns = torch.arange(start, stop, device=view.device).unsqueeze(0)
        mask = view.eligibility.mask(chosen, columns, dense_logits)
        columns = columns.expand(len(chosen), -1)
        if mask is not None:
            keys = keys.masked_fill(~mask, float("-inf"))
        _merge(best_keys, best_logits, best_index, chosen, keys, dense_logits, columns, k)
    return best_index[:, :k], best_logits[:, :k], best_keys[:, k]


def _merge(
    best_keys: Tensor,
    best_logits: Tensor,
    best_index: Tensor,
    rows: Tensor | slice,
    keys: Tensor,
    logits: Tensor,
    columns: Tensor,
    k: int,
) -> None:
    """Keep the ``k + 1`` largest keys of ``rows`` among the kept ones and ``keys`` (in place)."""
    merged_keys, order = torch.cat([best_keys[rows], keys], dim=1).topk(k + 1, dim=1)
    best_index[rows] = torch.cat([best_index[rows], columns], dim=1).gather(1, order)
    best_logits[rows] = torch.cat([best_logits[rows], logits], dim=1).gather(1, order)
    best_keys[rows] = merged_keys


def uniform_without_replacement(
    view: PoolView, k: int, generator: torch.Generator | None, max_rounds: int = 8
) -> Tensor | None:
    """``[B, k]`` distinct eligible items per row, uniformly, in O(B·k) work whatever the pool size.

    Draws i.i.d. uniform candidates, keeps each row's first ``k`` distinct eligible ones (the first k distinct
    values of an i.i.d. uniform sequence over a set are a uniform k-subset of it) and draws again for rows
    still short. Returns ``None`` when the pool is too small or too restricted for this to pay off; the
    caller then uses :func:`perturbed_top_k` with equal logits.
    """
    if view.size < 8 * k:
        return None
    rows = torch.arange(view.rows, device=view.device)
    chosen = torch.full((view.rows, k), -1, dtype=torch.long, device=view.device)
    have = torch.zeros(view.rows, dtype=torch.long, device=view.device)
    draw = 2 * k + 16
    for _ in range(max_rounds):
        pending = rows[have < k]
        if len(pending) == 0:
            return chosen
        candidates = torch.randint(0, view.size, (len(pending), draw), generator=generator, device=view.device)
        mask = view.eligibility.mask(pending, candidates, None)
        keep = torch.ones_like(candidates, dtype=torch.bool) if mask is None else mask
        # Drop repeats within the draw and items the row already holds.
        ordered, order = candidates.sort(dim=1, stable=True)
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        unique = torch.zeros_like(first).scatter(1, order, first)
        held = (candidates.unsqueeze(2) == chosen[pending].unsqueeze(1)).any(dim=2)
        keep &= unique & ~held
        slot = have[pending].unsqueeze(1) + keep.long().cumsum(dim=1) - 1
        place = keep & (slot < k)
        chosen[pending.unsqueeze(1).expand_as(candidates)[place], slot[place]] = candidates[place]
        have[pending] = torch.clamp(have[pending] + keep.sum(dim=1), max=k)
        if bool((have[pending] == 0).all()):  # nothing eligible drawn at all: too restricted, give up
            return None
    return chosen if bool((have == k).all()) else None


def log_partition(view: PoolView) -> Tensor:
    """``[B]`` log Σ over eligible items of ``exp(logit)``, chunked (float64)."""
    total = torch.full((view.rows,), float("-inf"), dtype=torch.float64, device=view.device)
    for start in view.chunks():
        _, logits, mask = view.block(start)
        logits = logits.to(torch.float64)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        total = torch.logaddexp(total, torch.logsumexp(logits, dim=1))
    return total


def categorical_draws(view: PoolView, k: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``k`` independent draws per row from ``softmax(logit)`` over the eligible items, with replacement.

    Inverse CDF of ``k`` sorted uniforms, in two levels. Pass 1 keeps each chunk's log-mass per row (a float32
    log-sum-exp of the chunk, ``[B, chunks]`` in float64); the uniforms pick their chunks from these masses, and
    pass 2 revisits only the (row, chunk) pairs that hold a draw, where the same uniform, rescaled to the chunk's
    interval, picks the item by the chunk's cumulative probabilities (float64). With ``view.row_logits`` pass 2
    computes the logits of those rows only. Same law as one inverse CDF over the whole pool (the uniforms'
    positions are unchanged; only float rounding of the masses differs), at about 1 + (share of rows with a
    draw in a chunk) passes instead of two full float64 ones. Returns ``(indices [B, k], log_probabilities [B,
    k])``.
    """
    starts = list(view.chunks())
    rows = view.rows
    log_mass = torch.full((rows, len(starts)), float("-inf"), dtype=torch.float64, device=view.device)
    for c, start in enumerate(starts):
        _, logits, mask = view.block(start)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        log_mass[:, c] = torch.logsumexp(logits, dim=1).to(torch.float64)
    log_z = torch.logsumexp(log_mass, dim=1, keepdim=True)
    targets = torch.rand(rows, k, generator=generator, device=view.device, dtype=torch.float64).sort(dim=1).values
    mass = torch.exp(log_mass - log_z)  # [B, chunks], each row sums to 1 up to rounding
    after = mass.cumsum(dim=1)
    which = torch.searchsorted(after, targets, right=True)
    # a uniform above the rounded total belongs to the row's last chunk with any mass
    last_chunk = (len(starts) - 1) - (mass > 0).flip(1).to(torch.int8).argmax(dim=1, keepdim=True)
    which = torch.minimum(which, last_chunk)
    before = (after - mass).gather(1, which)
    inside = ((targets - before) / mass.gather(1, which)).clamp_(0.0, 1.0)  # the uniform's place in its chunk

    chosen = torch.full((rows, k), -1, dtype=torch.long, device=view.device)
    chosen_logit = torch.zeros(rows, k, dtype=torch.float64, device=view.device)
    for c, start in enumerate(starts):
        here = which == c
        anchors = torch.nonzero(here.any(dim=1)).flatten()
        if len(anchors) == 0:
            continue
        _, logits, mask = view.rows_block(anchors, start)
        logits = logits.to(torch.float64)
        probabilities = torch.exp(logits - log_mass[anchors, c : c + 1])
        if mask is not None:
            probabilities = probabilities.masked_fill(~mask, 0.0)
        cumulative = probabilities.cumsum(dim=1)
        position = torch.searchsorted(cumulative, inside[anchors].contiguous(), right=True)
        # rounding at the chunk's end: the last item with any probability
        last = (logits.shape[1] - 1) - (probabilities > 0).flip(1).to(torch.int8).argmax(dim=1, keepdim=True)
        position = torch.minimum(position, last)
        take = here[anchors]
        picked = anchors.unsqueeze(1).expand_as(take)[take]
        chosen[picked, take.nonzero()[:, 1]] = position[take] + start
        chosen_logit[picked, take.nonzero()[:, 1]] = logits.gather(1, position)[take]
    # Shuffle the k draws of each row so positions carry no order.
    shuffle = torch.rand(rows, k, generator=generator, device=view.device).argsort(dim=1)
    return chosen.gather(1, shuffle), (chosen_logit - log_z).gather(1, shuffle)


def ranked_window(view: PoolView, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """Items ranked ``lo .. hi-1`` (0 = highest logit) among each row's eligible items, exact and chunked.

    Returns ``(indices [B, hi - lo], logits [B, hi - lo])``, best first; slots beyond a row's eligible count
    hold ``-1`` and ``-inf``.
    """
    best_logits = torch.full((view.rows, hi), float("-inf"), device=view.device)
    best_index = torch.full((view.rows, hi), -1, dtype=torch.long, device=view.device)
    for start in view.chunks():
        stop, logits, mask = view.block(start)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        columns = torch.arange(start, stop, device=view.device).expand(view.rows, -1)
        merged_logits = torch.cat([best_logits, logits.to(best_logits.dtype)], dim=1)
        merged_index = torch.cat([best_index, columns], dim=1)
        best_logits, order = merged_logits.topk(min(hi, merged_logits.shape[1]), dim=1)
        best_index = merged_index.gather(1, order)
        if best_logits.shape[1] < hi:  # the pool so far is smaller than hi
            pad = hi - best_logits.shape[1]
            best_logits = torch.cat([best_logits, best_logits.new_full((view.rows, pad), float("-inf"))], dim=1)
            best_index = torch.cat([best_index, best_index.new_full((view.rows, pad), -1)], dim=1)
    best_index = torch.where(torch.isneginf(best_logits), torch.full_like(best_index, -1), best_index)
    return best_index[:, lo:hi], best_logits[:, lo:hi]


def log_inclusion_probability(logits: Tensor, threshold: Tensor) -> Tensor:
    """``log P(key_j > κ) = log(1 − exp(−exp(logit_j − κ)))`` for Gumbel keys (Kool et al. 2019, Eq. 8).

    ``logits [B, k]`` of the chosen items (unnormalised, same shift as the keys), ``threshold [B]`` the
    (k+1)-th key. A threshold of ``-inf`` (every eligible item chosen) gives probability 1.
    """
    gap = logits.to(torch.float64) - threshold.unsqueeze(1)
    small = gap < -30.0  # 1 − exp(−e^a) = e^a (1 − e^a/2 + …): log ≈ a
    safe_gap = torch.where(small, torch.zeros_like(gap), gap)
    exact = torch.log(-torch.expm1(-torch.exp(safe_gap)))
    return torch.where(small, gap, exact)


def sample_unobserved(
    rows: Tensor, observed: Tensor, k: int, generator: torch.Generator | None = None, *, max_rounds: int = 1000
) -> Tensor:
    """``[B, k]`` column ids drawn uniformly, with replacement, among the columns ``observed[row]`` does not mark.

    ``rows [B]`` long, ``observed [R, C]`` bool (e.g. each user's rated items). Rejection sampling: draw from all
    ``C`` columns, redraw the observed ones; the expected rounds are ``1 / (1 − observed share)``, so a row with
    no unobserved column is an error, not a hang.
    """
    if not isinstance(observed, Tensor) or observed.dim() != 2 or observed.dtype != torch.bool:
        shape = f"{observed.dtype} {tuple(observed.shape)}" if isinstance(observed, Tensor) else type(observed).__name__
        raise ValueError(f"observed must be a 2-D bool tensor, got {shape}")
    check_ids("rows", rows)
    k = check_int("k", k, low=1)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= observed.shape[0]):
        raise ValueError(f"rows must lie in [0, {observed.shape[0]}) (the rows of observed)")
    if observed.shape[1] == 0:
        raise ValueError("observed has no column to sample from")
    full = observed[rows].all(dim=1)
    if bool(full.any()):
        raise ValueError(f"row {int(rows[full][0])} has no unobserved column to sample from")
    columns = torch.randint(observed.shape[1], (len(rows), k), generator=generator, device=rows.device)
    for _ in range(max_rounds):
        redraw = observed[rows.unsqueeze(1), columns]
        count = int(redraw.sum())
        if count == 0:
            return columns
        columns[redraw] = torch.randint(observed.shape[1], (count,), generator=generator, device=rows.device)
    raise RuntimeError(f"rejection sampling did not finish in {max_rounds} rounds (rows almost fully observed)")
