"""SigLIP: the pairwise sigmoid loss (Zhai, Mustafa, Kolesnikov, Beyer, "Sigmoid Loss for Language Image
Pre-Training", ICCV 2023, arXiv 2303.15343, Eq. 1).

For ``B`` anchors ``a_i`` and ``B`` candidates ``p_j`` with cosine similarity ``c_ij``, a scale ``t > 0`` (the
multiplier, already exponentiated: the paper's ``exp(t')``) and a bias ``b``::

    ℓ_i = Σ_j −log σ(z_ij · (t·c_ij + b)),      z_ij = +1 for a positive pair, −1 otherwise,

a positive pair being ``j = i`` (and, with ``labels``, every ``j`` with ``labels_j = labels_i``: duplicates of a
class are positives, not negatives). The batch loss is ``(1/B) Σ_i ℓ_i`` (the paper's normalisation by the
mini-batch size, which is also open_clip's ``SigLipLoss``). Every pair is its own binary problem: there is no
normaliser over a row, so anchor ``i`` sees each of the ``B`` candidates as one logistic term, the positive(s)
pulled towards ``σ → 1``, every other candidate pushed towards ``σ → 0``. ``−log σ`` is ``F.logsigmoid`` (stable
for any logit); nothing exponentiates a logit.

**Column tiles** (``chunk_size``). Since ``ℓ_i`` is a plain sum over columns, the loss and its gradient split
exactly over column blocks. With ``u_ij = z_ij (t c_ij + b)`` and an upstream gradient ``g_i`` on ``ℓ_i``, the
derivative on the logit ``x_ij = t c_ij + b`` is ``γ_ij = −g_i z_ij σ(−u_ij)``, so::

    ∂/∂a_i = t Σ_j γ_ij p_j,   ∂/∂p_j = t Σ_i γ_ij a_i,   ∂/∂t = Σ_ij γ_ij c_ij,   ∂/∂b = Σ_ij γ_ij

(a, p the L2-normalised rows). The forward pass walks column blocks and keeps only ``ℓ [B]``; the backward pass
recomputes each block's logits from the saved rows and accumulates these sums (the recompute-in-backward scheme
of open_clip's chunked SigLIP, PR #1145/#1214, written from the derivative above). Peak memory
``O(B · chunk + B · d)`` instead of ``O(B²)``.

**Across processes** (:func:`siglip_distributed`). Each rank holds ``b`` anchors and their ``b`` positives. It
computes its own ``b × b`` block, then passes candidate blocks around a ring ``world − 1`` times (send to rank + 1,
receive from rank − 1, ``isend``/``irecv``), adding the block received at each step as negatives (or as positives
where labels match): one foreign block at a time, never the gathered ``world · b`` candidates. The exchange is an
autograd function whose backward sends the gradient of a received block back the way it came, so it reaches the
rank that owns the rows (the "shift" exchange of open_clip's ``SigLipLoss``; the bidirectional variant halves the
number of steps, not the traffic).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from negkit._validation import (
    check_finite_scalar,
    check_int,
    check_labels,
    check_pair,
    check_positive_scalar,
    check_reduction,
    normalize_rows,
)
from negkit.losses.functional.core import compute_dtype, reduce_loss, skip_anchors

__all__ = ["siglip", "siglip_distributed"]


# ------------------------------------------------------------------------------------------------ one block


def _positives(
    rows: int,
    start: int,
    stop: int,
    own_column: Tensor | None,
    row_labels: Tensor | None,
    col_labels: Tensor | None,
    device: torch.device,
) -> Tensor:
    """bool ``[rows, stop − start]``: which pairs of the columns ``start:stop`` of a block are positive (z = +1)."""
    positive = torch.zeros(rows, stop - start, dtype=torch.bool, device=device)
    if own_column is not None:
        columns = torch.arange(start, stop, device=device)
        positive |= own_column.unsqueeze(1) == columns.unsqueeze(0)
    if row_labels is not None and col_labels is not None:
        positive |= row_labels.unsqueeze(1) == col_labels[start:stop].unsqueeze(0)
    return positive


def _plain_rows(
    a: Tensor,
    p: Tensor,
    scale: Tensor,
    bias: Tensor,
    own_column: Tensor | None,
    row_labels: Tensor | None,
    col_labels: Tensor | None,
) -> Tensor:
    """``[b]`` ``Σ_j −log σ(z_ij (t a_i·p_j + b))`` over the whole block, by autograd."""
    logits = scale * (a @ p.T) + bias
    positive = _positives(a.shape[0], 0, p.shape[0], own_column, row_labels, col_labels, a.device)
    return -F.logsigmoid(torch.where(positive, logits, -logits)).sum(dim=1)  # z·x without a [b, b] float z


class _TiledSigmoidRows(Function):
    """:func:`_plain_rows` in column tiles, recomputed in backward (derivation in the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,  # noqa: ANN001
        a: Tensor,
        p: Tensor,
        scale: Tensor,
        bias: Tensor,
        own_column: Tensor | None,
        row_labels: Tensor | None,
        col_labels: Tensor | None,
        chunk_size: int,
    ) -> Tensor:
        rows = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for start in range(0, p.shape[0], chunk_size):
            stop = min(start + chunk_size, p.shape[0])
            logits = scale * (a @ p[start:stop].T) + bias
            positive = _positives(a.shape[0], start, stop, own_column, row_labels, col_labels, a.device)
            rows -= F.logsigmoid(torch.where(positive, logits, -logits)).sum(dim=1)
        ctx.save_for_backward(a, p, scale, bias, own_column, row_labels, col_labels)
        ctx.chunk_size = chunk_size
        return rows

    @staticmethod
    def backward(ctx, grad_rows: Tensor):  # type: ignore[override]  # noqa: ANN001
        a, p, scale, bias, own_column, row_labels, col_labels = ctx.saved_tensors
        need_a, need_p, need_scale, need_bias = ctx.needs_input_grad[:4]
        grad_a = torch.zeros_like(a) if need_a else None
        grad_p = torch.zeros_like(p) if need_p else None
        grad_scale = torch.zeros_like(scale)
        grad_bias = torch.zeros_like(bias)
        for start in range(0, p.shape[0], ctx.chunk_size):
            stop = min(start + ctx.chunk_size, p.shape[0])
            cosines = a @ p[start:stop].T
            positive = _positives(a.shape[0], start, stop, own_column, row_labels, col_labels, a.device)
            logits = scale * cosines + bias
            # γ_ij = ∂L/∂x_ij for the logit x_ij = t c_ij + b: −g_i z_ij σ(−z_ij x_ij)
            weight = torch.where(positive, -torch.sigmoid(-logits), torch.sigmoid(logits))
            gamma = grad_rows.unsqueeze(1) * weight
            if grad_a is not None:
                grad_a += scale * (gamma @ p[start:stop])
            if grad_p is not None:
                grad_p[start:stop] = scale * (gamma.T @ a)
            if need_scale:
                grad_scale += (gamma * cosines).sum()
            if need_bias:
                grad_bias += gamma.sum()
        return (
            grad_a,
            grad_p,
            grad_scale if need_scale else None,
            grad_bias if need_bias else None,
            None,
            None,
            None,
            None,
        )


