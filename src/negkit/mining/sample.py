"""Which of the candidates left in a query's window become its negatives.

* ``top``: the ``k`` highest-scoring candidates (deterministic).
* ``random``: ``k`` uniformly without replacement; log-weights ``log(n / k)`` (Horvitz–Thompson: each of the ``n``
  candidates is drawn with probability ``k / n``).
* ``hardness``: ``k`` without replacement with probability ``∝ exp(β · s)`` by Gumbel-top-k
  (:func:`negkit.negatives.sampling.perturbed_top_k`, as :class:`~negkit.negatives.HardnessSampler`); log-weights
  ``−log P(j ∈ sample)`` from the Gumbel threshold (Kool et al. 2019), so that ``Σ_j exp(s_j + w_j)`` is an unbiased
  estimate of the sum over the whole window.

A query with ``n ≤ k`` candidates gets all of them (log-weight 0: each was certain to be drawn); the caller decides
what to do with queries short of ``k``. The chosen negatives are returned best first. Draws use the generator
given (``mine`` seeds one per block of queries from ``--seed`` and the block's index, so the result does not depend
on how blocks are spread over processes).
"""

from __future__ import annotations

import numpy as np
import torch

from negkit.negatives.sampling import Eligibility, PoolView, log_inclusion_probability, perturbed_top_k

__all__ = ["SAMPLINGS", "block_generator", "choose_negatives"]

SAMPLINGS = ("top", "random", "hardness")


def block_generator(seed: int, block: int) -> torch.Generator:
    """A torch generator for one block of queries, from the run's seed and the block's index."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(block)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def choose_negatives(
    scores: np.ndarray,
    keep: np.ndarray,
    k: int,
    sampling: str,
    *,
    beta: float = 20.0,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pick ``k`` of the kept candidates of every row.

    Args:
        scores: ``[b, W]`` candidate scores, each row sorted from best to worst.
        keep: ``[b, W]`` bool, the candidates still eligible.
        k: negatives per query.
        sampling: ``"top"``, ``"random"`` or ``"hardness"``.
        beta: inverse temperature of ``hardness`` (``β = 1/T``; 20 is sentence-transformers' default scale).
        generator: random source for ``random`` and ``hardness``.

    Returns:
        ``(positions [b, k] int64, log_weights [b, k] float32 or None for top)``: window positions, best first,
        ``-1`` (log-weight NaN) in the slots of rows with fewer than ``k`` candidates.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    b, width = scores.shape
    counts = keep.sum(axis=1)
    positions = np.full((b, k), -1, dtype=np.int64)
    log_weights = None if sampling == "top" else np.full((b, k), np.nan, dtype=np.float32)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept positions first, in score order
    few = counts <= k if sampling != "top" else np.ones(b, dtype=bool)
    for row in np.nonzero(few)[0]:
        m = min(k, int(counts[row]))
        positions[row, :m] = order[row, :m]
        if log_weights is not None:
            log_weights[row, :m] = 0.0
    many = np.nonzero(~few)[0]
    if len(many):
        kept = torch.from_numpy(keep[many])
        if sampling == "hardness":
            logits = beta * torch.from_numpy(scores[many]).double()
        else:
            logits = torch.zeros(kept.shape, dtype=torch.float64)
        logits = logits.masked_fill(~kept, float("-inf"))
        view = PoolView(len(many), width, lambda start, stop: logits[:, start:stop], Eligibility(), logits.device)
        chosen, _, threshold = perturbed_top_k(view, k, generator)
        chosen = chosen.sort(dim=1).values  # window order = best first
        positions[many] = chosen.numpy()
        if sampling == "hardness":
            picked_logits = logits.gather(1, chosen)
            log_weights[many] = (-log_inclusion_probability(picked_logits, threshold)).float().numpy()
        else:
            log_weights[many] = np.log(counts[many] / k).astype(np.float32)[:, None] * np.ones((1, k), np.float32)
    return positions, log_weights
