"""Negatives across processes: gather embeddings from every rank with gradients, InfoNCE of local anchors against
the global batch (hard-negative columns included), and the pieces ``negkit run`` needs under ``torchrun``.

``gather(x)`` concatenates ``x [b, ...]`` from all ranks (rank order) in a tiny autograd function whose backward
mirrors the forward exchange: the gradient arriving at the global tensor is summed over ranks (all-reduce) and
each rank keeps its own slice. Every rank computes the loss of its *local* anchors against *global*
candidates (open_clip's ``local_loss`` + ``gather_with_grad``, the form its issue #894 finds scales); with
gradients averaged over ranks (DDP's default) the parameters move exactly as in single-process training on the
concatenated batch (tested with two gloo processes).

Offsets live in one place: ``GlobalBatch`` carries the gathered tensors and ``offset = rank · b``, the
global index of this rank's first row (so local anchor i's positive is global column ``offset + i``, and row
``offset + i`` of gathered hard negatives ``[world · b, m, d]`` is still anchor ``i``'s). Every rank must pass
the same local batch size (checked: a mismatch is the same ``ValueError`` on every rank, never a hang).

For training (:func:`negkit.train.loop.fit`): :func:`init_from_env` starts the process group that ``torchrun``
describes, :func:`local_rows` is a rank's slice of a global batch, :func:`sync_batch_norm` makes batch
normalisation use the statistics of the global batch (as one process would), and :func:`on_main` runs a piece
of work (writing files) on rank 0 only and hands its result, or its error, to every rank.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd import Function

from negkit._validation import (
    check_compatible,
    check_features,
    check_int,
    check_labels,
    check_logits_finite,
    check_pair,
    check_positive_scalar,
    check_reduction,
    check_similarity,
    normalize_rows,
)
from negkit.losses.functional.core import average_kept, compute_dtype, masked_logsumexp, reduce_loss, skip_anchors
from negkit.losses.functional.tiled import tiled_logsumexp
from negkit.negatives.pools import Queue

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world_size)``, ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0, and when not distributed."""
    return world()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing when not distributed)."""
    if world()[1] > 1:
        dist.barrier()


# ------------------------------------------------------------------------------------------ process group


def env_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when absent)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {value!r}") from None


def init_from_env(backend: str | None = None) -> bool:
    """Start the default process group from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``) when ``WORLD_SIZE > 1`` and none is running; return whether this call started
    it (the caller then ends it with ``dist.destroy_process_group()``).

    The backend is ``nccl`` when CUDA is available (each rank on GPU ``LOCAL_RANK``), else ``gloo``.
    """
    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def device() -> torch.device:
    """Where this rank's tensors live: its GPU under nccl, else the CPU."""
    if world()[1] > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def on_main(work: Callable[[], T]) -> T:
    """Run ``work()`` on rank 0 only and return its result on every rank (rank 0's error is raised on every
    rank, so that no rank waits forever). ``work`` must not call collectives. Not distributed: ``work()``."""
    if world()[1] == 1:
        return work()
    payload: list[Any] = [None]
    if is_main_process():
        try:
            payload[0] = ("ok", work())
        except Exception as error:  # handed to every rank, raised there too
            payload[0] = ("error", error)
        try:
            pickle.dumps(payload[0])
        except Exception as error:  # an object that cannot travel: the same error on every rank, never a hang
            payload[0] = ("error", RuntimeError(f"rank 0's {payload[0][0]} cannot be sent to the other ranks: {error}"))
    dist.broadcast_object_list(payload, src=0, device=device() if dist.get_backend() == "nccl" else None)
    status, value = payload[0]
    if status == "error":
        raise value
    return value


# ----------------------------------------------------------------------------------------------- gathering


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
    """``[world · b, ...]``: ``x`` from every rank, differentiable; ``x`` itself when not distributed.

    Every rank must pass the same shape (see :func:`check_same_shape`)."""
    if world()[1] == 1:
        return x
    if not x.is_floating_point():
        parts = [torch.empty_like(x) for _ in range(world()[1])]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    return _Gather.apply(x)


