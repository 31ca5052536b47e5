"""Linear-probe evaluation of frozen embeddings.

The protocol follows the linear evaluation of CLIP (Radford et al., "Learning Transferable Visual Models From
Natural Language Supervision", ICML 2021, Appendix A.3): an L2-regularised multinomial logistic regression fit
with scikit-learn's L-BFGS solver on the frozen features. Here the features are first standardised (zero mean,
unit variance per feature, statistics from the training split only).

scikit-learn is imported lazily: it is not a dependency of negkit itself (it comes with the ``cli`` extra:
``pip install 'negkit[cli]'``).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from negkit._optional import require
from negkit._validation import check_positive_scalar, check_tensor
from negkit.metrics._common import check_class_ids, check_int, check_same_dim


def linear_probe_accuracy(
    train_emb: Tensor,
    train_labels: Tensor,
    test_emb: Tensor,
    test_labels: Tensor,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> float:
    """Test accuracy of a logistic-regression probe trained on ``train_emb``.

    Pipeline: ``StandardScaler`` fit on ``train_emb`` (applied to both splits), then
    ``LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed)`` with scikit-learn's default
    multinomial (softmax) loss for more than two classes; the objective is
    ``½‖W‖² + C · Σ_n −log softmax(W x_n + b)_{y_n}``. Features are converted to float64 NumPy arrays.
    L-BFGS is deterministic, so equal inputs give equal results; ``seed`` is passed on as ``random_state``.
    Embeddings are used as they are (no L2 normalisation): a probe sees the raw features.

    Args:
        train_emb: ``[N_train, d]`` floating, finite.
        train_labels: ``[N_train]`` non-negative integer class ids; at least two distinct classes.
        test_emb: ``[N_test, d]`` floating, finite.
        test_labels: ``[N_test]`` non-negative integer class ids (a class absent from training is always wrong).
        C: inverse regularisation strength, ``> 0``.
        max_iter: L-BFGS iteration cap, ``>= 1``. scikit-learn warns (``ConvergenceWarning``) if it is hit.
        seed: ``random_state`` of the classifier, ``>= 0``.

    Returns:
        Accuracy in ``[0, 1]``.

    Raises:
        ValueError: bad shapes, dtypes or values, or fewer than two classes in ``train_labels``.
        MissingDependencyError: scikit-learn is not installed (an ``ImportError`` naming ``negkit[cli]``).
    """
    train_emb = _check_features("train_emb", train_emb)
    train_labels = check_class_ids("train_labels", train_labels, train_emb.shape[0], train_emb.device)
    test_emb = _check_features("test_emb", test_emb)
    check_same_dim("test_emb", test_emb, "train_emb", train_emb)
    test_labels = check_class_ids("test_labels", test_labels, test_emb.shape[0], test_emb.device)
    C = check_positive_scalar("C", C)
    max_iter = check_int("max_iter", max_iter, low=1)
    seed = check_int("seed", seed, low=0)
    if train_labels.unique().numel() < 2:
        raise ValueError("train_labels must contain at least two distinct classes for a linear probe")

    LogisticRegression = require("sklearn.linear_model", "cli", "linear_probe_accuracy").LogisticRegression
    StandardScaler = require("sklearn.preprocessing", "cli", "linear_probe_accuracy").StandardScaler

    x_train = train_emb.detach().cpu().double().numpy()
    x_test = test_emb.detach().cpu().double().numpy()
    y_train = train_labels.cpu().numpy()
    y_test = test_labels.cpu().numpy()
    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed)
    classifier.fit(scaler.transform(x_train), y_train)
    predictions = classifier.predict(scaler.transform(x_test))
    return float(np.mean(predictions == y_test))


def _check_features(name: str, x: object) -> Tensor:
    """Like the embedding check, but all-zero rows are allowed: a probe does not normalise."""
    x = check_tensor(name, x, 2)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one feature column, got shape {tuple(x.shape)}")
    return x