def _block_rows(
    a: Tensor,
    p: Tensor,
    scale: Tensor,
    bias: Tensor,
    own_column: Tensor | None,
    row_labels: Tensor | None,
    col_labels: Tensor | None,
    chunk_size: int | None,
) -> Tensor:
    """``[b]`` per-anchor sigmoid loss of the rows ``a`` against the candidate block ``p`` (tiled or not)."""
    if chunk_size is None or p.shape[0] == 0:
        return _plain_rows(a, p, scale, bias, own_column, row_labels, col_labels)
    return _TiledSigmoidRows.apply(a, p, scale, bias, own_column, row_labels, col_labels, chunk_size)


# ------------------------------------------------------------------------------------------------ checks


def _scalar(value: float | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-d tensor of ``dtype`` on ``device``: a learnable tensor keeps its graph (the cast is differentiable)."""
    if isinstance(value, Tensor):
        return value.reshape(()).to(device=device, dtype=dtype)
    return torch.tensor(float(value), dtype=dtype, device=device)


def _prepare(
    anchor: Tensor,
    positive: Tensor,
    logit_scale: float | Tensor,
    logit_bias: float | Tensor,
    labels: Tensor | None,
    chunk_size: int | None,
    reduction: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, int | None]:
    """Check every argument; the normalised rows (compute dtype), the scale and bias tensors, labels, chunk."""
    check_reduction(reduction)
    scale_value = check_positive_scalar("logit_scale", logit_scale)
    bias_value = check_finite_scalar("logit_bias", logit_bias)
    check_pair(anchor, positive)
    if labels is not None:
        labels = check_labels("labels", labels, anchor.shape[0], anchor.device)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, low=1)
    dtype = compute_dtype(anchor.dtype)
    # |t·c + b| ≤ t + |b|: refuse a scale or bias whose logits would overflow the compute dtype
    if scale_value + abs(bias_value) > torch.finfo(dtype).max / 4:
        raise ValueError(
            f"logit_scale ({scale_value:g}) and logit_bias ({bias_value:g}) give logits that overflow {dtype}"
        )
    a = normalize_rows(anchor.to(dtype))
    p = normalize_rows(positive.to(dtype))
    return a, p, _scalar(logit_scale, dtype, a.device), _scalar(logit_bias, dtype, a.device), labels, chunk_size


# ------------------------------------------------------------------------------------------------ public


def siglip(
    anchor: Tensor,
    positive: Tensor,
    *,
    logit_scale: float | Tensor,
    logit_bias: float | Tensor,
    labels: Tensor | None = None,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """The SigLIP pairwise sigmoid loss of ``anchor [B,d]`` against ``positive [B,d]`` (module docstring).

    Which negatives each anchor sees: every one of the ``B`` positives ``p_j`` is a logistic term for anchor ``i``,
    a positive for ``j = i`` (and for ``labels_j = labels_i`` with ``labels``), a negative otherwise. The loss is
    not symmetrised: SigLIP's sum over all ``(i, j)`` already covers both directions.

    Args:
        anchor: ``[B,d]`` (images, say); L2-normalised inside (cosine similarity).
        positive: ``[B,d]`` (their texts), row ``i`` the positive of anchor ``i``; same dtype and device.
        logit_scale: ``t > 0``, the multiplier of the cosine, already exponentiated (as open_clip's
            ``SigLipLoss.forward`` takes it): a float, or a one-element tensor (learnable: its gradient flows).
        logit_bias: ``b``, a float or a one-element tensor (learnable likewise).
        labels: optional ``[B]`` integer ids; ``(i, j)`` with equal labels is a positive pair (duplicates).
        chunk_size: candidate columns per tile; ``None`` builds the ``[B,B]`` logits at once. The value and every
            gradient (inputs, ``logit_scale``, ``logit_bias``) are those of the untiled loss.
        reduction: ``"mean"`` — ``(1/B) Σ_i ℓ_i``, open_clip's value ``−Σ_ij log σ(z_ij (t c_ij + b)) / B``;
            ``"sum"`` — ``Σ_i ℓ_i``; ``"none"`` — the ``[B]`` per-anchor ``ℓ_i``.

    Returns:
        A scalar, or ``[B]`` with ``reduction="none"``; float32 for half-precision inputs. An empty batch gives
        0 with a zero gradient connected to the inputs (:class:`negkit.losses.DegenerateBatchError` in strict
        mode). A single pair is not degenerate: it is one positive logistic term.

    Raises:
        ValueError: ``logit_scale`` not finite and > 0, ``logit_bias`` not finite, either not a scalar; inputs not
            ``[B,d]`` floating tensors of one shape, dtype and device, non-finite values; bad ``labels``,
            ``chunk_size`` or ``reduction``.
    """
    a, p, scale, bias, labels, chunk_size = _prepare(
        anchor, positive, logit_scale, logit_bias, labels, chunk_size, reduction
    )
    rows = a.shape[0]
    skip_anchors(rows, empty="anchor")
    own = torch.arange(rows, device=a.device)
    losses = _block_rows(a, p, scale, bias, own, labels, labels, chunk_size)
    return reduce_loss(losses, reduction)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _shift(x: Tensor, send_to: int, receive_from: int) -> Tensor:
    """Send ``x`` to rank ``send_to`` and return the tensor of the same shape received from ``receive_from``."""
    x = x.contiguous()
    out = torch.empty_like(x)
    sent = dist.isend(x, send_to)
    received = dist.irecv(out, receive_from)
    sent.wait()
    received.wait()
    return out


class _RingShift(Function):
    """Forward: my block goes to rank + 1, rank − 1's block comes in. Backward: the gradient of the block I received
    goes back to rank − 1, and the gradient of the block I sent comes back from rank + 1."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]  # noqa: ANN001
        rank, size = _world()
        ctx.right, ctx.left = (rank + 1) % size, (rank - 1) % size
        return _shift(x, ctx.right, ctx.left)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]  # noqa: ANN001
        return _shift(grad, ctx.left, ctx.right)


