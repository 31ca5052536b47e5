"""Search: the chunked exact search equals brute force (ties by id), faiss flat equals it, the approximate
indexes reach a high recall on clustered data, ``auto`` picks by size and memory, and a run with an approximate
index reports its recall against exact search and reuses its saved index on resume."""

from pathlib import Path

import numpy as np
import pytest

from negkit.mining import mine
from negkit.mining.encode import NpyRows
from negkit.mining.inputs import MiningError
from negkit.mining.search import Corpus, IndexOptions, build_searcher, choose_index, recall_at_k

from .conftest import hand_made

pytest.importorskip("faiss")


def corpus_file(tmp_path, x):
    np.save(tmp_path / "corpus.npy", np.asarray(x, dtype=np.float32))
    return Corpus(NpyRows(tmp_path / "corpus.npy"), cosine=True, chunk_size=7)


def clustered(n, d, centres, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d))
    return (means[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def brute_force(queries, corpus, k):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    c = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = q @ c.T
    ids = np.stack([np.lexsort((np.arange(len(c)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, ids, axis=1), ids


def test_exact_chunked_search_equals_brute_force_with_ties_by_id(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    x[20] = x[3]  # an exact tie: the smaller id comes first
    corpus = corpus_file(tmp_path, x)
    queries = np.concatenate([x[3:4], rng.normal(size=(5, 5)).astype(np.float32)])
    scores, ids = build_searcher("exact", corpus).search(_norm(queries), 8)
    expected_scores, expected_ids = brute_force(queries, x, 8)
    assert ids[0, :2].tolist() == [3, 20]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    # more than the corpus: padded with -1 / -inf
    scores, ids = build_searcher("exact", corpus).search(_norm(queries[:2]), 60)
    assert (ids[:, 50:] == -1).all() and np.isneginf(scores[:, 50:]).all()


def _norm(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_equals_exact(tmp_path):
    x = np.random.default_rng(2).normal(size=(300, 16))
    corpus = corpus_file(tmp_path, x)
    queries = _norm(np.random.default_rng(3).normal(size=(40, 16)).astype(np.float32))
    exact = build_searcher("exact", corpus).search(queries, 10)
    flat = build_searcher("flat", corpus).search(queries, 10)
    np.testing.assert_array_equal(flat[1], exact[1])
    np.testing.assert_allclose(flat[0], exact[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_approximate_indexes_reach_high_recall(tmp_path, kind):
    x = clustered(4000, 32, 40)
    corpus = Corpus(NpyRows(_save(tmp_path, x)), cosine=True, chunk_size=1000)
    queries = _norm(clustered(100, 32, 40, seed=5))
    options = IndexOptions(nlist=32, nprobe=8, pq_m=8)
    searcher = build_searcher(kind, corpus, options=options, k=10, index_path=tmp_path / "index.faiss")
    approx = searcher.search(queries, 10)[1]
    exact = build_searcher("exact", corpus).search(queries, 10)[1]
    assert recall_at_k(approx, exact, 10) >= 0.85
    again = build_searcher(kind, corpus, options=options, k=10, index_path=tmp_path / "index.faiss", build=False)
    np.testing.assert_array_equal(again.search(queries, 10)[1], approx)  # the saved index, read back


def _save(tmp_path, x):
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path


def test_auto_choice_by_size_and_memory():
    assert choose_index("auto", 10_000, 384, 8 * 2**30)[0] == "flat"
    assert choose_index("auto", 1_000_000, 384, 8 * 2**30)[0] == "ivf"  # 1.4 GiB of vectors
    kind, why = choose_index("auto", 10_000_000, 384, 8 * 2**30)  # 14.3 GiB
    assert kind == "ivfpq" and "exceed half of --max-memory" in why
    assert choose_index("hnsw", 10, 4, 1)[0] == "hnsw"
    assert recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 3, 1]]), 3) == pytest.approx(2 / 3)


def test_a_run_with_an_approximate_index_reports_its_recall(tmp_path):
    documents = clustered(3000, 16, 30)
    queries = clustered(200, 16, 30, seed=9)
    files = hand_made(tmp_path, queries, documents, [[i] for i in range(200)])
    options = {**files, "k": 3, "index": "ivf", "index_options": IndexOptions(nlist=16, nprobe=4), "format": "ids"}
    options["recall_sample"] = 50
    pairs = options.pop("pairs")
    result = mine(pairs, tmp_path / "out", **options)
    recall = result.stats["search"]["recall"]
    assert recall["queries"] == 50 and recall["recall_at_10"] > 0.7 and recall["depth"] >= 4
    assert (tmp_path / "out" / ".work" / "index.faiss").is_file()
    assert "recall@10" in (tmp_path / "out" / "report.md").read_text()
    exact = mine(pairs, tmp_path / "exact", **{**options, "index": "exact"})
    assert "recall" not in exact.stats["search"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_scattered_rows_are_read_exactly_without_a_memory_map(tmp_path, dtype):
    """``take``: any order, repeats, runs of consecutive rows and single rows all equal the array's rows, as float32;
    the process's file-backed resident memory does not grow by the file (no map of it)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 64)).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")
    wanted = np.concatenate([[4999, 0, 0], np.arange(100, 140), rng.integers(0, 5000, 300), [1, 2, 3, 7]])
    got = rows.take(wanted)
    assert got.dtype == np.float32 and got.shape == (len(wanted), 64)
    np.testing.assert_array_equal(got, x[wanted].astype(np.float32))
    assert rows.take([]).shape == (0, 64)
    with pytest.raises(MiningError, match="row 5000 requested"):
        rows.take([3, 5000])
    with pytest.raises(MiningError, match="row -1 requested"):
        rows.take([-1])


def test_taking_rows_does_not_map_the_file_into_memory(tmp_path):
    x = np.zeros((40_000, 256), dtype=np.float32)  # 40 MB
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")

    def file_backed_kb():
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(fields["RssFile"].split()[0])

    before = file_backed_kb()
    rows.take(np.arange(0, 40_000, 7))  # a row in every 7: a memory map would fault in nearly every page
    assert file_backed_kb() - before < 4_000  # < 4 MB (a map: ~40 MB)