def check_same_shape(**tensors: Tensor | None) -> None:
    """Raise the same ``ValueError`` on every rank unless every rank passes tensors of the same shapes, or
    ``None`` in the same places (a gather of mismatched shapes would fail or hang). One small all-gather of a
    fixed size (tensors of up to 7 dimensions); nothing when not distributed."""
    _, size = world()
    if size == 1:
        return
    width = 8  # [number of dims (−1: None), dims...]
    shapes = torch.full((len(tensors), width), -2, dtype=torch.long)
    for row, x in enumerate(tensors.values()):
        if x is None:
            shapes[row, 0] = -1
        elif x.dim() < width:
            shapes[row, : x.dim() + 1] = torch.tensor([x.dim(), *x.shape])
    shapes = shapes.to(device())
    parts = [torch.empty_like(shapes) for _ in range(size)]
    dist.all_gather(parts, shapes)
    for row, name in enumerate(tensors):
        seen = [
            None if int(part[row, 0]) == -1 else tuple(part[row, 1 : int(part[row, 0]) + 1].tolist()) for part in parts
        ]
        if len(set(seen)) > 1:
            per_rank = ", ".join(f"rank {r}: {'None' if s is None else list(s)}" for r, s in enumerate(seen))
            raise ValueError(f"{name} must have the same shape on every rank (equal local batch sizes), got {per_rank}")


def local_rows(x: Tensor) -> Tensor:
    """This rank's slice of a global batch ``x [world · b, ...]``: rows ``[rank · b, (rank + 1) · b)``; ``x``
    when not distributed. The global batch must split evenly."""
    rank, size = world()
    if size == 1:
        return x
    if x.shape[0] % size:
        raise ValueError(
            f"a global batch of {x.shape[0]} rows does not split over {size} processes; use a batch "
            f"size divisible by {size}"
        )
    rows = x.shape[0] // size
    return x[rank * rows : (rank + 1) * rows]


class GlobalBatch(NamedTuple):
    """Gathered tensors and this rank's offset: local row i is global row ``offset + i``."""

    embeddings: Tensor
    labels: Tensor | None
    offset: int


def gather_batch(embeddings: Tensor, labels: Tensor | None = None) -> GlobalBatch:
    rank, _ = world()
    return GlobalBatch(gather(embeddings), None if labels is None else gather(labels), rank * embeddings.shape[0])


# ------------------------------------------------------------------------------------------- global InfoNCE


