"""The core's masked, weighted log-sum-exp over a large candidate set, in column tiles.

``tiled_logsumexp(a, c, scale, ...)`` returns, for every row i of ``a [B, d]``,

    lse_i = log Σ_j keep_ij · exp(scale · a_i·c_j + w_j)          over the N rows of ``c [N, d]``

without ever holding the ``[B, N]`` logits: the forward pass walks column tiles of ``chunk_size`` keeping a
running (max-shifted) sum, and saves only ``lse [B]``; the backward pass recomputes each tile's probabilities
``p_ij = keep_ij · exp(scale · a_i·c_j + w_j − lse_i)`` and accumulates

    ∂lse_i/∂a_i = scale · Σ_j p_ij c_j,   ∂lse_i/∂c_j = scale · p_ij a_i,   ∂lse_i/∂w_j = p_ij.

Memory is O(B · chunk + (B + N) · d) instead of O(B · N) (the derivation of Inf-CL, Cheng et al. 2024, and of
open_clip's chunked SigLIP loss, applied to negkit's core). The mask is given by labels so that it, too, is
built tile by tile: ``keep_ij = row_labels_i != col_labels_j`` or ``j`` is the row's own column
``own_column_i`` (the positive, kept in the denominator).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function


def _tile_logits(
    a: Tensor,
    c: Tensor,
    start: int,
    stop: int,
    scale: float,
    log_weights: Tensor | None,
    row_labels: Tensor | None,
    col_labels: Tensor | None,
    own_column: Tensor | None,
) -> Tensor:
    logits = scale * (a @ c[start:stop].T)
    if log_weights is not None:
        logits = logits + log_weights[start:stop]
    if row_labels is not None and col_labels is not None:
        drop = row_labels.unsqueeze(1) == col_labels[start:stop].unsqueeze(0)
        if own_column is not None:
            columns = torch.arange(start, stop, device=a.device)
            drop &= own_column.unsqueeze(1) != columns.unsqueeze(0)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class _TiledLogSumExp(Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,  # noqa: ANN001
        a: Tensor,
        c: Tensor,
        log_weights: Tensor | None,
        scale: float,
        row_labels: Tensor | None,
        col_labels: Tensor | None,
        own_column: Tensor | None,
        chunk_size: int,
    ) -> Tensor:
        running_max = torch.full((a.shape[0],), float("-inf"), dtype=a.dtype, device=a.device)
        running_sum = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for start in range(0, c.shape[0], chunk_size):
            stop = min(start + chunk_size, c.shape[0])
            logits = _tile_logits(a, c, start, stop, scale, log_weights, row_labels, col_labels, own_column)
            tile_max = logits.max(dim=1).values
            new_max = torch.maximum(running_max, tile_max)
            safe = torch.where(torch.isneginf(new_max), torch.zeros_like(new_max), new_max)
            running_sum = running_sum * torch.exp(running_max - safe) + torch.exp(logits - safe.unsqueeze(1)).sum(1)
            running_max = new_max
        lse = torch.log(running_sum) + torch.where(torch.isneginf(running_max), 0.0, running_max)
        ctx.save_for_backward(a, c, log_weights, row_labels, col_labels, own_column, lse)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return lse

    @staticmethod
    def backward(ctx, grad_lse: Tensor):  # type: ignore[override]  # noqa: ANN001
        a, c, log_weights, row_labels, col_labels, own_column, lse = ctx.saved_tensors
        scale, chunk_size = ctx.scale, ctx.chunk_size
        grad_a = torch.zeros_like(a)
        grad_c = torch.zeros_like(c) if ctx.needs_input_grad[1] else None
        grad_w = torch.zeros_like(log_weights) if log_weights is not None and ctx.needs_input_grad[2] else None
        lse = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)  # rows with no candidate: p = 0
        for start in range(0, c.shape[0], chunk_size):
            stop = min(start + chunk_size, c.shape[0])
            logits = _tile_logits(a, c, start, stop, scale, log_weights, row_labels, col_labels, own_column)
            weighted = torch.exp(logits - lse.unsqueeze(1)) * grad_lse.unsqueeze(1)  # g_i · p_ij
            grad_a += scale * (weighted @ c[start:stop])
            if grad_c is not None:
                grad_c[start:stop] = scale * (weighted.T @ a)
            if grad_w is not None:
                grad_w[start:stop] = weighted.sum(dim=0)
        return grad_a, grad_c, grad_w, None, None, None, None, None


def tiled_logsumexp(
    a: Tensor,
    c: Tensor,
    scale: float,
    *,
    log_weights: Tensor | None = None,
    row_labels: Tensor | None = None,
    col_labels: Tensor | None = None,
    own_column: Tensor | None = None,
    chunk_size: int = 4096,
) -> Tensor:
    """``[B]`` ``log Σ_j keep_ij exp(scale · a_i·c_j + w_j)`` in column tiles; see the module docstring.

    Args:
        a: ``[B, d]`` rows (already normalised for cosine).
        c: ``[N, d]`` candidates.
        scale: ``1 / temperature``.
        log_weights: optional ``[N]`` per-candidate log-weights.
        row_labels, col_labels: optional ``[B]`` and ``[N]`` labels: a candidate with the row's label is dropped,
            unless it is the row's ``own_column`` (``[B]``, e.g. ``arange(B)`` for in-batch positives).
        chunk_size: columns per tile.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _TiledLogSumExp.apply(a, c, log_weights, float(scale), row_labels, col_labels, own_column, chunk_size)
