"""Negative samplers: which pool rows each anchor gets as negatives, and how much each should count.

Every sampler has one call::

    sampler.sample(anchors [B, d], pool [N, d], *, anchor_labels=None, pool_labels=None, anchor_ids=None,
                   pool_ids=None, positives=None, generator=None) -> Negatives(indices [B, K], log_weights)

A sampler reads only what it needs: uniform samplers never read the pool's values (only its size, ids and
labels), the others check each chunk of rows for NaN/inf as they read it.

Eligibility, shared by all samplers: a pool row whose id equals the anchor's id is never its negative (the
anchor itself, or its other view); class-conditional samplers also drop rows with the anchor's label.
Asking for more negatives than an anchor has eligible rows is a ``ValueError`` naming both numbers, unless
``replacement=True``; so is an empty pool, labels or ids that are not integer tensors of the right length, and
a pool row that is NaN or inf. An empty batch of anchors is degenerate but legal: it gets an empty ``[0, k]``
result (in strict mode, :func:`negkit.losses.strict`, a :class:`~negkit.losses.DegenerateBatchError`). Cosine
similarity is scale-invariant (:func:`negkit._validation.normalize_rows`; an all-zero row has cosine 0).
Work is chunked over the pool (``chunk_size`` columns at a time), so memory is
``O(B · chunk_size)`` whatever N is.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from negkit._optional import available, require
from negkit._validation import (
    check_compatible,
    check_features,
    check_finite_scalar,
    check_ids,
    check_int,
    check_labels,
    check_similarity,
    check_tensor,
    count_non_finite,
    degenerate,
    format_rows,
    normalize_rows,
)
from negkit.negatives.sampling import (
    ChunkLogits,
    Eligibility,
    PoolView,
    categorical_draws,
    count_eligible,
    log_inclusion_probability,
    perturbed_top_k,
    ranked_window,
    uniform_without_replacement,
)
from negkit.negatives.types import Negatives

#: Largest |beta| of the hardness tilt: ``beta · s`` must stay far from float32's 3.4e38.
_MAX_BETA = 1e30


def _any_non_finite(x: Tensor) -> bool:
    """Whether ``x`` holds a NaN or inf, in one pass when it does not: NaN and inf survive a sum, and a sum that
    overflows from finite values only sends the check to the exact count."""
    return not bool(torch.isfinite(x.sum())) and count_non_finite(x) > 0


class NegativeSampler(abc.ABC):
    """Base class: input checks, eligibility masks and the similarity of anchors to pool chunks."""

    #: whether the sampler drops pool rows that share the anchor's label
    class_conditional: bool = False
    #: whether the sampler returns log-weights (``None`` for deterministic mining)
    weighted: bool = True

    def __init__(self, k: int, *, replacement: bool = False, similarity: str = "cosine", chunk_size: int = 8192):
        k = check_int("k", k, low=1)
        chunk_size = check_int("chunk_size", chunk_size, low=1)
        check_similarity(similarity)
        self.k, self.replacement, self.similarity, self.chunk_size = k, bool(replacement), similarity, chunk_size

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def sample(
        self,
        anchors: Tensor,
        pool: Tensor,
        *,
        anchor_labels: Tensor | None = None,
        pool_labels: Tensor | None = None,
        anchor_ids: Tensor | None = None,
        pool_ids: Tensor | None = None,
        positives: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Negatives:
        """Choose ``k`` negatives in ``pool`` for every anchor; see the module docstring."""
        check_features("anchors", anchors, 2)
        check_tensor("pool", pool, 2, finite=False)  # the rows a sampler reads are checked as it reads them
        check_compatible("anchors", anchors, pool=pool)
        if pool.shape[1] != anchors.shape[1]:
            raise ValueError(f"pool must have {anchors.shape[1]} features like anchors, got {pool.shape[1]}")
        rows, size = anchors.shape[0], pool.shape[0]
        if size == 0:
            raise ValueError("pool is empty (0 rows): there is nothing to draw negatives from")
        if anchor_labels is not None:
            anchor_labels = check_labels("anchor_labels", anchor_labels, rows, anchors.device)
        if pool_labels is not None:
            pool_labels = check_labels("pool_labels", pool_labels, size, anchors.device)
        if anchor_ids is not None:
            check_ids("anchor_ids", anchor_ids, rows)
        if pool_ids is not None:
            check_ids("pool_ids", pool_ids, size)
        if (anchor_ids is None) != (pool_ids is None):
            raise ValueError("anchor_ids and pool_ids must be given together")
        if self.class_conditional and (anchor_labels is None or pool_labels is None):
            raise ValueError(f"{type(self).__name__} is class-conditional: pass anchor_labels and pool_labels")
        if positives is not None:
            check_tensor("positives", positives, 2)
            if positives.shape != anchors.shape:
                raise ValueError(f"positives must have the shape of anchors {tuple(anchors.shape)}")
        if rows == 0:
            degenerate("anchors is empty (0 rows): no negatives to choose")
            empty = torch.empty(0, self.k, dtype=torch.long, device=anchors.device)
            return Negatives(empty, torch.empty(0, self.k, device=anchors.device) if self.weighted else None)
        eligibility = Eligibility(
            anchor_ids=anchor_ids,
            pool_ids=pool_ids,
            anchor_labels=anchor_labels,
            pool_labels=pool_labels,
            drop_same_label=self.class_conditional or self._drops_same_label(anchor_labels, pool_labels),
            ceiling=self._ceiling(anchors, positives),
        )
        self._current = (anchors, pool)
        try:
            logits = self._logits(anchors, pool)
            row_logits = None if logits is None else (lambda some, start, stop: logits(start, stop, some))
            view = PoolView(rows, size, logits, eligibility, anchors.device, self.chunk_size, row_logits)
            return self._sample(view, generator)
        finally:
            del self._current

    # -- pieces shared by the samplers ------------------------------------------------------------------------

    def _prepare(self, x: Tensor) -> Tensor:
        """Rows as the similarity sees them (detached float32, L2-normalised for cosine)."""
        x = x.detach().float()
        return normalize_rows(x, dim=1) if self.similarity == "cosine" else x

    def _scores(self, anchors: Tensor, pool: Tensor, scale: float = 1.0) -> ChunkLogits:
        """Similarities of the anchors (or of the anchors ``rows``) to a pool chunk, times ``scale`` (folded into the
        anchors: no extra pass over the scores); the pool is prepared chunk by chunk, never copied whole."""
        a = self._prepare(anchors)
        if scale != 1.0:
            a = a * scale

        def scores(start: int, stop: int, rows: Tensor | None = None) -> Tensor:
            chunk = pool[start:stop]
            if _any_non_finite(chunk):
                raise ValueError(f"pool contains non-finite values (NaN or inf) in rows {start}..{stop - 1}")
            scores = (a if rows is None else a[rows]) @ self._prepare(chunk).T
            # cosines of finite unit rows are bounded by 1: only dot products can overflow
            if self.similarity != "cosine" and _any_non_finite(scores):
                raise ValueError(
                    f"similarity={self.similarity!r} of anchors and pool rows {start}..{stop - 1} overflows float32; "
                    "scale the inputs down or use similarity='cosine'"
                )
            return scores

        return scores

    def _logits(self, anchors: Tensor, pool: Tensor) -> ChunkLogits | None:
        """Logits of anchors against a pool chunk; ``None`` for samplers that ignore similarity."""
        return None

    def _ceiling(self, anchors: Tensor, positives: Tensor | None) -> Tensor | None:
        """``[B, 1]`` highest logit a negative may have (margin filters); ``None`` for no ceiling."""
        return None

    def _drops_same_label(self, anchor_labels: Tensor | None, pool_labels: Tensor | None) -> bool:
        return False

    def _check_counts(self, view: PoolView, needed: int, what: str = "eligible pool rows") -> Tensor:
        counts = count_eligible(view)
        if self.replacement:
            short = counts < 1
            if bool(short.any()):
                raise ValueError(f"anchors {format_rows(short)} have no {what} to draw from")
            return counts
        short = counts < needed
        if bool(short.any()):
            fewest = int(counts[short].min())
            raise ValueError(
                f"k = {self.k} is larger than the {what} of anchors {format_rows(short)} (as few as {fewest}); "
                "lower k or pass replacement=True"
            )
        return counts

    @abc.abstractmethod
    def _sample(self, view: PoolView, generator: torch.Generator | None) -> Negatives:
        """Choose the negatives over ``view`` (inputs already checked)."""


class UniformSampler(NegativeSampler):
    """``k`` negatives uniformly from the eligible pool (the UCL distribution: labels are not used).

    Without replacement the log-weights are ``log(n_i / k)`` (Horvitz–Thompson: every eligible row is
    included with probability ``k / n_i``); with replacement they are the same ``log(n_i / k) = −log(k·q)``.
    """

    def _sample(self, view: PoolView, generator: torch.Generator | None) -> Negatives:
        counts = self._check_counts(view, self.k)
        if self.replacement:
            indices, _ = categorical_draws(view, self.k, generator)
        else:
            indices = uniform_without_replacement(view, self.k, generator)
            if indices is None:
                indices, _, _ = perturbed_top_k(view, self.k, generator)
        log_weights = torch.log(counts.double() / self.k).float().unsqueeze(1).expand(-1, self.k)
        return Negatives(indices, log_weights.contiguous())


class ClassConditionalSampler(UniformSampler):
    """``k`` negatives uniformly from the pool rows whose label differs from the anchor's (the SCL distribution).

    Needs ``anchor_labels`` and ``pool_labels``. Log-weights as :class:`UniformSampler`, over the rows of
    other classes.
    """

    class_conditional = True


class HardnessSampler(NegativeSampler):
    """``k`` negatives drawn with probability ``∝ exp(β · s_ij)`` over the eligible pool (Robinson et al., ICLR
    2021: the hardness-tilted distribution ``q_β``), without replacement by Gumbel-top-k.

    ``s`` is the cosine similarity (or dot with ``similarity="dot"``); HCL's tilt ``exp(β_HCL · s / T)`` is
    ``beta = β_HCL / T`` here. ``class_conditional=True`` also drops the anchor's class: the H-SCL distribution.

    Log-weights turn the sample back into an unbiased estimate over the uniform eligible pool: with
    replacement ``−log(k · q_ij)``; without replacement ``−log P(j ∈ sample)`` from the Gumbel threshold, the
    estimator of Kool, van Hoof & Welling (ICML 2019). Leave them out to train on the hard distribution.
    """

    def __init__(
        self,
        k: int,
        beta: float = 1.0,
        *,
        class_conditional: bool = False,
        replacement: bool = False,
        similarity: str = "cosine",
        chunk_size: int = 8192,
    ) -> None:
        super().__init__(k, replacement=replacement, similarity=similarity, chunk_size=chunk_size)
        self.beta = check_finite_scalar("beta", beta, low=-_MAX_BETA, high=_MAX_BETA)
        self.class_conditional = bool(class_conditional)

    def _logits(self, anchors: Tensor, pool: Tensor) -> ChunkLogits | None:
        if self.similarity == "cosine":  # |beta| <= 1e30 times a cosine is finite: beta folded into the anchors
            return self._scores(anchors, pool, scale=self.beta)
        scores = self._scores(anchors, pool)

        def logits(start: int, stop: int, rows: Tensor | None = None) -> Tensor:
            tilted = self.beta * scores(start, stop, rows)
            if _any_non_finite(tilted):
                raise ValueError(f"beta = {self.beta:g} times the similarities overflows float32; lower beta")
            return tilted

        return logits

    def _sample(self, view: PoolView, generator: torch.Generator | None) -> Negatives:
        self._check_counts(view, self.k)
        if self.replacement:
            indices, log_q = categorical_draws(view, self.k, generator)
            return Negatives(indices, (-math.log(self.k) - log_q).float())
        indices, logits, threshold = perturbed_top_k(view, self.k, generator)
        return Negatives(indices, (-log_inclusion_probability(logits, threshold)).float())


class MinedSampler(NegativeSampler):
    """Nearest-neighbour mining with false-negative filters.

    For each anchor, the eligible pool rows are ranked by similarity (highest first) and the ranks
    ``rank_window = (lo, hi)`` are kept: skipping the top ``lo`` ranks avoids the near-duplicates that are
    most often unlabelled positives. Filters applied before ranking:

    * the anchor's own id, and, when labels are given, every row with the anchor's label;
    * with ``positives`` and ``margin``: every row scoring ``> s(anchor, positive) − margin``;
    * with ``positives`` and ``relative_margin``: every row scoring ``> p − |p| · relative_margin`` with
      ``p = s(anchor, positive)`` (NV-Retriever's TopK-PercPos filter, Moreira et al. 2024, written so that the
      ceiling stays below the positive when ``p < 0``).

    From the window, ``choose="top"`` keeps the ``k`` best, ``choose="random"`` draws ``k`` uniformly.
    An anchor left with fewer than ``k`` rows in its window is an error with ``fill="error"``; with
    ``fill="uniform"`` its missing slots are drawn uniformly from the rows that pass the id and label filters
    (not the margin), which keeps training going early on, when the margin can reject almost everything.
    The search is an exact chunked top-k, or faiss's exact inner-product index (``backend="faiss"``, which needs
    ``pip install 'negkit[faiss]'``). ``"auto"`` uses faiss for pools of ``faiss_threshold`` rows or more searched
    by at least ``faiss_min_queries`` anchors at once, when it is installed: measured here (benchmarks/results),
    faiss is ~1.6× slower than the chunked search for 256 anchors but ~3.5× faster for blocks of 1,024 anchors
    against 10⁶ rows. Mined negatives are a deterministic, biased choice: ``log_weights`` is ``None``. Both
    backends read the same pool the same way: a NaN or inf row is an error, an empty pool too.
    """

    weighted = False

    def __init__(
        self,
        k: int,
        rank_window: tuple[int, int] | None = None,
        margin: float | None = None,
        *,
        relative_margin: float | None = None,
        choose: str = "top",
        fill: str = "error",
        backend: str = "auto",
        faiss_threshold: int = 100_000,
        faiss_min_queries: int = 1024,
        similarity: str = "cosine",
        chunk_size: int = 8192,
    ) -> None:
        super().__init__(k, replacement=False, similarity=similarity, chunk_size=chunk_size)
        window = rank_window if rank_window is not None else (0, self.k)
        if not isinstance(window, tuple | list) or len(window) != 2:
            raise ValueError(f"rank_window must be a pair (lo, hi), got {rank_window!r}")
        lo, hi = (check_int("rank_window", bound, low=0) for bound in window)
        if not 0 <= lo < hi:
            raise ValueError(f"rank_window must be (lo, hi) with 0 <= lo < hi, got {rank_window}")
        if hi - lo < self.k:
            raise ValueError(f"rank_window {rank_window} holds {hi - lo} ranks, fewer than k = {self.k}")
        if choose not in ("top", "random"):
            raise ValueError(f"choose must be 'top' or 'random', got {choose!r}")
        if fill not in ("error", "uniform"):
            raise ValueError(f"fill must be 'error' or 'uniform', got {fill!r}")
        if backend not in ("auto", "exact", "faiss"):
            raise ValueError(f"backend must be 'auto', 'exact' or 'faiss', got {backend!r}")
        faiss_threshold = check_int("faiss_threshold", faiss_threshold, low=0)
        faiss_min_queries = check_int("faiss_min_queries", faiss_min_queries, low=0)
        self.rank_window = (lo, hi)
        self.margin = None if margin is None else check_finite_scalar("margin", margin)
        self.relative_margin = (
            None if relative_margin is None else check_finite_scalar("relative_margin", relative_margin, low=0.0)
        )
        self.choose, self.fill, self.backend = choose, fill, backend
        self.faiss_threshold, self.faiss_min_queries = faiss_threshold, faiss_min_queries

    def _drops_same_label(self, anchor_labels: Tensor | None, pool_labels: Tensor | None) -> bool:
        return anchor_labels is not None and pool_labels is not None

    def _logits(self, anchors: Tensor, pool: Tensor) -> ChunkLogits | None:
        return self._scores(anchors, pool)

    def _ceiling(self, anchors: Tensor, positives: Tensor | None) -> Tensor | None:
        if self.margin is None and self.relative_margin is None:
            return None
        if positives is None:
            raise ValueError("margin and relative_margin filters need positives (the anchors' positive embeddings)")
        positive_score = (self._prepare(anchors) * self._prepare(positives)).sum(dim=1, keepdim=True)
        ceiling = positive_score
        if self.margin is not None:
            ceiling = torch.minimum(ceiling, positive_score - self.margin)
        if self.relative_margin is not None:
            # below the positive by a share of its size: right for negative scores too (p·(1 − m) would lie above)
            ceiling = torch.minimum(ceiling, positive_score - positive_score.abs() * self.relative_margin)
        return ceiling

    def _use_faiss(self, size: int, queries: int) -> bool:
        if self.backend == "exact":
            return False
        if self.backend == "faiss":
            return True
        if size < self.faiss_threshold or queries < self.faiss_min_queries:
            return False
        return available("faiss")

    def _sample(self, view: PoolView, generator: torch.Generator | None) -> Negatives:
        lo, hi = self.rank_window
        if self._use_faiss(view.size, view.rows):
            indices, _ = self._faiss_window(view, lo, hi)
        else:
            indices, _ = ranked_window(view, lo, hi)
        available = (indices >= 0).sum(dim=1)
        short = available < self.k
        if bool(short.any()):
            if self.fill == "error":
                raise ValueError(
                    f"k = {self.k} is larger than the eligible rows in rank window {self.rank_window} of anchors "
                    f"{format_rows(short)} (as few as {int(available[short].min())}); widen the window, relax the "
                    "filters, lower k or pass fill='uniform'"
                )
            indices = self._top_up(view, indices, short, generator)
        if self.choose == "top":
            return Negatives(indices[:, : self.k], None)
        keys = torch.rand(indices.shape, generator=generator, device=indices.device).masked_fill(indices < 0, -1.0)
        picked = keys.topk(self.k, dim=1).indices
        return Negatives(indices.gather(1, picked), None)

    def _top_up(self, view: PoolView, indices: Tensor, short: Tensor, generator: torch.Generator | None) -> Tensor:
        """Fill the empty window slots of ``short`` rows with uniform draws that pass the id and label filters."""
        rows = torch.nonzero(short).flatten()
        base = view.eligibility
        eligibility = Eligibility(
            anchor_ids=None if base.anchor_ids is None else base.anchor_ids[rows],
            pool_ids=base.pool_ids,
            anchor_labels=None if base.anchor_labels is None else base.anchor_labels[rows],
            pool_labels=base.pool_labels,
            drop_same_label=base.drop_same_label,
        )
        sub = PoolView(len(rows), view.size, None, eligibility, view.device, view.chunk_size)
        counts = count_eligible(sub)
        if bool((counts < self.k).any()):
            raise ValueError(f"k = {self.k} is larger than the rows passing the id/label filters of some anchors")
        draws, _, _ = perturbed_top_k(sub, min(int(counts.min()), 2 * self.k), generator)
        filled = indices[rows]
        for position, row in enumerate(filled):
            have = row[row >= 0]
            extra = [int(j) for j in draws[position] if int(j) not in set(have.tolist())]
            need = self.k - len(have)
            row[len(have) : len(have) + need] = torch.tensor(extra[:need], dtype=row.dtype)
        indices = indices.clone()
        indices[rows] = filled
        return indices

    def _faiss_window(self, view: PoolView, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Top ``hi`` eligible rows per anchor with faiss (exact inner-product index), filters applied after
        the search; rows whose search came back short are searched again deeper."""
        faiss = require("faiss", "faiss", "MinedSampler's faiss backend")

        anchors, pool = self._current
        a = self._prepare(anchors)
        index = faiss.IndexFlatIP(pool.shape[1])
        for start in range(0, pool.shape[0], 65536):  # add the pool chunk by chunk: no full normalised copy
            chunk = pool[start : start + 65536]
            if count_non_finite(chunk):  # as the exact search does: a NaN row is an error, never skipped
                stop = start + chunk.shape[0]
                raise ValueError(f"pool contains non-finite values (NaN or inf) in rows {start}..{stop - 1}")
            prepared = self._prepare(chunk)
            if count_non_finite(prepared):
                raise ValueError(f"similarity='dot' of pool rows {start}.. overflows float32; scale the pool down")
            index.add(prepared.contiguous().numpy())
        rows = view.rows
        out_index = torch.full((rows, hi), -1, dtype=torch.long)
        out_score = torch.full((rows, hi), float("-inf"))
        pending = torch.arange(rows)
        depth = min(view.size, 2 * hi + 16)
        while len(pending):
            scores, found = index.search(a[pending].contiguous().numpy(), depth)
            found_t, scores_t = torch.from_numpy(found).long(), torch.from_numpy(scores)
            keep = found_t >= 0
            mask = view.eligibility.mask(pending, found_t.clamp(min=0), scores_t)
            if mask is not None:
                keep &= mask
            scores_t = scores_t.masked_fill(~keep, float("-inf"))
            best, order = scores_t.topk(min(hi, depth), dim=1)
            chosen = found_t.gather(1, order).masked_fill(torch.isneginf(best), -1)
            enough = (chosen >= 0).sum(dim=1) >= hi
            done = enough | (depth >= view.size)
            width = chosen.shape[1]
            out_index[pending[done], :width] = chosen[done]
            out_score[pending[done], :width] = best[done]
            pending = pending[~done]
            depth = min(view.size, depth * 4)
        return out_index[:, lo:hi], out_score[:, lo:hi]
