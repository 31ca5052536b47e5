"""Cached encoder steps (the GradCache idea; Gao, Zhang, Han & Callan, RepL4NLP 2021): a contrastive loss over a
batch far larger than fits through the encoder at once, with the same gradients as one full-batch backward.

1. Embed every input in chunks without a graph, recording the random state before each chunk.
2. Compute the loss on the (detached, grad-requiring) embeddings and backpropagate it to them only.
3. Re-embed each chunk with a graph, with the random state restored (so dropout masks match), and
   backpropagate the cached embedding gradient through the encoder.

Activation memory is that of one chunk; the loss sees every negative of the full batch. BatchNorm running
statistics are updated twice per step (steps 1 and 3); use encoders without BatchNorm, or put it in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def cached_step(
    encoders: nn.Module | Sequence[nn.Module],
    inputs: Tensor | Sequence[Tensor],
    loss_fn: Callable[..., Tensor],
    *,
    chunk_size: int,
) -> Tensor:
    """Accumulate into the encoders' ``.grad`` the gradient of ``loss_fn(*embeddings)``; return the loss (detached).

    Args:
        encoders: one encoder per input (a single module is used for every input).
        inputs: one batch ``[N, ...]`` per tower (e.g. queries and documents, or two views).
        loss_fn: maps the full-batch embeddings (one ``[N, d]`` tensor per input) to a scalar loss.
        chunk_size: rows encoded at once.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    encoders = [encoders] * len(inputs) if isinstance(encoders, nn.Module) else list(encoders)
    if len(encoders) != len(inputs):
        raise ValueError(f"got {len(encoders)} encoders for {len(inputs)} inputs")

    cached: list[Tensor] = []
    states: list[list[Tensor]] = []
    with torch.no_grad():
        for encoder, batch in zip(encoders, inputs, strict=True):
            chunk_states, pieces = [], []
            for piece in batch.split(chunk_size):
                chunk_states.append(torch.get_rng_state())
                pieces.append(encoder(piece))
            cached.append(torch.cat(pieces).requires_grad_(True))
            states.append(chunk_states)
    after = torch.get_rng_state()

    loss = loss_fn(*cached)
    loss.backward()

    for encoder, batch, embeddings, chunk_states in zip(encoders, inputs, cached, states, strict=True):
        for piece, grad, state in zip(
            batch.split(chunk_size), embeddings.grad.split(chunk_size), chunk_states, strict=True
        ):
            torch.set_rng_state(state)
            encoder(piece).backward(grad)
    torch.set_rng_state(after)
    return loss.detach()