def global_info_nce(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.1,
    labels: Tensor | None = None,
    symmetric: bool = False,
    share_negatives: bool = True,
    similarity: str = "cosine",
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """InfoNCE of this rank's anchors ``[b, d]`` against the positives (and hard negatives) of *all* ranks.

    For local anchor ``i`` (global row ``g = offset + i``) with logits ``l = s / T``::

        ℓ_i = −l(a_i, p_g) + log( Σ_{j ∈ P(i)} e^{l(a_i, p_j)} + Σ_{n ∈ H(i)} e^{l(a_i, n)} )

    Which negatives each anchor sees:

    * ``P(i)``: the ``world · b`` positives of the global batch — its own positive ``p_g`` once, minus every
      other positive with the anchor's label when ``labels [b]`` is given;
    * ``H(i)``, the hard-negative columns ``negatives [b, m, d]`` (row ``i`` holds anchor ``i``'s ``m`` mined
      negatives, e.g. the columns of a sentence-transformers ``(anchor, positive, negative_1, …)`` dataset):
      with ``share_negatives`` (the default, sentence-transformers' ``MultipleNegativesRankingLoss`` layout)
      every hard negative of the global batch, ``world · b · m`` rows, gathered in rank order; without it only
      the anchor's own ``m`` (``info_nce``'s ``[B, K, d]`` form, nothing exchanged). Hard negatives carry no
      label and are never masked.

    With ``symmetric`` each local positive also acts as an anchor against the global batch of anchors (no hard
    negatives in that direction, as in :func:`negkit.losses.info_nce`) and the two directions are averaged.

    With one process this equals ``info_nce(anchor, positive, negatives, labels=labels, symmetric=symmetric)``
    (``negatives.flatten(0, 1)`` as shared ``[K, d]`` negatives when ``share_negatives``); across ranks, the
    mean of the ranks' losses and the ranks' gradients averaged (DDP) equal it on the concatenated batch, as long
    as no anchor is skipped (a skipped anchor leaves its own rank's mean; use ``reduction="sum"`` to compare then).
    An anchor with no negative left in the global batch is skipped (0; in strict mode an error).

    Args:
        anchor, positive: ``[b, d]`` local rows; the same ``b`` on every rank.
        negatives: optional ``[b, m, d]`` hard negatives per local anchor.
        temperature: T > 0, a float or a scalar tensor (learnable: its gradient flows on every path; under DDP
            keep it in a module so that its gradient is averaged too).
        labels: optional ``[b]`` class ids of the local pairs.
        share_negatives: every anchor sees every rank's hard negatives (True) or only its own (False).
        similarity: ``"cosine"`` (inputs L2-normalised inside) or ``"dot"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``[b]``) over the local anchors.
        chunk_size: compute each log-sum-exp over the gathered candidates in column tiles of this many rows
            (:func:`negkit.losses.functional.tiled.tiled_logsumexp`: memory ``O(b · chunk)`` instead of
            ``O(b · world · b · (1 + m))``); ``None``: one block.

    Raises:
        ValueError: on bad shapes, dtypes or devices, non-finite inputs, a temperature ≤ 0, ``chunk_size < 1``,
            an unknown reduction or similarity, overflowing logits, or local batch shapes that differ between
            ranks (raised on every rank).
    """
    check_positive_scalar("temperature", temperature)
    check_reduction(reduction)
    check_similarity(similarity)
    check_pair(anchor, positive)
    batch, dim = anchor.shape
    if negatives is not None:
        check_features("negatives", negatives, 3)
        if negatives.shape[0] != batch or negatives.shape[2] != dim:
            raise ValueError(
                f"negatives must have shape [{batch}, m, {dim}] (one row per anchor), got {tuple(negatives.shape)}"
            )
        check_compatible("anchor", anchor, negatives=negatives)
    if labels is not None:
        labels = check_labels("labels", labels, batch, anchor.device)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, low=1)
    check_same_shape(anchor=anchor, negatives=negatives if share_negatives else None, labels=labels)

    own, shared = None, None
    if negatives is not None and negatives.shape[1] > 0:
        if share_negatives:
            shared = gather(negatives).flatten(0, 1)  # rank order: row offset + i still belongs to anchor i
        else:
            own = negatives
    losses, skipped = _local_against_global(
        anchor, gather_batch(positive, labels), labels, temperature, own, shared, similarity, chunk_size
    )
    if symmetric:
        backward, backward_skipped = _local_against_global(
            positive,
            gather_batch(anchor, labels),
            labels,
            temperature,
            None,
            None,
            similarity,
            chunk_size,
            context="positive → anchor direction",
        )
        losses, skipped = average_kept(losses, backward, skipped, backward_skipped)
    return reduce_loss(losses, reduction, skipped=skipped)


