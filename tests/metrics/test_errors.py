"""Every bad input raises ValueError with a message that names the argument at fault."""

import math

import pytest
import torch

from negkit.metrics import (
    alignment,
    false_negative_rate,
    in_batch_false_negative_rate,
    knn_accuracy,
    knn_predict,
    linear_probe_accuracy,
    retrieval_metrics,
    tolerance,
    uniformity,
)
from tests.metrics.helpers import randint, randn

x, y = randn(0, 8, 3), randint(1, 3, 8)
q, qy = randn(2, 5, 3), randint(3, 3, 5)
nan_x = x.clone()
nan_x[2, 1] = math.nan
inf_q = q.clone()
inf_q[0, 0] = math.inf
zero_row = x.clone()
zero_row[4] = 0.0
anchors, negatives = torch.tensor([0, 1]), torch.tensor([[0, 1, 2], [1, 1, 0]])

CASES = {
    # kNN
    "knn train 1-D": (lambda: knn_predict(x[0], y, q), "train_emb must be 2-D"),
    "knn train int": (lambda: knn_predict(x.long(), y, q), "train_emb must be a floating-point tensor"),
    "knn train list": (lambda: knn_predict(x.tolist(), y, q), "train_emb must be a torch.Tensor"),
    "knn train nan": (lambda: knn_predict(nan_x, y, q), "train_emb contains 1 non-finite"),
    "knn test inf": (lambda: knn_predict(x, y, inf_q), "test_emb contains 1 non-finite"),
    "knn zero row": (lambda: knn_predict(zero_row, y, q), r"train_emb has 1 all-zero row\(s\) \(first: row 4\)"),
    "knn empty test": (lambda: knn_predict(x, y, q[:0]), r"test_emb must have at least 1 row"),
    "knn labels length": (lambda: knn_predict(x, y[:7], q), r"train_labels must have shape \[8\]"),
    "knn labels float": (lambda: knn_predict(x, y.double(), q), "train_labels must hold integer class ids"),
    "knn labels bool": (lambda: knn_predict(x, y > 0, q), "train_labels must hold integer class ids"),
    "knn labels negative": (lambda: knn_predict(x, y - 1, q), "train_labels must hold non-negative class ids"),
    "knn dim mismatch": (lambda: knn_predict(x, y, randn(4, 5, 2)), "test_emb must have 3 features like train_emb"),
    "knn k 0": (lambda: knn_predict(x, y, q, k=0), "k must be >= 1"),
    "knn k too large": (lambda: knn_predict(x, y, q, k=9), r"k must be <= 8 \(the number of training rows\)"),
    "knn k float": (lambda: knn_predict(x, y, q, k=2.0), "k must be an int"),
    "knn k bool": (lambda: knn_predict(x, y, q, k=True), "k must be an int"),
    "knn temperature 0": (
        lambda: knn_predict(x, y, q, k=3, temperature=0.0),
        "temperature must be a finite number > 0",
    ),
    "knn temperature nan": (lambda: knn_predict(x, y, q, k=3, temperature=math.nan), "temperature must be a finite"),
    "knn chunk 0": (lambda: knn_predict(x, y, q, k=3, chunk_size=0), "chunk_size must be >= 1"),
    "knn chunk float": (lambda: knn_predict(x, y, q, k=3, chunk_size=2.5), "chunk_size must be an int"),
    "knn_accuracy test labels": (lambda: knn_accuracy(x, y, q, qy[:4], k=2), r"test_labels must have shape \[5\]"),
    "knn_accuracy k": (lambda: knn_accuracy(x, y, q, qy, k=20), r"k must be <= 8"),
    # linear probe
    "probe train 3-D": (lambda: linear_probe_accuracy(x[None], y, q, qy), "train_emb must be 2-D"),
    "probe nan": (lambda: linear_probe_accuracy(nan_x, y, q, qy), "train_emb contains 1 non-finite"),
    "probe test inf": (lambda: linear_probe_accuracy(x, y, inf_q, qy), "test_emb contains 1 non-finite"),
    "probe dim": (lambda: linear_probe_accuracy(x, y, randn(5, 5, 4), qy), "test_emb must have 3 features"),
    "probe train labels": (lambda: linear_probe_accuracy(x, y[:3], q, qy), r"train_labels must have shape \[8\]"),
    "probe test labels": (lambda: linear_probe_accuracy(x, y, q, qy[:3]), r"test_labels must have shape \[5\]"),
    "probe one class": (
        lambda: linear_probe_accuracy(x, torch.zeros(8, dtype=torch.long), q, qy),
        "train_labels must contain at least two distinct classes",
    ),
    "probe C": (lambda: linear_probe_accuracy(x, y, q, qy, C=-1.0), "C must be a finite number > 0"),
    "probe max_iter": (lambda: linear_probe_accuracy(x, y, q, qy, max_iter=0), "max_iter must be >= 1"),
    "probe seed": (lambda: linear_probe_accuracy(x, y, q, qy, seed=-3), "seed must be >= 0"),
    # retrieval
    "retrieval query 1-D": (lambda: retrieval_metrics(x[0], y), "query_emb must be 2-D"),
    "retrieval query nan": (lambda: retrieval_metrics(nan_x, y), "query_emb contains 1 non-finite"),
    "retrieval labels": (lambda: retrieval_metrics(x, y[:5]), r"query_labels must have shape \[8\]"),
    "retrieval ref inf": (lambda: retrieval_metrics(q, qy, inf_q, qy), "reference_emb contains 1 non-finite"),
    "retrieval ref dim": (lambda: retrieval_metrics(q, qy, randn(5, 4, 2), y[:4]), "reference_emb must have 3"),
    "retrieval ref labels": (lambda: retrieval_metrics(q, qy, x, y[:3]), r"reference_labels must have shape \[8\]"),
    "retrieval ref labels missing": (lambda: retrieval_metrics(q, qy, x), "reference_labels must be given together"),
    "retrieval ref emb missing": (lambda: retrieval_metrics(q, qy, None, y), "reference_emb must be given together"),
    "retrieval single query": (lambda: retrieval_metrics(x[:1], y[:1], ks=(1,)), "query_emb must have at least 2"),
    "retrieval k 0": (lambda: retrieval_metrics(x, y, ks=(0, 1)), "ks entries must be >= 1"),
    "retrieval k leave-one-out": (lambda: retrieval_metrics(x, y, ks=(8,)), r"ks entries must be <= 7 \(.*itself"),
    "retrieval k reference": (lambda: retrieval_metrics(q, qy, x, y, ks=(9,)), r"ks entries must be <= 8"),
    "retrieval k float": (lambda: retrieval_metrics(x, y, ks=(1.5,)), "ks entries must be an int"),
    "retrieval ks int": (lambda: retrieval_metrics(x, y, ks=5), "ks must be a sequence of ints"),
    "retrieval ks empty": (lambda: retrieval_metrics(x, y, ks=()), "ks must contain at least one k"),
    "retrieval chunk": (lambda: retrieval_metrics(x, y, chunk_size=-1), "chunk_size must be >= 1"),
    "retrieval no R": (lambda: retrieval_metrics(x, torch.arange(8), ks=(1,)), r"no query has a same-label reference"),
    "retrieval no R ref": (lambda: retrieval_metrics(q, qy + 10, x, y, ks=(1,)), r"R = 0 for every query"),
    # geometry
    "alignment 1-D": (lambda: alignment(x[0], x[1]), "z1 must be 2-D"),
    "alignment shapes": (lambda: alignment(x, x[:5]), r"z2 must have the shape of z1 \(8, 3\)"),
    "alignment nan": (lambda: alignment(x, nan_x), "z2 contains 1 non-finite"),
    "alignment zero row": (lambda: alignment(zero_row, x), "z1 has 1 all-zero row"),
    "alignment alpha": (lambda: alignment(x, x, alpha=0.0), "alpha must be a finite number > 0"),
    "uniformity one row": (lambda: uniformity(x[:1]), r"z must have at least 2 row\(s\)"),
    "uniformity nan": (lambda: uniformity(nan_x), "z contains 1 non-finite"),
    "uniformity t": (lambda: uniformity(x, t=-2.0), "t must be a finite number > 0"),
    "uniformity t inf": (lambda: uniformity(x, t=math.inf), "t must be a finite number > 0"),
    "uniformity chunk": (lambda: uniformity(x, chunk_size=0), "chunk_size must be >= 1"),
    "uniformity int": (lambda: uniformity(x.long()), "z must be a floating-point tensor"),
    "tolerance labels length": (lambda: tolerance(x, y[:2]), r"labels must have shape \[8\]"),
    "tolerance labels float": (lambda: tolerance(x, y.float()), "labels must hold integer class ids"),
    "tolerance no pair": (lambda: tolerance(x, torch.arange(8)), "labels must contain at least one label twice"),
    "tolerance nan": (lambda: tolerance(nan_x, y), "z contains 1 non-finite"),
    "tolerance chunk": (lambda: tolerance(x, y, chunk_size=0), "chunk_size must be >= 1"),
    # false negatives
    "fnr anchors 2-D": (lambda: false_negative_rate(negatives, negatives), "anchor_labels must be a 1-D tensor"),
    "fnr anchors empty": (lambda: false_negative_rate(anchors[:0], negatives[:0]), "anchor_labels must not be empty"),
    "fnr anchors float": (lambda: false_negative_rate(anchors.float(), negatives), "anchor_labels must hold integer"),
    "fnr negatives 1-D": (lambda: false_negative_rate(anchors, anchors), r"negative_labels must have shape \[2, K\]"),
    "fnr negatives batch": (lambda: false_negative_rate(anchors, negatives[:1]), r"negative_labels must have shape"),
    "fnr negatives float": (lambda: false_negative_rate(anchors, negatives.float()), "negative_labels must hold"),
    "fnr negatives negative": (
        lambda: false_negative_rate(anchors, negatives - 1),
        "negative_labels must hold non-neg",
    ),
    "fnr mask shape": (lambda: false_negative_rate(anchors, negatives, negatives[:, :2] > 0), r"mask must have shape"),
    "fnr mask values": (
        lambda: false_negative_rate(anchors, negatives, negatives * 2),
        "mask must contain only 0 and 1",
    ),
    "fnr mask empty": (
        lambda: false_negative_rate(anchors, negatives, torch.zeros(2, 3, dtype=torch.bool)),
        "mask is all False",
    ),
    "fnr no negatives": (lambda: false_negative_rate(anchors, negatives[:, :0]), "negative_labels has K = 0"),
    "in-batch one row": (lambda: in_batch_false_negative_rate(anchors[:1]), "labels must have at least 2 entries"),
    "in-batch 2-D": (lambda: in_batch_false_negative_rate(negatives), "labels must be a 1-D tensor"),
    "in-batch negative": (lambda: in_batch_false_negative_rate(anchors - 1), "labels must hold non-negative"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_raises_value_error_naming_the_argument(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()
