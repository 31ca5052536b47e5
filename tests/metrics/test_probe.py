"""linear_probe_accuracy against a directly built scikit-learn pipeline."""

import warnings

import pytest
import torch

from negkit.metrics import linear_probe_accuracy
from tests.metrics.helpers import clustered

linear_model = pytest.importorskip("sklearn.linear_model")
pipeline = pytest.importorskip("sklearn.pipeline")
preprocessing = pytest.importorskip("sklearn.preprocessing")


def data(seed: int, noise: float, classes: int = 4):
    points, labels = clustered(seed, 300, 10, classes, noise=noise, class_ids=torch.tensor([2, 5, 6, 9, 12])[:classes])
    return points[:200], labels[:200], points[200:], labels[200:]


def test_separable_data_gives_perfect_accuracy():
    train, train_labels, test, test_labels = data(0, noise=0.01)
    assert linear_probe_accuracy(train, train_labels, test, test_labels) == 1.0
    assert linear_probe_accuracy(train, train_labels, train, train_labels) == 1.0


@pytest.mark.parametrize(("C", "seed"), [(1.0, 0), (0.05, 3)])
def test_matches_a_direct_sklearn_pipeline(C, seed):
    train, train_labels, test, test_labels = data(seed, noise=1.5)
    model = pipeline.make_pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(C=C, solver="lbfgs", max_iter=1000, random_state=seed),
    )
    expected = model.fit(train.numpy(), train_labels.numpy()).score(test.numpy(), test_labels.numpy())
    ours = linear_probe_accuracy(train, train_labels, test, test_labels, C=C, seed=seed)
    assert ours == pytest.approx(expected, abs=1e-12)
    assert 0.3 < ours < 1.0  # non-trivial data
    assert linear_probe_accuracy(train.float(), train_labels, test.float(), test_labels, C=C, seed=seed) == (
        pytest.approx(ours, abs=0.02)
    )


def test_deterministic():
    train, train_labels, test, test_labels = data(1, noise=1.5)
    first = linear_probe_accuracy(train, train_labels, test, test_labels)
    assert linear_probe_accuracy(train.clone(), train_labels.clone(), test.clone(), test_labels.clone()) == first


def test_binary_and_unseen_test_class():
    train, train_labels, test, test_labels = data(2, noise=0.01, classes=2)
    test_labels = test_labels.clone()
    test_labels[:10] = 77  # a class the probe never saw is always wrong
    expected = 1.0 - 10 / len(test_labels)
    assert linear_probe_accuracy(train, train_labels, test, test_labels) == pytest.approx(expected)


def test_standardisation_makes_it_invariant_to_feature_scale():
    train, train_labels, test, test_labels = data(4, noise=1.5)
    scale = torch.logspace(-3, 3, train.shape[1], dtype=torch.float64)
    shift = torch.linspace(-50, 50, train.shape[1], dtype=torch.float64)
    base = linear_probe_accuracy(train, train_labels, test, test_labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning on badly scaled raw features either
        moved = linear_probe_accuracy(train * scale + shift, train_labels, test * scale + shift, test_labels)
    assert moved == pytest.approx(base, abs=0.02)