def siglip_distributed(
    anchor: Tensor,
    positive: Tensor,
    *,
    logit_scale: float | Tensor,
    logit_bias: float | Tensor,
    labels: Tensor | None = None,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """SigLIP of this rank's ``b`` anchors against the positives of *every* rank, exchanged block by block.

    Call it on every rank of an initialised ``torch.distributed`` group with equal local batch sizes ``b``. Anchor
    ``i`` sees its own positive (and, with ``labels [b]``, every row of any rank with its label) as positives and
    the other ``world · b − 1`` positives as negatives; the ``world − 1`` foreign blocks arrive one at a time
    around a ring (module docstring), each differentiable back to its owner. ``"mean"`` divides by the local
    ``b``, so with gradients averaged over ranks (DDP's default) training equals one process on the combined
    batch, :func:`siglip` of ``world · b`` pairs (tested with two gloo processes). ``chunk_size`` tiles every block.
    Without an initialised group (or with one process) it is :func:`siglip`. Arguments and errors as
    :func:`siglip`; unequal batch sizes across ranks are a ``ValueError`` on every rank.

    Memory per rank: the ``b × b`` logits of one block at a time (``b × chunk`` tiled), plus the received
    ``b × d`` blocks that autograd keeps for backward.
    """
    rank, size = _world()
    if size == 1:
        return siglip(
            anchor,
            positive,
            logit_scale=logit_scale,
            logit_bias=logit_bias,
            labels=labels,
            chunk_size=chunk_size,
            reduction=reduction,
        )
    a, p, scale, bias, labels, chunk_size = _prepare(
        anchor, positive, logit_scale, logit_bias, labels, chunk_size, reduction
    )
    rows = a.shape[0]
    sizes = [torch.zeros(1, dtype=torch.long, device=a.device) for _ in range(size)]
    dist.all_gather(sizes, torch.tensor([rows], dtype=torch.long, device=a.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"anchor must have the same number of rows on every rank, got {[int(s) for s in sizes]} (rank order)"
        )
    skip_anchors(rows, empty="anchor")
    if rows == 0:  # every rank is empty: nothing to exchange
        return reduce_loss(_plain_rows(a, p, scale, bias, None, None, None), reduction)
    own = torch.arange(rows, device=a.device)
    losses = _block_rows(a, p, scale, bias, own, labels, labels, chunk_size)
    block, block_labels = p, labels
    for _ in range(size - 1):
        block = _RingShift.apply(block)
        if labels is not None:
            block_labels = _shift(block_labels, (rank + 1) % size, (rank - 1) % size)
        losses = losses + _block_rows(a, block, scale, bias, None, labels, block_labels, chunk_size)
    return reduce_loss(losses, reduction)
