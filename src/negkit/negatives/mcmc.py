"""EMC²'s negative sampler: one Metropolis–Hastings chain per anchor over the dataset (Yau et al., ICML 2024)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from negkit._validation import (
    check_compatible,
    check_features,
    check_finite_scalar,
    check_ids,
    check_int,
    check_tensor,
    degenerate,
    normalize_rows,
)
from negkit.negatives.types import Negatives

#: the proposals' rows are gathered for blocks of chains of at most this many values (steps · d per chain, ~1 MB)
_BLOCK_ELEMENTS = 1 << 18


def _cosines(anchors: Tensor, pool: Tensor, proposal: Tensor) -> Tensor:
    """``[b, T]`` cosine of unit ``anchors [b, d]`` and the pool rows ``proposal [b, T]``, as ``(a · x) / ‖x‖``; rows
    whose norm is not a plain positive float (zero, tiny, overflowing, NaN) go through :func:`normalize_rows`.

    A float32 pool on the CPU is read with NumPy (``take`` and ``einsum``: single-threaded loops over a small
    block): torch would open a parallel region per operation, and each waits for a descheduled thread when
    another job keeps a core busy.
    """
    if pool.device.type == "cpu" and pool.dtype == torch.float32 and not pool.requires_grad:
        block = np.take(pool.numpy(), proposal.reshape(-1).numpy(), axis=0).reshape(*proposal.shape, pool.shape[1])
        unit = anchors.detach().numpy()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            norms_np = np.sqrt(np.einsum("btd,btd->bt", block, block))
            cosine = torch.from_numpy(np.einsum("btd,bd->bt", block, unit) / norms_np)
        rows, norms = torch.from_numpy(block), torch.from_numpy(norms_np)
    else:
        rows = pool.index_select(0, proposal.reshape(-1).to(pool.device)).view(*proposal.shape, pool.shape[1])
        rows = rows.float()
        norms = torch.linalg.vector_norm(rows, dim=2)
        cosine = torch.linalg.vecdot(rows, anchors.unsqueeze(1)) / norms
    odd = ~(norms >= 1e-12) | torch.isinf(norms)
    if bool(odd.any()):
        unit_rows = normalize_rows(rows[odd], dim=1)
        cosine[odd] = (unit_rows * anchors.unsqueeze(1).expand_as(rows)[odd]).sum(dim=1)
    return cosine


def _metropolis_hastings(
    log_uniform: np.ndarray, log_proposal: np.ndarray, log_target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The accept/reject recurrence of independence Metropolis–Hastings chains, step by step over ``[B]`` vectors.

    Step t accepts when ``log_uniform[:, t] < log_proposal[:, t] − log_target`` (the current state's log-target),
    which then becomes ``log_proposal[:, t]``. Returns the final log-targets ``[B]`` and the accepted steps
    ``[B, T]`` (bool). NumPy: about 1 µs per step and operation, not torch's ~5 µs.
    """
    uniform = np.ascontiguousarray(log_uniform.T)
    proposed = np.ascontiguousarray(log_proposal.T)
    target = log_target.astype(proposed.dtype, copy=True)
    accepted_t = np.empty(proposed.shape, dtype=bool)
    for step in range(proposed.shape[0]):
        np.less(uniform[step], proposed[step] - target, out=accepted_t[step])
        np.copyto(target, proposed[step], where=accepted_t[step])
    return target, np.ascontiguousarray(accepted_t.T)


