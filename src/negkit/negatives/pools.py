"""Pools of candidate negatives beyond the batch. All state lives in persistent buffers (``state_dict``).

Writes are checked: embeddings must be finite ``[B, dim]`` floats, labels and ids integer tensors of length
``B`` (a float label 0.5 is an error, never truncated to 0), masks bool or 0/1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from negkit._validation import check_ids, check_int, check_mask, check_tensor


def _check_rows(name: str, x: Tensor, dim: int) -> None:
    check_tensor(name, x, 2)
    if x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} features, got {x.shape[1]}")


def _check_vector(name: str, x: Tensor | None, length: int) -> None:
    """An optional integer ``[length]`` vector of labels or ids."""
    if x is not None:
        check_ids(name, x, length)


class Queue(nn.Module):
    """MoCo-style FIFO memory of the last ``size`` embeddings (He et al., CVPR 2020), with labels and ids.

    ``enqueue`` writes rows (detached) over the oldest ones; ``mask`` enqueues only part of a batch (e.g. one
    view, or the samples of this rank). Before the queue is full only the rows written so far are returned.
    Buffers: ``embeddings [size, dim]``, ``labels [size]``, ``ids [size]`` (-1 = unknown), ``pointer``, ``count``.
    """

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.size, self.dim = check_int("size", size, low=1), check_int("dim", dim, low=1)
        self.register_buffer("queue_embeddings", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("queue_labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("queue_ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(
        self, embeddings: Tensor, labels: Tensor | None = None, ids: Tensor | None = None, *, mask: Tensor | None = None
    ) -> None:
        """Append ``embeddings [B, dim]`` (and ``labels``/``ids [B]``); rows where ``mask [B]`` is False are skipped."""
        _check_rows("embeddings", embeddings, self.dim)
        batch = embeddings.shape[0]
        _check_vector("labels", labels, batch)
        _check_vector("ids", ids, batch)
        if mask is not None:
            keep = check_mask("mask", mask, (batch,), embeddings.device)
            embeddings = embeddings[keep]
            labels = labels[keep] if labels is not None else None
            ids = ids[keep] if ids is not None else None
        rows = embeddings.shape[0]
        if rows == 0:
            return
        if rows > self.size:  # only the newest `size` rows can stay
            embeddings, labels, ids = embeddings[-self.size :], _tail(labels, self.size), _tail(ids, self.size)
            rows = self.size
        slots = (self.pointer + torch.arange(rows, device=self.pointer.device)) % self.size
        self.queue_embeddings[slots] = embeddings.detach().to(self.queue_embeddings.dtype)
        self.queue_labels[slots] = labels.long() if labels is not None else -1
        self.queue_ids[slots] = ids.long() if ids is not None else -1
        self.pointer.fill_(int((self.pointer + rows) % self.size))
        self.count.fill_(min(self.size, int(self.count) + rows))

    def _order(self) -> Tensor:
        """Slots of the filled rows, oldest first."""
        count = int(self.count)
        start = int(self.pointer) - count
        return (torch.arange(count, device=self.pointer.device) + start) % self.size

    @property
    def embeddings(self) -> Tensor:
        """``[n, dim]`` the filled rows, oldest first (``n = min(enqueued, size)``)."""
        return self.queue_embeddings[self._order()]

    @property
    def labels(self) -> Tensor:
        return self.queue_labels[self._order()]

    @property
    def ids(self) -> Tensor:
        return self.queue_ids[self._order()]

    def __len__(self) -> int:
        return int(self.count)

    def reset(self) -> None:
        self.pointer.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, filled={int(self.count)}"


def _tail(x: Tensor | None, n: int) -> Tensor | None:
    return None if x is None else x[-n:]


class EmbeddingCache(nn.Module):
    """A dataset-wide table of embeddings, one row per sample id, updated by index.

    Each row remembers the step at which it was written, so staleness is visible: ``age()`` is the number of
    ``tick()`` calls since the row was last written (``-1`` for rows never written). Buffers: ``table
    [num_samples, dim]``, ``labels [num_samples]`` (-1 unknown), ``written_at [num_samples]``, ``clock``.
    """

    def __init__(self, num_samples: int, dim: int, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.dim = check_int("dim", dim, low=1)
        self.register_buffer("table", torch.zeros(num_samples, dim, dtype=dtype))
        self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.long))
        self.register_buffer("written_at", torch.full((num_samples,), -1, dtype=torch.long))
        self.register_buffer("clock", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, index: Tensor, embeddings: Tensor, labels: Tensor | None = None) -> None:
        """Write ``embeddings [B, dim]`` (detached) into rows ``index [B]`` (and their ``labels [B]``)."""
        _check_rows("embeddings", embeddings, self.dim)
        check_ids("index", index, embeddings.shape[0])
        _check_vector("labels", labels, embeddings.shape[0])
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(
                f"index must lie in [0, {self.num_samples}), got values in [{int(index.min())}, {int(index.max())}]"
            )
        self.table[index] = embeddings.detach().to(self.table.dtype)
        if labels is not None:
            self.labels[index] = labels.long()
        self.written_at[index] = self.clock

    def tick(self) -> None:
        """Advance the clock by one step (call once per optimisation step)."""
        self.clock += 1

    def age(self) -> Tensor:
        """``[num_samples]`` steps since each row was written; ``-1`` for rows never written."""
        return torch.where(self.written_at >= 0, self.clock - self.written_at, torch.full_like(self.written_at, -1))

    @property
    def filled(self) -> Tensor:
        """``[num_samples]`` bool: rows written at least once."""
        return self.written_at >= 0

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, dim={self.dim}, filled={int(self.filled.sum())}"