def _local_against_global(
    anchor: Tensor,
    candidates: GlobalBatch,
    labels: Tensor | None,
    temperature: float | Tensor,
    own_negatives: Tensor | None,
    shared_negatives: Tensor | None,
    similarity: str,
    chunk_size: int | None,
    context: str = "",
) -> tuple[Tensor, Tensor | None]:
    """``[b]`` per-anchor InfoNCE of the local ``anchor`` rows against the gathered candidates (and hard
    negatives), and the anchors skipped (degenerate-batch policy applied).

    The anchors are divided by ``T`` once (``a / T``), so a tensor temperature receives its gradient through
    plain autograd on the tiled path as well; each block's log-sum-exp is the core's (masked or tiled)."""
    dtype = compute_dtype(anchor.dtype)
    a, c = anchor.to(dtype), candidates.embeddings.to(dtype)
    if similarity == "cosine":
        a, c = normalize_rows(a), normalize_rows(c)
    scaled = a / (temperature.to(dtype) if isinstance(temperature, Tensor) else temperature)
    batch, total = a.shape[0], c.shape[0]
    rows = torch.arange(batch, device=a.device)
    own_column = candidates.offset + rows
    positive_logits = (scaled * c[own_column]).sum(dim=1)

    # P(i): the global positives, the anchor's own kept once, same-label others dropped.
    if chunk_size is not None:
        parts = [
            tiled_logsumexp(
                scaled,
                c,
                1.0,
                row_labels=labels,
                col_labels=candidates.labels,
                own_column=own_column,
                chunk_size=chunk_size,
            )
        ]
    else:
        logits = scaled @ c.T
        keep = None
        if labels is not None:
            keep = labels.unsqueeze(1) != candidates.labels.unsqueeze(0)
            keep[rows, own_column] = True
        parts = [masked_logsumexp(logits, keep)]
    if labels is None:
        negatives_left = torch.full((batch,), total - 1, device=a.device)
    else:  # columns with another label, counted without a [b, N] mask
        ordered = candidates.labels.sort().values
        same = torch.searchsorted(ordered, labels, right=True) - torch.searchsorted(ordered, labels)
        negatives_left = total - same
    # H(i): hard negatives, never masked.
    if shared_negatives is not None:
        n = shared_negatives.to(dtype)
        n = normalize_rows(n) if similarity == "cosine" else n
        if chunk_size is not None:
            parts.append(tiled_logsumexp(scaled, n, 1.0, chunk_size=chunk_size))
        else:
            parts.append(torch.logsumexp(scaled @ n.T, dim=1))
        negatives_left = negatives_left + n.shape[0]
    if own_negatives is not None:
        n = own_negatives.to(dtype)
        n = normalize_rows(n) if similarity == "cosine" else n
        parts.append(torch.logsumexp(torch.einsum("bd,bmd->bm", scaled, n), dim=1))
        negatives_left = negatives_left + n.shape[1]
    log_denominator = parts[0]
    for part in parts[1:]:
        log_denominator = torch.logaddexp(log_denominator, part)
    check_logits_finite(
        torch.stack([positive_logits.detach(), log_denominator.detach()]),
        similarity=similarity,
        temperature=temperature,
        names="anchor, candidates",
    )
    skipped = skip_anchors(
        batch,
        no_negative=negatives_left == 0,
        context=", ".join(filter(None, ["in the global batch", context])),
        empty="anchor",
    )
    return log_denominator - positive_logits, skipped


# --------------------------------------------------------------------------------- batch norm across ranks


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation whose training statistics are those of the *global* batch (every rank's rows), with
    gradients through them: one process on the concatenated batch normalises the same way. Works on CPU
    (gloo) as on GPU; each rank's per-channel mean and sum of squared deviations are gathered with gradient and
    combined (Chan et al.'s parallel variance), so no rank ever sums raw squares. Not distributed, or in eval
    mode, it is the plain ``BatchNorm`` computation of this rank's rows (evaluation never talks to other
    ranks). Same parameters, buffers and ``state_dict`` keys as the module it replaces (:func:`sync_batch_norm`).
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input [N, C, ...], got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world()[1] == 1:  # evaluation is per rank (and may run on rank 0 alone)
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1]
        local_mean = x.mean(dim=dims)
        local_m2 = ((x - local_mean.view(shape)) ** 2).sum(dim=dims)
        stats = gather(torch.cat([local_mean, local_m2]).unsqueeze(0))  # [world, 2C], differentiable
        counts = gather(torch.tensor([count], device=x.device)).to(x.dtype).unsqueeze(1)  # [world, 1]
        means, m2s = stats.chunk(2, dim=1)
        total = counts.sum()
        if total < 2:
            raise ValueError(f"batch normalisation needs more than 1 value per channel, got {int(total)}")
        mean = (counts * means).sum(dim=0) / total
        var = (m2s + counts * (means - mean) ** 2).sum(dim=0) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
                unbiased = var * (total / (total - 1))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var.dtype))
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer inside ``module`` by a :class:`GlobalBatchNorm` that shares its parameters
    and buffers (an optimiser built before keeps working); return ``module`` (or the replacement, when
    ``module`` itself is one)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        replacement = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        replacement.training = module.training
        if module.affine:
            replacement.weight, replacement.bias = module.weight, module.bias
        if module.track_running_stats:
            replacement.running_mean = module.running_mean
            replacement.running_var = module.running_var
            replacement.num_batches_tracked = module.num_batches_tracked
        return replacement
    for name, child in module.named_children():
        converted = sync_batch_norm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


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