class MCMCSampler(nn.Module):
    """Negatives from a Metropolis–Hastings chain per anchor whose stationary distribution is ``∝ exp(β·s)``.

    Each anchor id owns a chain whose state is a dataset id (a candidate negative) and the cached log-target
    ``β·s`` computed when that state was accepted. One call runs ``T = ceil(k / (1 − burn_in))`` steps per
    anchor: a proposal ``j`` is drawn uniformly from ``pool`` (an independence sampler: in EMC² the pool is
    the batch, itself a uniform sample of the dataset; it can also be an :class:`EmbeddingCache`), and is
    accepted with probability ``min(1, exp(β·s_ij − cached))``; a proposal carrying the anchor's own id (or
    the given ``exclude_ids``) is never accepted. The states after the first ``T − k`` (burn-in) steps are
    returned, with repeats, as the ``k`` negatives. The chain persists across calls (and across the two
    views of a sample), so its state can refer to a sample that is not in the current pool: such negatives
    have index ``-1`` and their dataset id is in :attr:`last_state_ids`. The caller takes them from a cache
    or re-encodes them.

    The cached log-target is not refreshed when the model changes (as in the reference code), so it is
    stale by the time the next proposal is compared with it. Chain state lives in persistent buffers
    ``state [num_samples]``, ``log_target [num_samples]`` and the acceptance counters.

    Args:
        num_samples: number of anchor ids (the dataset size).
        k: recorded negatives per anchor and call.
        beta: inverse temperature of the target on the cosine (EMC² uses 14.28, i.e. T ≈ 0.07).
        burn_in: fraction of each call's steps not recorded, in [0, 1).
    """

    def __init__(self, num_samples: int, k: int, beta: float, burn_in: float = 0.5) -> None:
        super().__init__()
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.k = check_int("k", k, low=1)
        self.beta = check_finite_scalar("beta", beta, low=-1e30, high=1e30)
        self.burn_in = check_finite_scalar("burn_in", burn_in, low=0.0, high=1.0, high_inclusive=False)
        self.steps = math.ceil(self.k / (1.0 - self.burn_in))
        self.register_buffer("state", torch.full((num_samples,), -1, dtype=torch.long))
        self.register_buffer("log_target", torch.full((num_samples,), float("-inf")))
        self.register_buffer("accepted", torch.zeros((), dtype=torch.long))
        self.register_buffer("proposed", torch.zeros((), dtype=torch.long))
        self.last_state_ids: Tensor | None = None
        self.last_acceptance_rate: float = float("nan")

    @property
    def acceptance_rate(self) -> float:
        """Share of accepted proposals since construction (or the last :meth:`reset_counters`)."""
        return float(self.accepted) / max(1, int(self.proposed))

    def reset_counters(self) -> None:
        self.accepted.zero_()
        self.proposed.zero_()

    @torch.no_grad()
    def sample(
        self,
        anchors: Tensor,
        pool: Tensor,
        *,
        anchor_ids: Tensor,
        pool_ids: Tensor | None = None,
        exclude_ids: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Negatives:
        """Advance the chains of ``anchor_ids [B]`` through ``pool [N, d]`` and return ``k`` recorded states each.

        ``pool_ids [N]`` are the dataset ids of the pool rows; ``None`` means row r has id r (a cache over the
        whole dataset), in which case every state is in the pool. ``exclude_ids [B]``: the pool id chain i never
        moves to; by default the anchor's own id (anchors and pool share one id space). When they do not — e.g.
        queries over a document corpus — pass the anchor's positive document. Cost: O(T · B · d), independent of N.

        An empty pool, a pool of another width, ids that are not integer tensors of the right length or range,
        and NaN/inf rows are errors. An empty batch of anchors gets an empty ``[0, k]`` result (strict mode:
        :class:`~negkit.losses.DegenerateBatchError`) and leaves the chains as they are.
        """
        check_features("anchors", anchors, 2)
        check_tensor("pool", pool, 2, finite=False)  # proposals are checked as they are read: O(B·d) per step
        check_compatible("anchors", anchors, pool=pool)
        batch, size = anchors.shape[0], pool.shape[0]
        if pool.shape[1] != anchors.shape[1]:
            raise ValueError(f"pool must have {anchors.shape[1]} features like anchors, got {pool.shape[1]}")
        if size == 0:
            raise ValueError("pool is empty (0 rows): the chains have nothing to propose")
        check_ids("anchor_ids", anchor_ids, batch)
        if batch and (int(anchor_ids.min()) < 0 or int(anchor_ids.max()) >= self.num_samples):
            raise ValueError(f"anchor_ids must lie in [0, {self.num_samples})")
        if pool_ids is not None:
            check_ids("pool_ids", pool_ids, size)
        if exclude_ids is None:
            exclude_ids = anchor_ids
        else:
            check_ids("exclude_ids", exclude_ids, batch)
        if batch == 0:
            degenerate("anchors is empty (0 rows): no chain to advance")
            self.last_state_ids = torch.empty(0, self.k, dtype=torch.long)
            return Negatives(torch.empty(0, self.k, dtype=torch.long), None)
        a = normalize_rows(anchors.float(), dim=1)
        steps, burn = self.steps, self.steps - self.k
        # All proposals and uniforms of the call at once, then the targets of all proposals in blocks of chains;
        # only the accept/reject recurrence runs step by step, on [B] vectors. The [B, T] bookkeeping is NumPy:
        # single-threaded, no parallel region to stall on a busy machine.
        proposal = torch.randint(0, size, (batch, steps), generator=generator)
        uniform = torch.rand(batch, steps, generator=generator).numpy()
        proposal_np = proposal.numpy()
        ids_np = proposal_np if pool_ids is None else np.take(pool_ids.cpu().numpy(), proposal_np)
        with np.errstate(divide="ignore"):
            log_uniform = np.log(np.maximum(uniform, np.float32(1e-30)))
        # a proposal carrying the excluded id is never accepted: an infinite uniform rejects it
        log_uniform[ids_np == exclude_ids.cpu().numpy()[:, None]] = np.inf
        log_proposal = torch.empty(batch, steps)
        block = max(1, _BLOCK_ELEMENTS // (steps * anchors.shape[1]))
        for lo in range(0, batch, block):  # blocks of chains small enough to stay in cache
            cosine = _cosines(a[lo : lo + block], pool.detach(), proposal[lo : lo + block])
            log_proposal[lo : lo + block] = self.beta * cosine.to(log_proposal.device)
        log_proposal_np = log_proposal.numpy()
        if not np.isfinite(log_proposal_np).all():  # a NaN/inf pool row gives a NaN cosine, nothing else does
            raise ValueError("pool contains non-finite values (NaN or inf) in the proposed rows")
        target_np, accepted_at = _metropolis_hastings(
            log_uniform, log_proposal_np, self.log_target[anchor_ids].cpu().numpy()
        )
        # the step whose proposal is the state after each step (-1: the state the call started from)
        last = np.maximum.accumulate(np.where(accepted_at, np.arange(steps), -1), axis=1)
        start_state = self.state[anchor_ids].cpu().numpy()
        start_position = self._locate(self.state[anchor_ids], pool_ids, size).cpu().numpy()
        from_start = last < 0
        taken = np.maximum(last, 0)
        states = np.where(from_start, start_state[:, None], np.take_along_axis(ids_np, taken, axis=1))
        positions = np.where(from_start, start_position[:, None], np.take_along_axis(proposal_np, taken, axis=1))
        device = self.state.device
        recorded_state = torch.from_numpy(np.ascontiguousarray(states[:, burn:])).to(device)
        recorded_position = torch.from_numpy(np.ascontiguousarray(positions[:, burn:])).to(device)
        state = torch.from_numpy(states[:, -1].copy()).to(device)
        log_target = torch.from_numpy(target_np)
        accepted = int(accepted_at.sum())
        self.state[anchor_ids] = state
        self.log_target[anchor_ids] = log_target.to(self.log_target.dtype)
        self.accepted += accepted
        self.proposed += batch * self.steps
        self.last_acceptance_rate = accepted / (batch * self.steps)
        self.last_state_ids = recorded_state
        return Negatives(recorded_position, None)

    @staticmethod
    def _locate(state: Tensor, pool_ids: Tensor | None, size: int) -> Tensor:
        """Pool row of each dataset id in ``state`` (``-1``: unset or not in the pool)."""
        if pool_ids is None:
            return torch.where((state >= 0) & (state < size), state, torch.full_like(state, -1))
        order = pool_ids.argsort()
        ordered = pool_ids[order]
        slot = torch.searchsorted(ordered, state).clamp(max=size - 1)
        found = ordered[slot] == state
        return torch.where(found & (state >= 0), order[slot], torch.full_like(state, -1))

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, k={self.k}, beta={self.beta}, burn_in={self.burn_in}"
