"""The output formats on the shipped example (tiny encoder): sentence-transformers n-tuples and triplets,
FlagEmbedding JSONL, the ids record and documents table, shards, and a manifest whose hashes match the files."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from negkit.mining import mine
from negkit.mining.inputs import load_mining_input

from .conftest import EXAMPLE, PAIRS, read_ids


@pytest.fixture
def run(tmp_path, tiny_model):
    def go(name, **options):
        settings = {**EXAMPLE, "model": tiny_model, "max_seq_length": 64, "k": 3, "recall_sample": 0, **options}
        return mine(PAIRS, tmp_path / name, **settings)

    return go


def check_manifest(out):
    manifest = json.loads((out / "manifest.json").read_text())
    listed = [f for files in manifest["files"].values() for f in files]
    for entry in listed:
        assert hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind
    return manifest


def test_sentence_transformers_n_tuples_and_ids(run, tmp_path):
    result = run("st", shard_rows=200)
    out = result.out
    manifest = check_manifest(out)
    train = pd.concat([pd.read_parquet(out / f["path"]) for f in manifest["files"]["train"]], ignore_index=True)
    assert list(train.columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert len(manifest["files"]["train"]) == -(-len(train) // 200)  # sharded by 200 rows
    data = load_mining_input(PAIRS, query="question", positive="answer", corpus=EXAMPLE["corpus"])
    ids = read_ids(out)
    # one n-tuple per (query, positive) for every query written
    assert len(train) == sum(len(data.positive_texts[q]) for q in ids.query_id)
    positives = {q: set(data.positive_texts[q]) for q in range(data.num_queries)}
    for row in train.itertuples(index=False):
        negatives = [row.negative_1, row.negative_2, row.negative_3]
        assert row.positive in positives[data.queries.index(row.anchor)]
        assert not set(negatives) & positives[data.queries.index(row.anchor)]
    # the ids record: scores best first, ranks, ids resolvable through documents.parquet
    documents = pd.read_parquet(out / "documents.parquet").set_index("id")["text"]
    for row in ids.itertuples(index=False):
        assert list(row.negative_scores) == sorted(row.negative_scores, reverse=True)
        assert row.negative_log_weights is None
        assert [documents[i] for i in row.positive_ids] == data.positive_texts[row.query_id]
        assert not set(row.negative_ids) & {data.document_ids[j] for j in data.positives[row.query_id]}
    assert manifest["queries_written"] == len(ids) == result.stats["written"]["queries"]
    assert (out / "report.md").read_text().startswith("# Mined hard negatives")
    assert (out / "plots" / "scores.png").is_file()


def test_triplets_and_flagembedding(run):
    triplets = run("triplets", triplets=True).out
    table = pd.read_parquet(triplets / "train-00000.parquet")
    assert list(table.columns) == ["anchor", "positive", "negative"]
    ids = read_ids(triplets)
    assert len(table) == sum(len(r.negative_ids) for r in ids.itertuples()) + sum(
        (len(r.positive_ids) - 1) * len(r.negative_ids) for r in ids.itertuples()
    )

    flag = run("flag", format="flagembedding", sampling="hardness", range_max=20).out
    check_manifest(flag)
    lines = [json.loads(line) for line in (flag / "train-00000.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"query", "pos", "neg", "pos_scores", "neg_scores", "neg_log_weights"}
    for line in lines:
        assert len(line["neg"]) == len(line["neg_scores"]) == len(line["neg_log_weights"]) == 3
        assert len(line["pos"]) == len(line["pos_scores"])
        assert all(np.isfinite(line["neg_log_weights"]))


def test_ids_format_writes_no_training_file_and_keep_short_queries(run):
    probe = read_ids(run("probe", format="ids", k=4, range_max=8).out)
    median = float(np.median(np.concatenate(probe.negative_scores.tolist())))
    out = run("ids", format="ids", k=4, max_score=median, on_short="keep", range_max=8).out
    manifest = check_manifest(out)
    assert set(manifest["files"]) == {"ids", "documents"} and not list(out.glob("train-*"))
    ids = read_ids(out)
    assert manifest["queries_short_written"] > 0
    assert (ids.negative_ids.map(len) < 4).sum() == manifest["queries_short_written"]
    n_tuple = run("tuples", k=4, max_score=median, on_short="keep", range_max=8)
    assert n_tuple.stats["short"]["not_tuples"] == manifest["queries_short_written"]  # cannot be n-tuples


def test_n_tuples_load_as_a_datasets_dataset(run):
    datasets = pytest.importorskip("datasets")
    out = run("load", shard_rows=100).out
    loaded = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in out.glob("train-*.parquet")))
    assert loaded["train"].column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]


def test_float16_cache_keeps_the_float32_choice(run, private_cache):
    full = read_ids(run("f32", format="ids").out)
    half = read_ids(run("f16", format="ids", float16=True).out)
    caches = sorted(private_cache.glob("mining/documents-*/embeddings.npy"))
    assert sorted(np.load(p, mmap_mode="r").dtype.name for p in caches) == ["float16", "float32"]
    same = [len(set(a) & set(b)) / 3 for a, b in zip(full.negative_ids, half.negative_ids, strict=True)]
    assert np.mean(same) > 0.8  # the tiny random encoder has many near-ties that float16 reorders
    np.testing.assert_allclose(
        np.concatenate(full.negative_scores.tolist()), np.concatenate(half.negative_scores.tolist()), atol=5e-3
    )


def test_csv_lists_repeated_rows_and_a_hugging_face_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    queries, documents = rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
    rows = [("q0", '["d0", "d1"]'), ("q1", "d2"), ("q1", "d3"), ("q2", "d4")]
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame(rows, columns=["question", "answer"]).to_csv(pairs, index=False)
    np.save(tmp_path / "q.npy", queries.astype(np.float32))
    np.save(tmp_path / "d.npy", documents[:5].astype(np.float32))  # no corpus file: one row per distinct positive
    options = {"query": "question", "positive": "answer", "k": 2, "format": "ids", "similarity": "dot"}
    options.update(query_embeddings=str(tmp_path / "q.npy"), corpus_embeddings=str(tmp_path / "d.npy"))
    table = read_ids(mine(pairs, tmp_path / "csv", **options).out)
    assert [list(p) for p in table.positive_ids] == [["pos-0", "pos-1"], ["pos-2", "pos-3"], ["pos-4"]]
    scores = queries.astype(np.float32) @ documents[:5].astype(np.float32).T  # dot: not normalised
    for row in table.itertuples():
        negatives = [int(i.removeprefix("pos-")) for i in row.negative_ids]
        np.testing.assert_allclose(row.negative_scores, scores[row.query_id, negatives], rtol=1e-5)
    folder = tmp_path / "hf"
    datasets.Dataset.from_dict(
        {"question": ["q0", "q1", "q2"], "answer": [["d0", "d1"], ["d2", "d3"], ["d4"]]}
    ).save_to_disk(folder)
    again = read_ids(mine(folder, tmp_path / "hf-out", **options).out)
    assert again.equals(table)
