"""retrieval_metrics against pytorch-metric-learning's AccuracyCalculator, a float64 brute-force loop, and a
hand-computed ranking."""

import math

import numpy as np
import pytest
import torch

from negkit.metrics import retrieval_metrics
from tests.metrics.helpers import clustered

accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
inference = pytest.importorskip("pytorch_metric_learning.utils.inference")
distances = pytest.importorskip("pytorch_metric_learning.distances")

KS = (1, 2, 5, 10)
CHUNK_SIZES = (1, 7, 10_000)
PML_KEYS = {"precision_at_1": "precision_at_1", "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r"}


def pml_accuracy(query, query_labels, reference, reference_labels, ref_includes_query: bool) -> dict[str, float]:
    calculator = accuracy_calculator.AccuracyCalculator(
        include=tuple(PML_KEYS.values()),
        k="max_bin_count",
        knn_func=inference.CustomKNN(distances.CosineSimilarity()),
        device=torch.device("cpu"),
    )
    result = calculator.get_accuracy(
        query, query_labels, reference, reference_labels, ref_includes_query=ref_includes_query
    )
    return {ours: result[theirs] for ours, theirs in PML_KEYS.items()}


def brute_force(query, query_labels, reference, reference_labels, ks, leave_one_out: bool) -> dict[str, float]:
    """Rank every reference for every query in float64 with an explicit sort, then apply the definitions."""
    q = query.double().numpy()
    r = reference.double().numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    hits = dict.fromkeys(ks, 0)
    precision_at_1 = r_precision = map_at_r = 0.0
    evaluated = 0
    for i in range(len(q)):
        candidates = [j for j in range(len(r)) if not (leave_one_out and j == i)]
        sims = {j: float(np.dot(q[i], r[j])) for j in candidates}
        ranking = sorted(candidates, key=lambda j: -sims[j])
        rel = [int(reference_labels[j]) == int(query_labels[i]) for j in ranking]
        for k in ks:
            hits[k] += any(rel[:k])
        precision_at_1 += rel[0]
        R = sum(rel)
        if R == 0:
            continue
        evaluated += 1
        r_precision += sum(rel[:R]) / R
        map_at_r += sum(sum(rel[: i + 1]) / (i + 1) for i in range(R) if rel[i]) / R
    n = len(q)
    result = {f"recall_at_{k}": hits[k] / n for k in ks}
    result.update(precision_at_1=precision_at_1 / n, r_precision=r_precision / evaluated, map_at_r=map_at_r / evaluated)
    return result


def assert_metrics_close(ours: dict[str, float], expected: dict[str, float], rel: float = 1e-12) -> None:
    assert set(expected) <= set(ours)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=rel, abs=1e-12), key


def self_data(seed: int, n: int = 150, dtype=torch.float32):
    points, labels = clustered(seed, n, 8, 6, noise=1.5, dtype=dtype)
    return points, labels


def split_data(seed: int, dtype=torch.float32):
    points, labels = clustered(seed, 230, 8, 6, noise=1.5, dtype=dtype)
    return points[:80], labels[:80], points[80:], labels[80:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_matches_pml(seed):
    points, labels = self_data(seed)
    assert int(torch.bincount(labels).min()) >= 2  # no lone query, so precision_at_1 is defined alike
    expected = pml_accuracy(points, labels, points, labels, ref_includes_query=True)
    for chunk_size in CHUNK_SIZES:
        assert_metrics_close(retrieval_metrics(points, labels, chunk_size=chunk_size), expected)
    # Non-trivial data: well above chance (1/6) at the top of the ranking, far from perfect over the first R.
    assert 0.3 < expected["precision_at_1"] < 0.95
    assert expected["map_at_r"] < 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_separate_reference_matches_pml(seed):
    query, query_labels, reference, reference_labels = split_data(seed)
    assert set(query_labels.tolist()) <= set(reference_labels.tolist())
    expected = pml_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False)
    for chunk_size in CHUNK_SIZES:
        ours = retrieval_metrics(query, query_labels, reference, reference_labels, chunk_size=chunk_size)
        assert_metrics_close(ours, expected)


