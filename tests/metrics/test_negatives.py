"""false_negative_rate and in_batch_false_negative_rate against explicit loops."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from negkit.metrics import false_negative_rate, in_batch_false_negative_rate
from tests.metrics.helpers import randint


def loop_rate(anchor_labels, negative_labels, mask) -> float:
    collisions = pairs = 0
    for b in range(negative_labels.shape[0]):
        for k in range(negative_labels.shape[1]):
            if mask[b][k]:
                pairs += 1
                collisions += int(negative_labels[b][k]) == int(anchor_labels[b])
    return collisions / pairs


def in_batch_loop(labels) -> float:
    B = len(labels)
    collisions = sum(int(labels[i]) == int(labels[j]) for i in range(B) for j in range(B) if i != j)
    return collisions / (B * (B - 1))


@given(st.integers(1, 12), st.integers(1, 9), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_false_negative_rate_matches_the_loop(B, K, classes, seed):
    anchors = randint(seed, classes, B)
    negatives = randint(seed + 1, classes, B * K).reshape(B, K)
    mask = torch.rand(B, K, generator=torch.Generator().manual_seed(seed + 2)) < 0.6
    mask[0, 0] = True
    assert false_negative_rate(anchors, negatives, mask) == pytest.approx(loop_rate(anchors, negatives, mask))
    full = torch.ones(B, K, dtype=torch.bool)
    expected_full = loop_rate(anchors, negatives, full)
    assert false_negative_rate(anchors, negatives) == pytest.approx(expected_full)
    assert false_negative_rate(anchors, negatives, full.long()) == pytest.approx(expected_full)


def test_masked_entries_are_ignored_even_if_they_are_padding():
    anchors = torch.tensor([1, 2])
    negatives = torch.tensor([[1, 3, -1], [2, -1, -1]])
    mask = negatives >= 0
    # Pairs: (1,1) hit, (1,3) miss, (2,2) hit → 2/3.
    assert false_negative_rate(anchors, negatives, mask) == pytest.approx(2 / 3)


@given(st.integers(2, 20), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_in_batch_rate_matches_the_loop_and_the_explicit_form(B, classes, seed):
    labels = randint(seed, classes, B)
    expected = in_batch_loop(labels)
    assert in_batch_false_negative_rate(labels) == pytest.approx(expected)
    # Explicit negatives: row i's negatives are the other B − 1 rows.
    others = torch.stack([torch.cat([labels[:i], labels[i + 1 :]]) for i in range(B)])
    assert false_negative_rate(labels, others) == pytest.approx(expected)


def test_in_batch_extremes():
    assert in_batch_false_negative_rate(torch.arange(7)) == 0.0
    assert in_batch_false_negative_rate(torch.full((5,), 3)) == 1.0
    # Two views of each of C images (SimCLR batch, labels = image ids): 1 collision per anchor out of 2C − 1.
    C = 6
    assert in_batch_false_negative_rate(torch.arange(C).repeat(2)) == pytest.approx(1 / (2 * C - 1))
