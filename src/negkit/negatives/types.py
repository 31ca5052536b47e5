"""What a sampler returns, and the gathered form a loss consumes."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class GatheredNegatives(NamedTuple):
    """Per-anchor negative embeddings ready for :func:`negkit.losses.info_nce`.

    Attributes:
        embeddings: ``[B, K, d]``.
        log_weights: ``[B, K]`` or ``None`` (see :class:`Negatives`).
    """

    embeddings: Tensor
    log_weights: Tensor | None


class Negatives(NamedTuple):
    """The negatives a sampler chose for each anchor.

    Attributes:
        indices: ``[B, K]`` int64 row indices into the pool.
        log_weights: ``[B, K]`` log importance weights such that ``Σ_k exp(s_ik + log_weights_ik)`` is an unbiased
            estimate of ``Σ_{j eligible} exp(s_ij)``, the sum over the anchor's whole eligible pool (for any
            per-item values ``s``). Pass them to a loss to estimate the full-pool loss; leave them out to train
            on the sampler's own distribution (e.g. hard negatives). ``None`` when the choice is deterministic
            (mining), for which no such weights exist.
    """

    indices: Tensor
    log_weights: Tensor | None

    def gather(self, pool: Tensor) -> GatheredNegatives:
        """``pool [N, d]`` → :class:`GatheredNegatives` with ``[B, K, d]`` embeddings (keeps autograd)."""
        return GatheredNegatives(pool[self.indices], self.log_weights)