def test_lone_queries_are_left_out_of_r_metrics_but_count_as_misses():
    query, query_labels, reference, reference_labels = split_data(3)
    keep = reference_labels != 2  # class 2 is absent from the references: its queries have R = 0
    reference, reference_labels = reference[keep], reference_labels[keep]
    lone = query_labels == 2
    assert 0 < int(lone.sum()) < len(query_labels)
    ours = retrieval_metrics(query, query_labels, reference, reference_labels)
    expected = pml_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False)
    assert ours["r_precision"] == pytest.approx(expected["r_precision"], rel=1e-12)
    assert ours["map_at_r"] == pytest.approx(expected["map_at_r"], rel=1e-12)
    # PML averages precision_at_1 over the queries with R > 0 only; negkit over all queries.
    share_evaluated = 1.0 - float(lone.double().mean())
    assert ours["precision_at_1"] == pytest.approx(expected["precision_at_1"] * share_evaluated, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 4])
def test_leave_one_out_matches_brute_force(seed):
    points, labels = self_data(seed, n=120, dtype=torch.float64)
    labels[0] = 17  # a label that occurs once: a query with R = 0
    expected = brute_force(points, labels, points, labels, KS, leave_one_out=True)
    for chunk_size in CHUNK_SIZES:
        assert_metrics_close(retrieval_metrics(points, labels, ks=KS, chunk_size=chunk_size), expected)


def test_separate_reference_matches_brute_force():
    query, query_labels, reference, reference_labels = split_data(5, dtype=torch.float64)
    query_labels[:3] = 23  # absent from the references
    expected = brute_force(query, query_labels, reference, reference_labels, KS, leave_one_out=False)
    for chunk_size in CHUNK_SIZES:
        ours = retrieval_metrics(query, query_labels, reference, reference_labels, ks=KS, chunk_size=chunk_size)
        assert_metrics_close(ours, expected)


def unit(angle_degrees: float) -> list[float]:
    radians = math.radians(angle_degrees)
    return [math.cos(radians), math.sin(radians)]


def test_hand_computed_ranking():
    # References at 10°, 20°, ..., 60° with labels A B A B A B (A = 0, B = 1), so R = 3 for a label-A query.
    reference = torch.tensor([unit(a) for a in (10, 20, 30, 40, 50, 60)], dtype=torch.float64)
    reference_labels = torch.tensor([0, 1, 0, 1, 0, 1])
    # Query at 0° ranks 10°, 20°, 30°: rel = 1 0 1 → R-Precision 2/3, MAP@R (1/3)(1/1 + 2/3) = 5/9.
    # Query at 70° ranks 60°, 50°, 40°: rel = 0 1 0 → R-Precision 1/3, MAP@R (1/3)(1/2) = 1/6.
    # Query of label 5 (absent): R = 0, a miss for Recall@k and Precision@1, left out of R-Precision and MAP@R.
    query = torch.tensor([unit(0), unit(70), unit(35)], dtype=torch.float64)
    query_labels = torch.tensor([0, 0, 5])
    result = retrieval_metrics(query, query_labels, reference, reference_labels, ks=(1, 2, 6))
    assert result == pytest.approx(
        {
            "recall_at_1": 1 / 3,
            "recall_at_2": 2 / 3,
            "recall_at_6": 2 / 3,
            "precision_at_1": 1 / 3,
            "r_precision": (2 / 3 + 1 / 3) / 2,
            "map_at_r": (5 / 9 + 1 / 6) / 2,
        },
        rel=1e-12,
    )
    assert list(result) == ["recall_at_1", "recall_at_2", "recall_at_6", "precision_at_1", "r_precision", "map_at_r"]


def test_leave_one_out_excludes_the_query_itself():
    points, labels = self_data(6, n=60, dtype=torch.float64)
    with_self = retrieval_metrics(points, labels, points, labels, ks=(1,))
    assert with_self["recall_at_1"] == 1.0  # each query finds itself first
    assert retrieval_metrics(points, labels, ks=(1,))["recall_at_1"] < 1.0


def test_recall_is_monotone_in_k_and_default_keys():
    points, labels = self_data(7)
    result = retrieval_metrics(points, labels)
    assert list(result)[:3] == ["recall_at_1", "recall_at_5", "recall_at_10"]
    assert result["recall_at_1"] <= result["recall_at_5"] <= result["recall_at_10"]
    assert result["recall_at_1"] == result["precision_at_1"]
    assert all(isinstance(v, float) for v in result.values())


def test_invariant_to_row_scaling():
    points, labels = self_data(8, dtype=torch.float64)
    scales = torch.rand(len(points), 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.1
    assert retrieval_metrics(points * scales, labels) == retrieval_metrics(points, labels)
