"""knn_predict / knn_accuracy against scikit-learn's brute-force cosine KNeighborsClassifier, plus the tie rule."""

import math

import numpy as np
import pytest
import torch

from negkit.metrics import knn_accuracy, knn_predict
from tests.metrics.helpers import clustered

neighbors = pytest.importorskip("sklearn.neighbors")

CLASS_IDS = torch.tensor([3, 7, 11, 40, 41])  # non-contiguous, so that the label mapping is exercised
N_TRAIN, N_TEST = 160, 90
CHUNK_SIZES = (1, 7, 10_000)


def split(seed: int, noise: float = 1.2) -> tuple[torch.Tensor, ...]:
    points, labels = clustered(seed, N_TRAIN + N_TEST, 6, len(CLASS_IDS), noise=noise, class_ids=CLASS_IDS)
    return points[:N_TRAIN], labels[:N_TRAIN], points[N_TRAIN:], labels[N_TRAIN:]


def sklearn_predict(train, train_labels, test, k: int, weights) -> np.ndarray:
    classifier = neighbors.KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", weights=weights)
    return classifier.fit(train.numpy(), train_labels.numpy()).predict(test.numpy())


@pytest.mark.parametrize("k", [1, 4, 15, N_TRAIN])
@pytest.mark.parametrize("seed", [0, 1])
def test_majority_vote_matches_sklearn_uniform(seed, k):
    train, train_labels, test, _ = split(seed)
    expected = sklearn_predict(train, train_labels, test, k, "uniform")
    for chunk_size in CHUNK_SIZES:
        ours = knn_predict(train, train_labels, test, k=k, weighted=False, chunk_size=chunk_size)
        np.testing.assert_array_equal(ours.numpy(), expected, err_msg=f"chunk_size={chunk_size}")


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("k", [1, 4, 15, N_TRAIN])
@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_vote_matches_sklearn_with_exp_weights(seed, k, temperature):
    train, train_labels, test, _ = split(seed)

    def weights(distance: np.ndarray) -> np.ndarray:  # cosine distance d = 1 − s, so the weight is exp(s / T)
        return np.exp((1.0 - distance) / temperature)

    expected = sklearn_predict(train, train_labels, test, k, weights)
    for chunk_size in CHUNK_SIZES:
        ours = knn_predict(train, train_labels, test, k=k, temperature=temperature, chunk_size=chunk_size)
        np.testing.assert_array_equal(ours.numpy(), expected, err_msg=f"chunk_size={chunk_size}")


def test_data_makes_the_weighting_matter():
    # Guards the parity tests above against being vacuous: on this data the two votes disagree somewhere,
    # and the classifier is neither perfect nor at chance.
    train, train_labels, test, test_labels = split(0)
    weighted = knn_predict(train, train_labels, test, k=15, temperature=0.07)
    majority = knn_predict(train, train_labels, test, k=15, weighted=False)
    assert bool((weighted != majority).any())
    accuracy = knn_accuracy(train, train_labels, test, test_labels, k=15)
    assert 1 / len(CLASS_IDS) + 0.1 < accuracy < 1.0


@pytest.mark.parametrize("weighted", [True, False])
def test_accuracy_is_the_mean_of_correct_predictions(weighted):
    train, train_labels, test, test_labels = split(3)
    predictions = knn_predict(train, train_labels, test, k=5, weighted=weighted)
    expected = sum(int(p) == int(y) for p, y in zip(predictions, test_labels, strict=True)) / len(test_labels)
    for chunk_size in CHUNK_SIZES:
        got = knn_accuracy(train, train_labels, test, test_labels, k=5, weighted=weighted, chunk_size=chunk_size)
        assert got == expected


def unit(angle_degrees: float) -> list[float]:
    radians = math.radians(angle_degrees)
    return [math.cos(radians), math.sin(radians)]


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_tie_goes_to_the_smallest_class_id(weighted, order):
    # Two neighbours at exactly the same similarity (0) from the query, one each of classes 9 and 4: a tie.
    points = torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([9, 4])
    idx = list(order)
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    prediction = knn_predict(points[idx], labels[idx], query, k=2, weighted=weighted)
    assert prediction.tolist() == [4]


@pytest.mark.parametrize("weighted", [True, False])
def test_tie_between_two_votes_each(weighted):
    # Classes 8 and 2 each hold one neighbour at +30° and one at −30° from the query: equal votes and weights.
    points = torch.tensor([unit(30), unit(-30), unit(-30), unit(30), unit(180)], dtype=torch.float64)
    labels = torch.tensor([8, 8, 2, 2, 0])
    query = torch.tensor([unit(0)], dtype=torch.float64)
    assert knn_predict(points, labels, query, k=4, weighted=weighted).tolist() == [2]


def test_weighting_can_overrule_the_majority():
    # One neighbour of class 7 at similarity 1 against two of class 3 at similarity 0, k = 3:
    # majority gives 3 (2 votes to 1); weighted gives 7 since exp(1/T) > 2·exp(0/T) for T < 1/log 2.
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([7, 3, 3])
    query = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    assert knn_predict(points, labels, query, k=3, weighted=False).tolist() == [3]
    assert knn_predict(points, labels, query, k=3, temperature=0.07).tolist() == [7]
    # Above T = 1/log 2 the two class-3 weights win again.
    assert knn_predict(points, labels, query, k=3, temperature=2.0).tolist() == [3]


def test_small_temperature_does_not_overflow():
    train, train_labels, test, _ = split(2)
    prediction = knn_predict(train, train_labels, test, k=10, temperature=1e-4)
    # With T → 0 the most similar neighbour dominates the vote: the 1-NN prediction.
    torch.testing.assert_close(prediction, knn_predict(train, train_labels, test, k=1))


def test_scale_invariance_and_float32():
    train, train_labels, test, _ = split(4)
    scales = torch.rand(N_TRAIN, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    expected = knn_predict(train, train_labels, test, k=5)
    torch.testing.assert_close(knn_predict(train * scales, train_labels, test * 3.0, k=5), expected)
    torch.testing.assert_close(knn_predict(train.float(), train_labels, test.float(), k=5), expected)


def test_output_dtype_and_values():
    train, train_labels, test, _ = split(5)
    prediction = knn_predict(train, train_labels.int(), test, k=3)
    assert prediction.dtype == torch.int64 and prediction.shape == (N_TEST,)
    assert set(prediction.tolist()) <= set(CLASS_IDS.tolist())
