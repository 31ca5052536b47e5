import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.metrics import opis
from tests.metrics.helpers import clustered, randint, randn


def opis_loop(embeddings, labels, thresholds):
    """negkit's OPIS definition, one pair and one threshold at a time."""
    n = embeddings.shape[0]
    z = [embeddings[i] / embeddings[i].norm() for i in range(n)]
    per_class = {}
    for c in sorted({int(y) for y in labels}):
        pos = [float(z[i] @ z[j]) for i in range(n) for j in range(n) if i != j and labels[i] == c == labels[j]]
        neg = [float(z[i] @ z[j]) for i in range(n) for j in range(n) if labels[i] == c and labels[j] != c]
        if pos and neg:
            per_class[c] = (pos, neg)
    total = 0.0
    for t in thresholds:
        tprs = [sum(s >= t for s in pos) / len(pos) for pos, _ in per_class.values()]
        fprs = [sum(s >= t for s in neg) / len(neg) for _, neg in per_class.values()]
        for values in (tprs, fprs):
            mean = sum(values) / len(values)
            total += sum((v - mean) ** 2 for v in values) / len(values)
    return total / len(thresholds)


@settings(max_examples=30, deadline=None)
@given(st.integers(4, 14), st.integers(1, 5), st.integers(2, 4), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_matches_the_slow_loop(n, d, classes, chunk_size, seed):
    x, labels = randn(seed, n, d), randint(seed + 1, classes, n)
    labels[:4] = torch.tensor([0, 0, 1, 1])
    thresholds = [-0.5, -0.1, 0.0, 0.3, 0.75]
    got = opis(x, labels, thresholds=thresholds, chunk_size=chunk_size)
    assert math.isclose(got, opis_loop(x, labels, thresholds), rel_tol=1e-12, abs_tol=1e-12)
    default = [i / 100 for i in range(100)]
    assert math.isclose(opis(x, labels), opis_loop(x, labels, default), rel_tol=1e-12, abs_tol=1e-12)


def test_identical_classes_are_consistent_and_range():
    # two classes that are mirror images of each other have the same operating points: OPIS 0
    base = randn(0, 5, 3)
    x = torch.cat([base, -base])
    labels = torch.tensor([0] * 5 + [1] * 5)
    assert opis(x, labels, thresholds=torch.linspace(-1, 1, 41, dtype=torch.float64)) == pytest.approx(0.0, abs=1e-12)
    y, y_labels = clustered(1, 60, 8, 4)
    value = opis(y, y_labels)
    assert 0.0 <= value <= 0.5


def test_scale_invariant_and_dtype():
    x, labels = clustered(2, 40, 6, 3)
    want = opis(x, labels)
    assert opis(x * 1e30, labels) == pytest.approx(want)
    assert opis(x.float(), labels) == pytest.approx(want, abs=1e-3)
    assert opis(x, labels + 100) == pytest.approx(want)  # only which rows share a class matters


def test_a_tight_class_and_a_loose_class_are_inconsistent():
    tight = torch.tensor([[1.0, 0.0, 0.0]] * 4) + 0.01 * randn(3, 4, 3)
    loose = torch.tensor([[0.0, 1.0, 0.0]] * 4) + 0.8 * randn(4, 4, 3)
    x = torch.cat([tight, loose])
    labels = torch.tensor([0] * 4 + [1] * 4)
    assert opis(x, labels) > 0.01


def test_perfectly_separated_classes_score_zero():
    x = torch.eye(3, dtype=torch.float64).repeat_interleave(4, dim=0)  # each class one direction, orthogonal
    labels = torch.arange(3).repeat_interleave(4)
    assert opis(x, labels) == 0.0


def test_errors_name_the_argument():
    x, labels = randn(0, 6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="embeddings"):
        opis(x[0], labels)
    with pytest.raises(ValueError, match="labels"):
        opis(x, labels[:5])
    with pytest.raises(ValueError, match="labels"):
        opis(x, torch.tensor([0, 1, 2, 3, 4, 5]))  # no class has a positive pair
    with pytest.raises(ValueError, match="labels"):
        opis(x, torch.zeros(6, dtype=torch.long))  # one class: nothing to compare
    with pytest.raises(ValueError, match="thresholds"):
        opis(x, labels, thresholds=[])
    with pytest.raises(ValueError, match="thresholds"):
        opis(x, labels, thresholds=[0.1, math.nan])
    with pytest.raises(ValueError, match="thresholds"):
        opis(x, labels, thresholds="0.5")
    with pytest.raises(ValueError, match="chunk_size"):
        opis(x, labels, chunk_size=0)
    zero = x.clone()
    zero[2] = 0
    with pytest.raises(ValueError, match="embeddings"):
        opis(zero, labels)
