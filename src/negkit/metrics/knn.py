"""Cosine k-nearest-neighbour classification of frozen embeddings.

The weighted vote is the one of Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR 2018, Sec. 3.4), used as the kNN monitor of most self-supervised methods since
(e.g. Caron et al., DINO, ICCV 2021): the ``k`` training rows most cosine-similar to a test row vote for their
class with weight ``exp(s_i / T)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from negkit._validation import check_positive_scalar
from negkit.metrics._common import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_class_ids,
    check_embeddings,
    check_int,
    check_same_dim,
    chunks,
    compute_dtype,
    normalise,
)


def knn_predict(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    weighted: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Predict a class for every test row by a cosine kNN vote over the training rows.

    Let ``s_i = cos(x, t_i)`` for the test row ``x`` and training row ``t_i``, and ``N_k(x)`` the ``k`` training
    rows with the largest ``s_i``. The score of class ``c`` is

    * ``weighted=True``:  ``Σ_{i∈N_k(x), y_i=c} exp(s_i / T)`` (Wu et al., CVPR 2018, Sec. 3.4);
    * ``weighted=False``: ``|{i ∈ N_k(x) : y_i = c}|`` (majority vote),

    and the prediction is the class with the highest score. Ties between classes go to the smallest class id.
    (Weights are computed as ``exp((s_i − max_j s_j) / T)``, a common factor per test row, so the vote is the
    same and small temperatures cannot overflow.) Which of several equally similar training rows makes it into
    ``N_k(x)`` at the boundary is left to ``torch.topk``.

    Test rows are processed ``chunk_size`` at a time; at most a ``[chunk_size, N_train]`` similarity block is held.

    Args:
        train_emb: ``[N_train, d]`` floating, finite, no all-zero row (L2-normalised inside).
        train_labels: ``[N_train]`` non-negative integer class ids (need not be contiguous).
        test_emb: ``[N_test, d]`` floating, finite, no all-zero row.
        k: number of neighbours, ``1 <= k <= N_train``.
        temperature: ``T > 0`` of the weighted vote (unused when ``weighted=False``, but still checked).
        weighted: ``exp(s/T)``-weighted vote (``True``) or majority vote (``False``).
        chunk_size: test rows per similarity block, ``>= 1``.

    Returns:
        ``[N_test]`` int64 predicted class ids (values taken from ``train_labels``), on ``train_emb``'s device.

    Raises:
        ValueError: bad shapes, dtypes or values, mismatched lengths or feature dimensions, ``k`` out of range.
    """
    train_emb = check_embeddings("train_emb", train_emb)
    train_labels = check_class_ids("train_labels", train_labels, train_emb.shape[0], train_emb.device)
    test_emb = check_embeddings("test_emb", test_emb)
    check_same_dim("test_emb", test_emb, "train_emb", train_emb)
    k = check_int("k", k, low=1, high=train_emb.shape[0], high_note="the number of training rows")
    temperature = check_positive_scalar("temperature", temperature)
    chunk_size = check_chunk_size(chunk_size)

    dtype = compute_dtype(train_emb, test_emb)
    train_n = normalise(train_emb, dtype)
    # classes is sorted, so the first maximum that argmax returns is the smallest class id.
    classes, train_class_index = torch.unique(train_labels, sorted=True, return_inverse=True)
    num_classes = classes.numel()
    predictions = []
    for start, stop in chunks(test_emb.shape[0], chunk_size):
        sims = normalise(test_emb[start:stop], dtype) @ train_n.T  # [c, N_train]
        top_sims, top_idx = torch.topk(sims, k, dim=1)  # [c, k], sorted descending
        del sims
        if weighted:
            top_sims = top_sims.to(torch.float64)
            votes = torch.exp((top_sims - top_sims[:, :1]) / temperature)
        else:
            votes = torch.ones_like(top_sims, dtype=torch.float64)
        scores = torch.zeros(stop - start, num_classes, dtype=torch.float64, device=train_emb.device)
        scores.scatter_add_(1, train_class_index[top_idx], votes)
        predictions.append(classes[scores.argmax(dim=1)])
    return torch.cat(predictions)


def knn_accuracy(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    test_labels: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    weighted: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Top-1 accuracy of :func:`knn_predict` on ``test_emb``: the fraction of test rows whose prediction equals
    their label, in ``[0, 1]``.

    Args:
        train_emb: ``[N_train, d]``.
        train_labels: ``[N_train]`` non-negative integer class ids.
        test_emb: ``[N_test, d]``.
        test_labels: ``[N_test]`` non-negative integer class ids (a class absent from training is always wrong).
        k, temperature, weighted, chunk_size: as in :func:`knn_predict`.

    Raises:
        ValueError: as :func:`knn_predict`, or ``test_labels`` of the wrong shape or dtype.
    """
    test_emb = check_embeddings("test_emb", test_emb)
    test_labels = check_class_ids("test_labels", test_labels, test_emb.shape[0], test_emb.device)
    predictions = knn_predict(
        train_emb, train_labels, test_emb, k=k, temperature=temperature, weighted=weighted, chunk_size=chunk_size
    )
    correct = int((predictions == test_labels.to(predictions.device)).sum())
    return correct / test_labels.shape[0]
