"""Negatives across processes: gather embeddings from every rank with gradients, and InfoNCE of local anchors
against the global batch.

``gather(x)`` concatenates ``x [b, ...]`` from all ranks (rank order) in a tiny autograd function whose backward
mirrors the forward exchange: the gradient arriving at the global tensor is summed over ranks (all-reduce) and
each rank keeps its own slice. Every rank computes the loss of its *local* anchors against *global*
candidates; with gradients averaged over ranks (DDP's default) the parameters move exactly as in
single-process training on the concatenated batch (tested with two gloo processes).

Offsets live in one place: ``GlobalBatch`` carries the gathered tensors and ``offset = rank · b``, the
global index of this rank's first row (so local anchor i's positive is global column ``offset + i``).
Requires equal local batch sizes on every rank. The loss itself is :func:`negkit.losses.indexed_info_nce`;
this module only moves tensors between ranks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd import Function

from negkit._validation import check_positive_scalar, check_reduction, check_tensor
from negkit.losses.functional.candidates import indexed_rows
from negkit.losses.functional.core import average_kept, reduce_loss, skip_anchors
from negkit.negatives.pools import Queue


def world() -> tuple[int, int]:
    """``(rank, world_size)``, ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Gather(Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]  # noqa: ANN001
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]  # noqa: ANN001
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss contributes to every rank's rows
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather(x: Tensor) -> Tensor:
    """``[world · b, ...]``: ``x`` from every rank, differentiable; ``x`` itself when not distributed."""
    if world()[1] == 1:
        return x
    if not x.is_floating_point():
        parts = [torch.empty_like(x) for _ in range(world()[1])]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    return _Gather.apply(x)


class GlobalBatch(NamedTuple):
    """Gathered tensors and this rank's offset: local row i is global row ``offset + i``."""

    embeddings: Tensor
    labels: Tensor | None
    offset: int


def gather_batch(embeddings: Tensor, labels: Tensor | None = None) -> GlobalBatch:
    rank, _ = world()
    return GlobalBatch(gather(embeddings), None if labels is None else gather(labels), rank * embeddings.shape[0])


def global_info_nce(
    anchor: Tensor,
    positive: Tensor,
    *,
    temperature: float = 0.1,
    labels: Tensor | None = None,
    symmetric: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """InfoNCE of this rank's anchors ``[b, d]`` against the positives of *all* ranks.

    Which negatives each anchor sees: the other ``world · b − 1`` positives of the global batch (minus those
    with the anchor's label when ``labels [b]`` is given); with ``symmetric`` the positives also act as anchors
    against the global batch of anchors. Each direction is :func:`negkit.losses.indexed_info_nce` of the local
    rows against the gathered ones, the positive at column ``offset + i``. With one process it equals
    ``info_nce(anchor, positive, labels=labels, symmetric=symmetric)``, degenerate batches included (an anchor
    with no negative left in the global batch is skipped; in strict mode an error).
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_tensor("anchor", anchor, 2)
    check_tensor("positive", positive, 2)
    if anchor.shape != positive.shape:
        raise ValueError(f"positive must have the shape of anchor {tuple(anchor.shape)}, got {tuple(positive.shape)}")
    losses, skipped = _local_against_global(anchor, gather_batch(positive, labels), labels, temperature)
    if symmetric:
        backward, backward_skipped = _local_against_global(positive, gather_batch(anchor, labels), labels, temperature)
        losses, skipped = average_kept(losses, backward, skipped, backward_skipped)
    return reduce_loss(losses, reduction, skipped=skipped)


def _local_against_global(
    anchor: Tensor, candidates: GlobalBatch, labels: Tensor | None, temperature: float
) -> tuple[Tensor, Tensor | None]:
    """``[b]`` per-anchor InfoNCE of the local ``anchor`` rows against the gathered candidates, and the anchors
    skipped (degenerate-batch policy applied)."""
    own = candidates.offset + torch.arange(anchor.shape[0], device=anchor.device)
    loss, _, no_negative = indexed_rows(
        anchor,
        candidates.embeddings,
        own,
        temperature=temperature,
        anchor_labels=labels,
        candidate_labels=candidates.labels,
    )
    return loss, skip_anchors(anchor.shape[0], no_negative=no_negative, context="in the global batch", empty="anchor")


@torch.no_grad()
def enqueue_global(queue: Queue, embeddings: Tensor, labels: Tensor | None = None, ids: Tensor | None = None) -> None:
    """Enqueue the rows of *every* rank, in rank order, so that all ranks hold the same queue.

    Enqueueing only local rows would give each rank a different memory and, with labels, a different view of
    which negatives are false (the cross-rank ordering problem peers report for memory banks).
    """
    queue.enqueue(
        gather(embeddings.detach()),
        None if labels is None else gather(labels),
        None if ids is None else gather(ids),
    )
