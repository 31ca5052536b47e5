"""query_document_metrics against a slow float64 reference loop, scikit-learn's nDCG and hand-computed cases."""

import math

import pytest
import torch

from negkit.metrics import query_document_metrics
from negkit.metrics.ranking import Relevance
from tests.metrics.helpers import randn


def random_relevance(seed: int, num_queries: int, num_documents: int, max_relevant: int) -> list[tuple[int, ...]]:
    """Per query 1..max_relevant distinct document ids (many queries with several relevant documents)."""
    generator = torch.Generator().manual_seed(seed)
    relevant = []
    for _ in range(num_queries):
        size = int(torch.randint(1, max_relevant + 1, (1,), generator=generator))
        relevant.append(tuple(sorted(torch.randperm(num_documents, generator=generator)[:size].tolist())))
    return relevant


def reference(queries, documents, relevant, ks, cutoff=10, similarity="cosine"):
    """One query at a time in Python float64: sort every document, then apply the textbook definitions."""
    result = {f"recall@{k}": 0.0 for k in ks}
    result.update({f"recall_fraction@{k}": 0.0 for k in ks})
    result[f"mrr@{cutoff}"] = 0.0
    result[f"ndcg@{cutoff}"] = 0.0
    docs = documents.double().tolist()
    for q, rel_ids in zip(queries.double().tolist(), relevant, strict=True):
        scores = []
        for j, doc in enumerate(docs):
            dot = sum(a * b for a, b in zip(q, doc, strict=True))
            if similarity == "cosine":
                dot /= math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in doc))
            scores.append((dot, j))
        ranking = [j for _, j in sorted(scores, key=lambda s: -s[0])]
        relevant_set = set(rel_ids)
        for k in ks:
            found = sum(j in relevant_set for j in ranking[:k])
            result[f"recall@{k}"] += 1.0 if found else 0.0
            result[f"recall_fraction@{k}"] += found / len(relevant_set)
        for position, j in enumerate(ranking[:cutoff], start=1):
            if j in relevant_set:
                result[f"mrr@{cutoff}"] += 1.0 / position
                break
        dcg = sum(1.0 / math.log2(i + 1) for i, j in enumerate(ranking[:cutoff], start=1) if j in relevant_set)
        idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant_set), cutoff) + 1))
        result[f"ndcg@{cutoff}"] += dcg / idcg
    return {key: value / len(relevant) for key, value in result.items()}


@pytest.mark.parametrize(
    ("seed", "num_queries", "num_documents", "dim", "max_relevant"),
    [(0, 30, 50, 8, 1), (1, 40, 25, 5, 14), (2, 17, 12, 3, 4), (3, 25, 200, 16, 30), (4, 1, 11, 2, 11)],
)
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_matches_the_reference_loop(seed, num_queries, num_documents, dim, max_relevant, similarity):
    queries = randn(seed, num_queries, dim)
    documents = randn(seed + 100, num_documents, dim)
    relevant = random_relevance(seed, num_queries, num_documents, max_relevant)
    ks = (1, 3, 10)
    got = query_document_metrics(queries, documents, relevant, ks=ks, similarity=similarity, chunk_size=7)
    expected = reference(queries, documents, relevant, ks, similarity=similarity)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
        assert type(got[key]) is float


