"""The core's masked, weighted log-sum-exp over a large candidate set, in column tiles.

``tiled_logsumexp(a, c, scale, ...)`` returns, for every row i of ``a [B, d]``,

    lse_i = log Σ_j keep_ij · exp(scale · a_i·c_j + w_j)          over the N rows of ``c [N, d]``

without ever holding the ``[B, N]`` logits: the forward pass walks column tiles of ``chunk_size``, adding each
tile's log-sum-exp into a running one (``logaddexp``), and saves only ``lse [B]``; the backward pass recomputes
each tile's probabilities ``p_ij = keep_ij · exp(scale · a_i·c_j + w_j − lse_i)`` and accumulates

    ∂lse_i/∂a_i = scale · Σ_j p_ij c_j,   ∂lse_i/∂c_j = scale · p_ij a_i,   ∂lse_i/∂w_j = p_ij,
    ∂lse_i/∂scale = Σ_j p_ij a_i·c_j = a_i · Σ_j p_ij c_j

(the last from the ``[B, d]`` accumulator of the first, so a learnable scale costs no extra pass over a tile).
Memory is O(B · chunk + (B + N) · d) instead of O(B · N) (the derivation of Inf-CL, Cheng et al. 2024, and of
open_clip's chunked SigLIP loss, applied to negkit's core). The mask is given by labels so that it, too, is
built tile by tile: ``keep_ij = row_labels_i != col_labels_j`` or ``j`` is the row's own column
``own_column_i`` (the positive, kept in the denominator).

``tiled_symmetric_logsumexp(a, p, scale, labels)`` is the square case of symmetric (CLIP-style) InfoNCE: one pass
over column tiles of the ``[B, B]`` logits ``scale · a_i·p_j`` gives both the row log-sum-exps (anchor → positives,
accumulated across tiles) and the column log-sum-exps (positive → anchors; each column tile holds every row, so a
column's is complete in its tile). Backward recomputes each tile once and uses both softmaxes,
``W = g^row_i · p^row_ij + g^col_j · p^col_ij``, in the same three products as one direction.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function


def _as_scale(scale: float | Tensor, like: Tensor) -> Tensor:
    """The scale as a 0-dim tensor of ``like``'s dtype and device (a tensor keeps its autograd graph)."""
    if isinstance(scale, Tensor):
        return scale.reshape(()).to(dtype=like.dtype, device=like.device)
    return torch.tensor(float(scale), dtype=like.dtype, device=like.device)


def _drop_mask(
    start: int,
    stop: int,
    row_labels: Tensor | None,
    col_labels: Tensor | None,
    own_column: Tensor | None,
    device: torch.device,
) -> Tensor | None:
    """bool ``[B, stop − start]``: the candidates of this tile removed from each row's sum (or ``None``)."""
    if row_labels is None or col_labels is None:
        return None
    drop = row_labels.unsqueeze(1) == col_labels[start:stop].unsqueeze(0)
    if own_column is not None:
        columns = torch.arange(start, stop, device=device)
        drop &= own_column.unsqueeze(1) != columns.unsqueeze(0)
    return drop


def _tile_logits(
    scaled_a: Tensor,
    c: Tensor,
    start: int,
    stop: int,
    log_weights: Tensor | None,
    drop: Tensor | None,
) -> Tensor:
    """``[B, stop − start]`` logits ``scale · a_i·c_j + w_j``, ``-inf`` where dropped (``scaled_a = scale · a``)."""
    logits = scaled_a @ c[start:stop].T
    if log_weights is not None:
        logits += log_weights[start:stop]
    if drop is not None:
        logits.masked_fill_(drop, float("-inf"))
    return logits


def _finite_lse(lse: Tensor) -> Tensor:
    """``lse`` with ``-inf`` (rows with no candidate) replaced by 0: their probabilities ``exp(-inf − 0)`` are 0."""
    return torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)


class _TiledLogSumExp(Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,  # noqa: ANN001
        a: Tensor,
        c: Tensor,
        log_weights: Tensor | None,
        scale: Tensor,
        row_labels: Tensor | None,
        col_labels: Tensor | None,
        own_column: Tensor | None,
        chunk_size: int,
    ) -> Tensor:
        scaled_a = a * scale
        lse = torch.full((a.shape[0],), float("-inf"), dtype=a.dtype, device=a.device)
        for start in range(0, c.shape[0], chunk_size):
            stop = min(start + chunk_size, c.shape[0])
            drop = _drop_mask(start, stop, row_labels, col_labels, own_column, a.device)
            logits = _tile_logits(scaled_a, c, start, stop, log_weights, drop)
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
        ctx.save_for_backward(a, c, log_weights, scale, row_labels, col_labels, own_column, lse)
        ctx.chunk_size = chunk_size
        return lse

    @staticmethod
    def backward(ctx, grad_lse: Tensor):  # type: ignore[override]  # noqa: ANN001
        a, c, log_weights, scale, row_labels, col_labels, own_column, lse = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        scaled_a = a * scale
        need_c, need_w, need_scale = ctx.needs_input_grad[1], ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        weighted_c = torch.zeros_like(a)  # Σ_j g_i p_ij c_j
        grad_c = torch.zeros_like(c) if need_c else None
        grad_w = torch.zeros_like(log_weights) if log_weights is not None and need_w else None
        shift = _finite_lse(lse).unsqueeze(1)
        g = grad_lse.unsqueeze(1)
        for start in range(0, c.shape[0], chunk_size):
            stop = min(start + chunk_size, c.shape[0])
            drop = _drop_mask(start, stop, row_labels, col_labels, own_column, a.device)
            weighted = _tile_logits(scaled_a, c, start, stop, log_weights, drop).sub_(shift).exp_().mul_(g)
            weighted_c += weighted @ c[start:stop]
            if grad_c is not None:
                grad_c[start:stop] = weighted.T @ scaled_a
            if grad_w is not None:
                grad_w[start:stop] = weighted.sum(dim=0)
        grad_a = weighted_c * scale
        grad_scale = (a * weighted_c).sum().reshape(scale.shape) if need_scale else None
        return grad_a, grad_c, grad_w, grad_scale, None, None, None, None


