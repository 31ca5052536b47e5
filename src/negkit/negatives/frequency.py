"""Streaming item-frequency estimation for the sampling-bias (logQ) correction of in-batch negatives.

In a batch of training pairs the items are drawn in proportion to their popularity, so a popular item is a
negative of many anchors and the in-batch softmax pushes it down too hard. Yi et al. ("Sampling-Bias-Corrected
Neural Modeling for Large Corpus Item Recommendations", RecSys 2019, §4) correct each logit by the log of the
item's sampling probability, ``s^c(x, y) = s(x, y) − log p_y``, and estimate ``p_y`` on the stream of batches
without knowing the catalogue (their Algorithm 2, implemented by :class:`StreamingFrequency`):

* arrays ``A`` (the step an item was last seen) and ``B`` (its estimated gap in steps between occurrences),
  indexed by a hash of the item id;
* when item ``y`` occurs at step ``t``: ``B[h(y)] ← (1 − α)·B[h(y)] + α·(t − A[h(y)])``, then ``A[h(y)] ← t``;
* the estimate is ``p̂_y = 1 / B[h(y)]``. With several hash functions (their multiple-hashing variant) every
  array is updated and ``p̂_y = 1 / max_h B_h[h(y)]``: a collision makes gaps look shorter, the largest gap is
  the least contaminated.

What ``p̂`` estimates: the mean number of occurrences of the item per step (per batch), i.e. ``B·q_y`` for
batches of ``B`` items drawn with probabilities ``q``; an item seen twice in one batch contributes a gap of 0.
Any constant factor cancels in the softmax when every logit (the positive's too) is corrected.

negkit's choices where the paper is silent: an item's first occurrence at step ``t`` sets ``B = t − t₀`` (its
first gap, counted from the step the estimator started) instead of averaging it with an arbitrary initial value;
an item never seen has ``p̂ = 1 / (steps so far + 1)`` (at most one occurrence in that time). Theory (paper
§4.2): for independent gaps with mean ``δ = 1/p`` and variance ``σ²``, the EMA is unbiased and its variance
tends to ``α/(2 − α)·σ²``; for an item present in each batch with probability ``p`` (geometric gaps) the
relative standard deviation of ``B`` is ``√(α(1 − p)/(2 − α))``, about 7 % at ``α = 0.01``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from negkit._validation import check_finite_scalar, check_ids, check_int

_LOW_31 = (1 << 31) - 1


class StreamingFrequency(nn.Module):
    """Yi et al.'s streaming frequency estimator (Algorithm 2, with ``num_hashes`` hash functions).

    Args:
        num_buckets: size of each hashed array. With ``hashed=False`` ids index the arrays directly (ids must
            lie in ``[0, num_buckets)``: exact per-item estimates, no collisions).
        alpha: the EMA rate ``α`` in ``(0, 1]`` (the paper's learning rate of the gap estimate).
        num_hashes: number of independent hash functions (and arrays); 1 with ``hashed=False``.
        hashed: hash ids (multiply-shift: bits 33–63 of ``a·id + b`` modulo 2^64, with a seeded odd ``a`` and
            ``b``, modulo ``num_buckets``) or use them as indices.
        seed: seeds the hash functions.

    Use: :meth:`update` with each step's item ids (a ``[B]`` tensor; duplicates allowed), then
    :meth:`log_probability` of any ids. State (``state_dict``): the arrays, the hash parameters and the step.
    """

    def __init__(
        self, num_buckets: int, *, alpha: float = 0.01, num_hashes: int = 1, hashed: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        self.num_buckets = check_int("num_buckets", num_buckets, low=1)
        self.alpha = check_finite_scalar("alpha", alpha, low=0.0, high=1.0)
        if self.alpha == 0.0:
            raise ValueError("alpha must be > 0")
        self.num_hashes = check_int("num_hashes", num_hashes, low=1)
        if not hashed and self.num_hashes != 1:
            raise ValueError("num_hashes must be 1 without hashing (ids index the array directly)")
        self.hashed = bool(hashed)
        generator = torch.Generator().manual_seed(int(seed))
        a = torch.randint(1 << 40, 1 << 62, (self.num_hashes,), generator=generator, dtype=torch.long) | 1  # odd
        b = torch.randint(0, 1 << 62, (self.num_hashes,), generator=generator, dtype=torch.long)
        self.register_buffer("hash_a", a)
        self.register_buffer("hash_b", b)
        self.register_buffer("last_seen", torch.full((self.num_hashes, self.num_buckets), -1, dtype=torch.long))
        self.register_buffer("gap", torch.zeros(self.num_hashes, self.num_buckets, dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def buckets(self, ids: Tensor) -> Tensor:
        """``[num_hashes, n]`` bucket of each id in each array."""
        ids = check_ids("ids", ids).long()
        if not self.hashed:
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.num_buckets):
                raise ValueError(f"ids must lie in [0, {self.num_buckets}) without hashing")
            return ids.unsqueeze(0)
        if len(ids) and int(ids.min()) < 0:
            raise ValueError("ids must be >= 0")
        # multiply-shift (Dietzfelbinger et al.): a·id + b wraps modulo 2^64 (two's complement), its high bits
        # 33..63 are well mixed for a random odd a; they are then reduced modulo the number of buckets
        mixed = self.hash_a.unsqueeze(1) * ids.unsqueeze(0) + self.hash_b.unsqueeze(1)
        return ((mixed >> 33) & _LOW_31) % self.num_buckets

    @torch.no_grad()
    def update(self, ids: Tensor) -> None:
        """Record the items of one step (``ids [n]``, duplicates allowed), then advance the step by one.

        Each occurrence is one EMA update of the gap, in order: the first occurrence of a bucket at step ``t``
        with the gap since it was last seen, each further one in the same step with a gap of 0.
        """
        t = int(self.step) + 1
        buckets = self.buckets(ids)
        for h in range(self.num_hashes):
            unique, counts = torch.unique(buckets[h], return_counts=True)
            last = self.last_seen[h, unique]
            first_gap = (t - last.clamp(min=0)).double()
            fresh = last < 0
            decay = 1.0 - self.alpha
            after_first = torch.where(fresh, first_gap, decay * self.gap[h, unique] + self.alpha * first_gap)
            # c − 1 further occurrences in this step: gaps of 0, each multiplying the estimate by (1 − α)
            self.gap[h, unique] = after_first * decay ** (counts - 1).double()
            self.last_seen[h, unique] = t
        self.step.fill_(t)

    def probability(self, ids: Tensor) -> Tensor:
        """``p̂ [n]``: estimated occurrences per step of each id (``1 / max_h B_h``; unseen: ``1/(steps + 1)``)."""
        buckets = self.buckets(ids)
        rows = torch.arange(self.num_hashes, device=buckets.device).unsqueeze(1)
        seen = self.last_seen[rows, buckets] >= 0
        unseen_gap = float(int(self.step) + 1)
        gaps = torch.where(seen, self.gap[rows, buckets], torch.full_like(self.gap[rows, buckets], unseen_gap))
        # gaps start at >= 1 and shrink by (1 − α) per repeat: only float underflow could bring one to 0
        largest = gaps.amax(dim=0).clamp(min=torch.finfo(torch.float64).tiny)
        return 1.0 / largest

    def log_probability(self, ids: Tensor) -> Tensor:
        """``log p̂ [n]`` (float64), the logQ term subtracted from each item's logits."""
        return self.probability(ids).log()
