"""Geometry of an embedding on the unit hypersphere: alignment, uniformity and tolerance.

* Alignment and uniformity: Wang & Isola, "Understanding Contrastive Representation Learning through Alignment
  and Uniformity on the Hypersphere" (ICML 2020, Sec. 4.1, Eqs. 4 and 5).
* Tolerance: Wang & Liu, "Understanding the Behaviour of Contrastive Loss" (CVPR 2021, Sec. 5), the mean
  cosine similarity of samples that share a class.

All three L2-normalise the rows first. Lower is better for alignment and uniformity; tolerance is a diagnostic
(higher = same-class samples closer together).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from negkit._validation import check_positive_scalar
from negkit.metrics._common import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_class_ids,
    check_embeddings,
    chunks,
    compute_dtype,
    normalise,
)


def alignment(z1: Tensor, z2: Tensor, *, alpha: float = 2.0) -> float:
    """Alignment loss ``L_align = E_{(x,y)~p_pos} ‖f(x) − f(y)‖₂^α`` (Wang & Isola, ICML 2020, Eq. 4).

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` form a positive pair (e.g. two augmented views); the expectation
    is the mean over the ``N`` pairs, ``f`` the L2-normalised rows. The value lies in ``[0, 2^α]``.

    Args:
        z1: ``[N, d]`` floating, finite, no all-zero row.
        z2: ``[N, d]``, the positives of ``z1`` row by row.
        alpha: exponent ``α > 0`` (the paper's default 2).

    Raises:
        ValueError: bad shapes or values, or ``z1`` and ``z2`` of different shapes.
    """
    z1 = check_embeddings("z1", z1)
    z2 = check_embeddings("z2", z2)
    if z2.shape != z1.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got {tuple(z2.shape)}")
    if z2.device != z1.device:
        raise ValueError(f"z2 is on {z2.device} but z1 is on {z1.device}")
    alpha = check_positive_scalar("alpha", alpha)
    dtype = compute_dtype(z1, z2)
    distances = (normalise(z1, dtype) - normalise(z2, dtype)).norm(p=2, dim=1)
    return float(distances.to(torch.float64).pow(alpha).mean())


def uniformity(z: Tensor, *, t: float = 2.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Uniformity loss ``L_uniform = log E_{x,y~p_data} exp(−t ‖f(x) − f(y)‖₂²)`` (Wang & Isola, ICML 2020, Eq. 5).

    The expectation is the mean over the ``N(N−1)/2`` unordered pairs ``i < j`` of rows of ``z`` (as in the
    paper's reference code, which uses ``torch.pdist``); ``f`` the L2-normalised rows. On the unit sphere
    ``‖f_i − f_j‖² = 2 − 2 cos(z_i, z_j)``, so the value lies in ``[−4t, 0]``: ``0`` when all rows coincide,
    ``−4t`` for a single antipodal pair.

    Computed as ``logsumexp_{i<j}(−t ‖f_i − f_j‖²) − log(N(N−1)/2)``: the log-sum-exp is accumulated over row
    chunks with ``logaddexp``, holding one ``[chunk_size, N]`` block at a time, so no ``exp`` underflows to a
    ``log 0`` even for large ``t``.

    Args:
        z: ``[N, d]`` floating, finite, no all-zero row, ``N >= 2``.
        t: ``t > 0`` (the paper's default 2).
        chunk_size: rows per similarity block, ``>= 1``.

    Raises:
        ValueError: bad shapes or values.
    """
    z = check_embeddings("z", z, min_rows=2)
    t = check_positive_scalar("t", t)
    chunk_size = check_chunk_size(chunk_size)
    n = z.shape[0]
    z_n = normalise(z, compute_dtype(z))
    log_total = torch.tensor(float("-inf"), dtype=torch.float64, device=z.device)
    # Row i pairs with columns j > i; the last row has none.
    for start, stop in chunks(n - 1, chunk_size):
        block = z_n[start:stop] @ z_n[start + 1 :].T  # [c, n − start − 1]; column m is row j = start + 1 + m
        squared = (2.0 - 2.0 * block.to(torch.float64)).clamp_(min=0.0)  # ‖f_i − f_j‖²
        upper = torch.ones_like(block, dtype=torch.bool).triu_()  # j > i  ⇔  m >= i − start
        log_block = torch.logsumexp((-t * squared)[upper], dim=0)
        log_total = torch.logaddexp(log_total, log_block)
    return float(log_total) - math.log(n * (n - 1) / 2)


def tolerance(z: Tensor, labels: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Tolerance: the mean cosine similarity of pairs of distinct rows that share a label (Wang & Liu, CVPR 2021).

    Wang & Liu measure how tolerant an embedding is to semantically similar samples by the similarity of samples
    of the same class. negkit's normalisation is the mean over all *ordered* same-label pairs, self-pairs
    excluded::

        T = Σ_c Σ_{i≠j, y_i=y_j=c} cos(z_i, z_j)  /  Σ_c n_c (n_c − 1)

    so every same-label pair counts equally (larger classes weigh more) and ``T`` lies in ``[−1, 1]``. It is
    computed without any similarity matrix: with ``S_c = Σ_{y_i=c} f_i`` (``f`` the unit rows),
    ``Σ_{i≠j} f_i·f_j = ‖S_c‖² − Σ_{y_i=c} ‖f_i‖²``. ``S_c`` is accumulated in float64 over ``chunk_size`` rows at a
    time.

    Args:
        z: ``[N, d]`` floating, finite, no all-zero row.
        labels: ``[N]`` non-negative integer class ids; at least one id must occur twice.
        chunk_size: rows per accumulation step, ``>= 1``.

    Raises:
        ValueError: bad shapes or values, or no label occurs twice.
    """
    z = check_embeddings("z", z)
    labels = check_class_ids("labels", labels, z.shape[0], z.device)
    chunk_size = check_chunk_size(chunk_size)
    classes, class_index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    num_pairs = int((counts * (counts - 1)).sum())
    if num_pairs == 0:
        raise ValueError("labels must contain at least one label twice; no same-label pair exists")
    class_sums = torch.zeros(classes.numel(), z.shape[1], dtype=torch.float64, device=z.device)
    self_terms = torch.zeros(classes.numel(), dtype=torch.float64, device=z.device)
    for start, stop in chunks(z.shape[0], chunk_size):
        f = normalise(z[start:stop], torch.float64)
        class_sums.index_add_(0, class_index[start:stop], f)
        self_terms.index_add_(0, class_index[start:stop], (f * f).sum(dim=1))
    pair_sum = (class_sums * class_sums).sum() - self_terms.sum()
    return float(pair_sum) / num_pairs