def tiled_logsumexp(
    a: Tensor,
    c: Tensor,
    scale: float | Tensor,
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
        scale: ``1 / temperature``: a float, or a 0-dim tensor that receives its gradient (a learnable scale).
        log_weights: optional ``[N]`` per-candidate log-weights.
        row_labels, col_labels: optional ``[B]`` and ``[N]`` labels: a candidate with the row's label is dropped,
            unless it is the row's ``own_column`` (``[B]``, e.g. ``arange(B)`` for in-batch positives).
        chunk_size: columns per tile.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _TiledLogSumExp.apply(
        a, c, log_weights, _as_scale(scale, a), row_labels, col_labels, own_column, int(chunk_size)
    )


class _TiledSymmetricLogSumExp(Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,  # noqa: ANN001
        a: Tensor,
        p: Tensor,
        scale: Tensor,
        labels: Tensor | None,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor]:
        batch = a.shape[0]
        own = torch.arange(batch, device=a.device) if labels is not None else None
        scaled_a = a * scale
        row_lse = torch.full((batch,), float("-inf"), dtype=a.dtype, device=a.device)
        col_lse = torch.empty(batch, dtype=a.dtype, device=a.device)
        for start in range(0, batch, chunk_size):
            stop = min(start + chunk_size, batch)
            logits = _tile_logits(
                scaled_a, p, start, stop, None, _drop_mask(start, stop, labels, labels, own, a.device)
            )
            row_lse = torch.logaddexp(row_lse, torch.logsumexp(logits, dim=1))
            col_lse[start:stop] = torch.logsumexp(logits, dim=0)
        ctx.save_for_backward(a, p, scale, labels, row_lse, col_lse)
        ctx.chunk_size = chunk_size
        return row_lse, col_lse

    @staticmethod
    def backward(ctx, grad_row: Tensor, grad_col: Tensor):  # type: ignore[override]  # noqa: ANN001
        a, p, scale, labels, row_lse, col_lse = ctx.saved_tensors
        chunk_size, batch = ctx.chunk_size, a.shape[0]
        own = torch.arange(batch, device=a.device) if labels is not None else None
        scaled_a = a * scale
        row_shift, col_shift = _finite_lse(row_lse).unsqueeze(1), _finite_lse(col_lse)
        g_row = grad_row.unsqueeze(1)
        weighted_p = torch.zeros_like(a)  # Σ_j W_ij p_j
        grad_p = torch.zeros_like(p) if ctx.needs_input_grad[1] else None
        for start in range(0, batch, chunk_size):
            stop = min(start + chunk_size, batch)
            logits = _tile_logits(
                scaled_a, p, start, stop, None, _drop_mask(start, stop, labels, labels, own, a.device)
            )
            by_column = (logits - col_shift[start:stop]).exp_().mul_(grad_col[start:stop])
            weighted = logits.sub_(row_shift).exp_().mul_(g_row).add_(by_column)  # W = g_row p_row + g_col p_col
            weighted_p += weighted @ p[start:stop]
            if grad_p is not None:
                grad_p[start:stop] = weighted.T @ scaled_a
        grad_a = weighted_p * scale
        grad_scale = (a * weighted_p).sum().reshape(scale.shape) if ctx.needs_input_grad[2] else None
        return grad_a, grad_p, grad_scale, None, None


def tiled_symmetric_logsumexp(
    a: Tensor, p: Tensor, scale: float | Tensor, *, labels: Tensor | None = None, chunk_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Row and column log-sum-exps of the square logits ``scale · a_i·p_j`` in one pass over column tiles.

    Returns ``(row [B], column [B])``: ``row_i = log Σ_j keep_ij exp(scale · a_i·p_j)`` (anchor i against every
    positive) and ``column_j = log Σ_i keep_ij exp(scale · a_i·p_j)`` (positive j against every anchor), where
    ``keep_ij`` is ``labels_i != labels_j or i == j`` (all pairs without ``labels``); the mask is symmetric, so the
    column direction drops the same pairs. Memory O(B · chunk + B · d); see the module docstring.

    Args:
        a, p: ``[B, d]`` (already normalised for cosine).
        scale: ``1 / temperature``, a float or a 0-dim tensor (receives its gradient).
        labels: optional ``[B]`` class ids.
        chunk_size: columns per tile.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _TiledSymmetricLogSumExp.apply(a, p, _as_scale(scale, a), labels, int(chunk_size))
