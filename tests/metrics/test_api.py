"""The public surface of negkit.metrics: names, keyword-only options, return types."""

import inspect

import torch

import negkit.metrics as metrics
from tests.metrics.helpers import clustered

EXPECTED = {
    "query_document_metrics": (
        ["query_embeddings", "document_embeddings", "relevant"],
        ["ks", "cutoff", "similarity", "chunk_size"],
    ),
    "knn_predict": (["train_emb", "train_labels", "test_emb"], ["k", "temperature", "weighted", "chunk_size"]),
    "knn_accuracy": (
        ["train_emb", "train_labels", "test_emb", "test_labels"],
        ["k", "temperature", "weighted", "chunk_size"],
    ),
    "linear_probe_accuracy": (["train_emb", "train_labels", "test_emb", "test_labels"], ["C", "max_iter", "seed"]),
    "retrieval_metrics": (["query_emb", "query_labels", "reference_emb", "reference_labels"], ["ks", "chunk_size"]),
    "alignment": (["z1", "z2"], ["alpha"]),
    "uniformity": (["z"], ["t", "chunk_size"]),
    "tolerance": (["z", "labels"], ["chunk_size"]),
    "false_negative_rate": (["anchor_labels", "negative_labels", "mask"], []),
    "in_batch_false_negative_rate": (["labels"], []),
    "opis": (["embeddings", "labels"], ["thresholds", "chunk_size"]),
}


def test_all_exports_exactly_the_public_functions():
    assert sorted(metrics.__all__) == sorted(EXPECTED)
    for name in metrics.__all__:
        assert callable(getattr(metrics, name))


def test_signatures():
    for name, (positional, keyword_only) in EXPECTED.items():
        parameters = inspect.signature(getattr(metrics, name)).parameters.values()
        kinds = inspect.Parameter
        assert [p.name for p in parameters if p.kind is kinds.POSITIONAL_OR_KEYWORD] == positional, name
        assert [p.name for p in parameters if p.kind is kinds.KEYWORD_ONLY] == keyword_only, name


def test_defaults():
    assert inspect.signature(metrics.knn_predict).parameters["k"].default == 20
    assert inspect.signature(metrics.knn_predict).parameters["temperature"].default == 0.07
    assert inspect.signature(metrics.retrieval_metrics).parameters["ks"].default == (1, 5, 10)
    for name in ("knn_predict", "knn_accuracy", "retrieval_metrics", "uniformity", "tolerance"):
        assert inspect.signature(getattr(metrics, name)).parameters["chunk_size"].default == 1024


def test_return_types():
    x, y = clustered(0, 40, 3, 2)
    assert type(metrics.knn_accuracy(x, y, x, y, k=3)) is float
    assert isinstance(metrics.knn_predict(x, y, x, k=3), torch.Tensor)
    assert type(metrics.linear_probe_accuracy(x, y, x, y)) is float
    assert all(type(v) is float for v in metrics.retrieval_metrics(x, y, ks=(1, 5)).values())
    assert type(metrics.alignment(x, x)) is float
    assert type(metrics.uniformity(x)) is float
    assert type(metrics.tolerance(x, y)) is float
    assert type(metrics.false_negative_rate(y[:4], y[:8].reshape(4, 2))) is float
    assert type(metrics.in_batch_false_negative_rate(y)) is float