def test_cutoff_other_than_10_and_larger_than_the_corpus():
    queries, documents = randn(5, 20, 4), randn(6, 6, 4)
    relevant = random_relevance(5, 20, 6, 3)
    for cutoff in (1, 3, 50):
        got = query_document_metrics(queries, documents, relevant, ks=(2,), cutoff=cutoff)
        expected = reference(queries, documents, relevant, (2,), cutoff=cutoff)
        assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_ndcg_matches_scikit_learn(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    queries, documents = randn(seed, 12, 6), randn(seed + 50, 30, 6)
    relevant = random_relevance(seed, 12, 30, 15)
    dense = torch.zeros(12, 30)
    for i, ids in enumerate(relevant):
        dense[i, list(ids)] = 1.0
    cosine = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(documents, dim=1).T
    expected = sklearn_metrics.ndcg_score(dense.numpy(), cosine.numpy(), k=10)
    got = query_document_metrics(queries, documents, relevant, ks=(1,))["ndcg@10"]
    assert got == pytest.approx(expected, abs=1e-12)


def test_hand_computed_ranking():
    # Documents are the 4 unit axes; the query's cosine order is d2 > d0 > d3 > d1 (no ties).
    documents = torch.eye(4, dtype=torch.float64)
    queries = torch.tensor([[0.3, 0.1, 0.9, 0.2], [0.3, 0.1, 0.9, 0.2]], dtype=torch.float64)
    relevant = [(1,), (0, 3)]  # query 0: its only relevant doc at rank 4; query 1: ranks 2 and 3
    got = query_document_metrics(queries, documents, relevant, ks=(1, 2, 3), cutoff=3)
    assert got["recall@1"] == 0.0
    assert got["recall@2"] == pytest.approx(0.5)  # query 1 hits at rank 2
    assert got["recall@3"] == pytest.approx(0.5)
    assert got["recall_fraction@2"] == pytest.approx((0 + 1 / 2) / 2)
    assert got["recall_fraction@3"] == pytest.approx((0 + 2 / 2) / 2)
    assert got["mrr@3"] == pytest.approx((0 + 1 / 2) / 2)
    ndcg_query_1 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert got["ndcg@3"] == pytest.approx((0 + ndcg_query_1) / 2)


def test_perfect_and_worst_embeddings():
    documents = randn(7, 20, 20)
    queries = documents.clone()
    relevant = [(i,) for i in range(20)]
    perfect = query_document_metrics(queries, documents, relevant, ks=(1, 10))
    assert all(value == pytest.approx(1.0) for value in perfect.values())
    worst = query_document_metrics(-queries, documents, relevant, ks=(1, 10))  # own doc ranked last of 20
    assert all(value == 0.0 for value in worst.values())


def test_chunk_size_invariance_and_input_forms():
    queries, documents = randn(8, 53, 5), randn(9, 40, 5)
    relevant = random_relevance(8, 53, 40, 6)
    base = query_document_metrics(queries, documents, relevant, ks=(1, 5, 10), chunk_size=1024)
    for chunk_size in (1, 2, 7, 52, 53):
        assert query_document_metrics(queries, documents, relevant, ks=(1, 5, 10), chunk_size=chunk_size) == (
            pytest.approx(base, abs=1e-12)
        )
    csr = Relevance.from_lists(relevant)
    assert csr.offsets.tolist()[-1] == sum(len(ids) for ids in relevant)
    assert query_document_metrics(queries, documents, csr, ks=(1, 5, 10)) == pytest.approx(base, abs=1e-12)
    as_tensors = [torch.tensor(ids) for ids in relevant]
    assert query_document_metrics(queries, documents, as_tensors, ks=(1, 5, 10)) == pytest.approx(base, abs=1e-12)
    float32 = query_document_metrics(queries.float(), documents.float(), relevant, ks=(1, 5, 10))
    assert float32 == pytest.approx(base, abs=0.05)  # float32 can only swap near-ties


def test_cosine_ignores_norms_but_dot_does_not():
    queries, documents = randn(10, 30, 4), randn(11, 60, 4)
    relevant = random_relevance(10, 30, 60, 3)
    scale = torch.linspace(0.1, 10.0, 60, dtype=torch.float64)[:, None]
    cosine = query_document_metrics(queries, documents, relevant)
    assert query_document_metrics(queries * 3.0, documents * scale, relevant) == pytest.approx(cosine, abs=1e-12)
    dot = query_document_metrics(queries, documents * scale, relevant, similarity="dot")
    assert dot == pytest.approx(reference(queries, documents * scale, relevant, (1, 10), similarity="dot"))


x = randn(0, 4, 3)
docs = randn(1, 6, 3)
rel = [(0,), (1, 2), (5,), (3,)]
nan_x = x.clone()
nan_x[1, 2] = float("nan")
inf_docs = docs.clone()
inf_docs[0, 0] = float("inf")
zero_docs = docs.clone()
zero_docs[2] = 0.0

ERRORS = {
    "query 1-D": (lambda: query_document_metrics(x[0], docs, rel), "query_embeddings must be 2-D"),
    "query int": (lambda: query_document_metrics(x.long(), docs, rel), "query_embeddings must be a floating"),
    "query list": (lambda: query_document_metrics(x.tolist(), docs, rel), "query_embeddings must be a torch.Tensor"),
    "no queries": (lambda: query_document_metrics(x[:0], docs, []), "query_embeddings must have at least 1 row"),
    "feature mismatch": (lambda: query_document_metrics(x, randn(1, 6, 4), rel), "must have 3 features"),
    "dtype mismatch": (lambda: query_document_metrics(x, docs.float(), rel), "has dtype torch.float32 but"),
    "device mismatch": (lambda: query_document_metrics(x, docs.to("meta"), rel), "document_embeddings is on meta"),
    "query nan": (lambda: query_document_metrics(nan_x, docs, rel), "query_embeddings contains 1 non-finite"),
    "docs inf": (lambda: query_document_metrics(x, inf_docs, rel), "document_embeddings contains 1 non-finite"),
    "zero row cosine": (lambda: query_document_metrics(x, zero_docs, rel), r"1 all-zero row\(s\) \(first: row 2\)"),
    "empty relevance": (
        lambda: query_document_metrics(x, docs, [(0,), (), (5,), ()]),
        r"2 have none \(first: query 1\)",
    ),
    "id too large": (
        lambda: query_document_metrics(x, docs, [(0,), (1, 6), (5,), (3,)]),
        r"\[0, 6\).*query 1 has id 6",
    ),
    "id negative": (lambda: query_document_metrics(x, docs, [(0,), (1,), (-1,), (3,)]), "query 2 has id -1"),
    "id repeated": (lambda: query_document_metrics(x, docs, [(0,), (1, 1), (5,), (3,)]), "query 1 repeats 1"),
    "id float": (lambda: query_document_metrics(x, docs, [(0,), (1.0,), (5,), (3,)]), "integer document ids"),
    "id tensor float": (lambda: query_document_metrics(x, docs, [torch.zeros(1)] * 4), "integer document ids"),
    "too few entries": (lambda: query_document_metrics(x, docs, rel[:3]), "4 queries but 3 relevance entries"),
    "relevance str": (lambda: query_document_metrics(x, docs, ["0", "1", "2", "3"]), r"relevant\[0\] must be a seq"),
    "relevance tensor": (lambda: query_document_metrics(x, docs, torch.zeros(4, 1)), "relevant must be a sequence"),
    "csr offsets": (
        lambda: query_document_metrics(x, docs, Relevance(torch.tensor([1, 1, 2, 3, 4]), torch.arange(4))),
        "must start at 0",
    ),
    "csr decreasing": (
        lambda: query_document_metrics(x, docs, Relevance(torch.tensor([0, 2, 1, 3, 4]), torch.arange(4))),
        "non-decreasing",
    ),
    "k float": (lambda: query_document_metrics(x, docs, rel, ks=(1.5,)), "ks entries must be an int"),
    "k zero": (lambda: query_document_metrics(x, docs, rel, ks=(0,)), "ks entries must be >= 1"),
    "ks empty": (lambda: query_document_metrics(x, docs, rel, ks=()), "ks must contain at least one k"),
    "ks int": (lambda: query_document_metrics(x, docs, rel, ks=5), "ks must be a sequence of ints"),
    "cutoff": (lambda: query_document_metrics(x, docs, rel, cutoff=0), "cutoff must be >= 1"),
    "similarity": (lambda: query_document_metrics(x, docs, rel, similarity="l2"), "similarity must be one of"),
    "chunk": (lambda: query_document_metrics(x, docs, rel, chunk_size=0), "chunk_size must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors(case):
    call, message = ERRORS[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_k_and_cutoff_beyond_the_corpus_cover_the_whole_ranking():
    result = query_document_metrics(x, docs, rel, ks=(6, 7, 100), cutoff=100)
    assert result["recall@7"] == result["recall@100"] == result["recall_fraction@100"] == 1.0
    assert result == pytest.approx(reference(x, docs, rel, (6, 7, 100), cutoff=100), abs=1e-12)


def test_zero_rows_are_allowed_for_dot_product():
    result = query_document_metrics(x, zero_docs, rel, similarity="dot")
    assert result == pytest.approx(reference(x, zero_docs, rel, (1, 10), similarity="dot"))
