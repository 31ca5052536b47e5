"""`negkit mine` on the shipped example as the README shows it (the real MiniLM), and every bad input as exit
status 2 with one line that names the problem, never a traceback."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from negkit.cli import app

from .conftest import DOCS, PAIRS, hand_made, write_jsonl

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["mine", *map(str, args)])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("error:")]
    assert len(error) == 1, result.output
    joined = " ".join(" ".join(lines[lines.index(error[0]) :]).split())
    for needle in needles:
        assert needle in joined, joined
    return joined


def test_readme_example_with_the_shipped_model(tmp_path):
    out = tmp_path / "mined"
    result = invoke(
        PAIRS, "--out", out, "--query", "question", "--positive", "answer", "--corpus", DOCS, "--k", "4",
        "--range-min", "1", "--range-max", "30", "--relative-margin", "0.05", "--sampling", "hardness",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mined" in result.output and "report:" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    train = pd.read_parquet(out / manifest["files"]["train"][0]["path"])
    assert list(train.columns) == ["anchor", "positive", *(f"negative_{i}" for i in range(1, 5))]
    assert manifest["queries_written"] > 200 and manifest["queries_written"] + manifest["queries_short"] == 400
    report = (out / "report.md").read_text()
    for heading in ("## Index", "## Filters", "## Scores", "## False negatives", "## How many negatives"):
        assert heading in report
    ids = pd.read_parquet(out / "ids-00000.parquet")
    assert ids.negative_log_weights.map(lambda w: np.isfinite(w).all()).all()  # hardness: importance weights
    # the same command again is refused; --resume redoes only the filters and sampling
    one_line_error(invoke(PAIRS, "--out", out, "--query", "question", "--positive", "answer"), "--resume")


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    return hand_made(tmp_path, rng.normal(size=(4, 6)), rng.normal(size=(12, 6)), [[0], [1], [2, 3], [4]])


def embedded(small, tmp_path, *extra, out="out"):
    return invoke(
        small["pairs"], "--out", tmp_path / out, "--corpus", small["corpus"],
        "--query-embeddings", small["query_embeddings"], "--corpus-embeddings", small["corpus_embeddings"], *extra,
    )  # fmt: skip


def test_hand_made_embeddings_work(small, tmp_path):
    result = embedded(small, tmp_path, "--k", "3", "--index", "exact", "--format", "flagembedding")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out" / "train-00000.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(len(json.loads(line)["neg"]) == 3 for line in lines)


def test_bad_files(tmp_path, small):
    missing = invoke(PAIRS, "--out", tmp_path / "a", "--query", "question", "--positive", "answers")
    one_line_error(missing, "no column 'answers'", "Did you mean 'answer'?")

    empty = write_jsonl(tmp_path / "empty.jsonl", [{"query": "a", "positive": "x"}, {"query": "  ", "positive": "y"}])
    one_line_error(invoke(empty, "--out", tmp_path / "b"), "row 2", "empty query text")

    no_positive = write_jsonl(tmp_path / "nopos.jsonl", [{"query": "a", "positive": "x"}, {"query": "b"}])
    one_line_error(invoke(no_positive, "--out", tmp_path / "c"), "row 2", "no field 'positive'")
    rows = [{"query": "a", "positive": "x"}, {"query": "b", "positive": None}]
    null_positive = write_jsonl(tmp_path / "null.jsonl", rows)
    one_line_error(invoke(null_positive, "--out", tmp_path / "c"), "row 2", "missing positive text")

    duplicate = write_jsonl(tmp_path / "dup.jsonl", [{"id": "1", "text": "x"}, {"id": "1", "text": "y"}])
    one_line_error(invoke(small["pairs"], "--out", tmp_path / "d", "--corpus", duplicate), "duplicate id '1'", "row 2")

    one_line_error(invoke(tmp_path / "nothing.jsonl", "--out", tmp_path / "e"), "file not found")


def test_bad_embeddings(tmp_path, small):
    np.save(tmp_path / "short.npy", np.zeros((11, 6), np.float32))
    small_short = {**small, "corpus_embeddings": str(tmp_path / "short.npy")}
    one_line_error(embedded(small_short, tmp_path), "has 11 rows but there are 12 texts", "corpus file row")

    np.save(tmp_path / "wide.npy", np.zeros((4, 7), np.float32))
    one_line_error(embedded({**small, "query_embeddings": str(tmp_path / "wide.npy")}, tmp_path), "dimension 7")

    bad = np.load(small["corpus_embeddings"])
    bad[5, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    nan = embedded({**small, "corpus_embeddings": str(tmp_path / "nan.npy")}, tmp_path)
    one_line_error(nan, "non-finite", "row 5 (0-based)")

    (tmp_path / "text.npy").write_text("not numpy")
    one_line_error(embedded({**small, "query_embeddings": str(tmp_path / "text.npy")}, tmp_path, out="o2"), ".npy")


def test_k_larger_than_what_is_left(tmp_path, small):
    one_line_error(embedded(small, tmp_path, "--k", "5", "--range-max", "3"), "holds 3 documents, fewer than k = 5")
    # 12 documents: a query keeps at most 11 (10 for the query with two positives)
    skipped = embedded(small, tmp_path, "--k", "11", "--range-max", "11")
    assert skipped.exit_code == 0, skipped.output
    assert "1 short of k (skip)" in skipped.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["queries_written"] == 3 and manifest["queries_short"] == 1
    assert "**1 queries had fewer than k = 11" in (tmp_path / "out" / "report.md").read_text()
    one_line_error(
        embedded(small, tmp_path, "--k", "11", "--range-max", "11", "--on-short", "error", "--force"),
        "has 10 negatives left after the filters, fewer than k = 11",
    )
    one_line_error(embedded(small, tmp_path, "--k", "12", "--range-max", "12", "--force"), "no query has k = 12")


def test_bad_options(tmp_path, small):
    one_line_error(embedded(small, tmp_path, "--index", "annoy"), "unknown index 'annoy'", "ivfpq")
    one_line_error(embedded(small, tmp_path, "--sampling", "best"), "unknown sampling 'best'")
    one_line_error(embedded(small, tmp_path, "--format", "csv"), "unknown format 'csv'")
    one_line_error(embedded(small, tmp_path, "--max-memory", "lots"), "--max-memory")
    one_line_error(embedded(small, tmp_path, "--triplets", "--format", "ids"), "triplets applies")
    one_line_error(embedded(small, tmp_path, "--range-min", "5", "--range-max", "5"), "range_max (5) must be larger")
    model = invoke(small["pairs"], "--out", tmp_path / "x", "--model", tmp_path / "no-model")
    one_line_error(model, "no-model not found")
