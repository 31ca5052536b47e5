"""Training on what `negkit mine` wrote: the retrieval task's `mined-file` strategy reads the ids files, matches
them to its queries and documents by text, and trains with them as extra negatives."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from negkit.data.files import load_pairs_file
from negkit.data.text import normalise_text
from negkit.io import read_json
from negkit.mining import mine
from negkit.tasks.retrieval import mined_file_negatives
from negkit.train.config import ConfigError, build_config, load_config
from negkit.train.runner import prepare_run_dir, run_experiment

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """The example pairs (without the extra corpus), random vectors for every text, and `negkit mine` on them."""
    root = tmp_path_factory.mktemp("mined")
    shutil.copy(EXAMPLES / "pairs.jsonl", root / "pairs.jsonl")
    data = load_pairs_file(root / "pairs.jsonl", query="question", positive="answer")
    generator = np.random.default_rng(0)
    vectors = {text: generator.normal(size=16).astype(np.float32) for text in [*data.queries, *data.documents]}
    np.save(root / "queries.npy", np.stack([vectors[text] for text in dict.fromkeys(data.queries)]))
    np.save(root / "documents.npy", np.stack([vectors[text] for text in data.documents]))
    texts = sorted(vectors)
    np.savez(root / "vectors.npz", text=np.array(texts), embedding=np.stack([vectors[t] for t in texts]))
    mine(
        root / "pairs.jsonl",
        root / "out",
        query="question",
        positive="answer",
        query_embeddings=root / "queries.npy",
        corpus_embeddings=root / "documents.npy",
        k=3,
        range_max=40,
        sampling="random",
        format="ids",
        on_short="keep",
    )
    return root, data


def test_the_ids_files_map_to_the_task_s_queries_and_documents(mined):
    root, data = mined
    negatives = mined_file_negatives(data, root / "out")
    assert negatives.shape == (data.num_queries, 3) and (negatives >= 0).any()
    import pyarrow.parquet as pq

    documents = pq.read_table(root / "out" / "documents.parquet").to_pydict()
    text_of = dict(zip(documents["id"], documents["text"], strict=True))
    rows = [row for shard in sorted((root / "out").glob("ids-*.parquet")) for row in pq.read_table(shard).to_pylist()]
    assert rows
    for row in rows:  # an independent lookup by text
        i = data.queries.index(normalise_text(row["query"]))
        expected = [data.documents.index(normalise_text(text_of[name])) for name in row["negative_ids"]]
        assert negatives[i, : len(expected)].tolist() == expected
        assert not set(expected) & set(data.relevant[i])  # mining never returns a known positive


def config(root, **retrieval):
    return {
        "task": "retrieval",
        "strategies": ["in-batch", "mined-file:k=3"],
        "data": {
            "train": str(root / "pairs.jsonl"),
            "query": "question",
            "positive": "answer",
            "embeddings": str(root / "vectors.npz"),
        },
        "train": {"epochs": 2, "batch_size": 32, "warmup_epochs": 0},
        "retrieval": {"negatives": str(root / "out"), **retrieval},
    }


def test_training_on_mined_negatives_runs_and_measures_their_false_negative_rate(mined, tmp_path):
    root, _ = mined
    paths, settings = prepare_run_dir(tmp_path / "run", build_config(config(root)))
    metrics = run_experiment(paths, settings)
    history = read_json(paths.result("mined-file:k=3"))["history"]
    in_batch = read_json(paths.result("in-batch"))["history"]
    assert all(
        row["candidates"] > in_batch_row["candidates"] for row, in_batch_row in zip(history, in_batch, strict=True)
    )
    assert metrics["strategies"]["mined-file:k=3"]["false_negative_rate"] == 0.0  # mine drops known positives
    assert 0 <= metrics["strategies"]["mined-file:k=3"]["recall@1"] <= 1


def test_the_folder_is_resolved_from_the_config_and_required(mined, tmp_path):
    root, _ = mined
    body = config(root)
    (tmp_path / "study.toml").write_text(
        'task = "retrieval"\nstrategies = ["mined-file"]\n[data]\n'
        + "".join(f'{key} = "{value}"\n' for key, value in body["data"].items())
        + '[retrieval]\nnegatives = "mined"\n'
    )
    assert load_config(tmp_path / "study.toml").retrieval.negatives == str((tmp_path / "mined").resolve())
    without = {**config(root), "retrieval": {}}
    with pytest.raises(ConfigError, match=r"retrieval\.negatives: the mined-file strategy needs"):
        build_config(without)


def test_a_folder_that_is_not_mining_output_is_named(mined, tmp_path):
    root, data = mined
    from negkit.data import DataFileError

    with pytest.raises(DataFileError, match="no ids-"):
        mined_file_negatives(data, tmp_path)
    other = load_pairs_file(EXAMPLES / "pairs.jsonl", query="question", positive="answer")
    smaller = type(other)(
        "small", other.queries[:5], other.documents[:1] + [d for d in other.documents[1:2]], [(0,)] * 5, [""] * 5
    )
    with pytest.raises(DataFileError, match="is not in the corpus"):
        mined_file_negatives(smaller, root / "out")
    assert torch.is_tensor(mined_file_negatives(data, root / "out"))
    assert json.loads((root / "out" / "manifest.json").read_text())
