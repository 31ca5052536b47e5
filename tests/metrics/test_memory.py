"""No function ever holds an N×N similarity matrix: every tensor it creates stays below N² elements.

A ``TorchFunctionMode`` sees every torch call made inside the metric (matmuls, masks, topk, ...) and records the
size of each tensor result. With ``N`` rows, ``d << N`` features and ``chunk_size << N``, the largest legitimate
intermediate is one ``[chunk_size, N]`` block.
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from negkit.metrics import knn_accuracy, retrieval_metrics, tolerance, uniformity
from tests.metrics.helpers import clustered

N, D, CHUNK = 96, 4, 8


class LargestTensor(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


points, labels = clustered(0, N, D, 3, noise=0.5)

CALLS = {
    "knn_accuracy": lambda chunk: knn_accuracy(points, labels, points, labels, k=N, chunk_size=chunk),
    "retrieval_metrics": lambda chunk: retrieval_metrics(points, labels, chunk_size=chunk),
    "uniformity": lambda chunk: uniformity(points, chunk_size=chunk),
    "tolerance": lambda chunk: tolerance(points, labels, chunk_size=chunk),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_largest_intermediate_is_one_chunk_block(name):
    with LargestTensor() as mode:
        CALLS[name](CHUNK)
    assert mode.largest <= CHUNK * N < N * N
    # The monitor itself works: without chunking the N×N block shows up (tolerance never builds one).
    if name != "tolerance":
        with LargestTensor() as unchunked:
            CALLS[name](N)
        assert unchunked.largest >= (N - 1) ** 2  # uniformity skips the diagonal: an (N−1)×(N−1) block
