"""Fixtures of the mining tests: a tiny randomly initialised sentence-transformers model and cross-encoder (built
once per session in a temporary folder, seconds to encode the example), small hand-made pairs, and a private
embedding cache per test."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"
PAIRS, DOCS = EXAMPLES / "pairs.jsonl", EXAMPLES / "docs.jsonl"
EXAMPLE = {"query": "question", "positive": "answer", "corpus": str(DOCS)}


def _vocabulary() -> list[str]:
    words: set[str] = set()
    for path in (PAIRS, DOCS):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            for value in record.values():
                for text in value if isinstance(value, list) else [value]:
                    words.update(re.findall(r"\w+", str(text).lower()))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]


def _bert(folder: Path, num_labels: int | None) -> None:
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = _vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    options = {"num_labels": num_labels} if num_labels else {}
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
        **options,
    )
    model = BertForSequenceClassification(config) if num_labels else BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 1-layer, 32-dimensional BERT + mean pooling saved as a sentence-transformers folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    root = tmp_path_factory.mktemp("tiny")
    _bert(root / "bert", None)
    model = SentenceTransformer(
        modules=[Transformer(str(root / "bert"), max_seq_length=64), Pooling(32, "mean")], device="cpu"
    )
    model.save(str(root / "st"))
    return str(root / "st")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> str:
    """A randomly initialised 1-layer BERT cross-encoder (one output) saved to a folder."""
    root = tmp_path_factory.mktemp("tiny_ce")
    _bert(root / "ce", 1)
    return str(root / "ce")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test encodes into its own cache (never ~/.cache)."""
    monkeypatch.setenv("NEGKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def hand_made(tmp_path: Path, queries: np.ndarray, documents: np.ndarray, positives: list[list[int]]):
    """Pairs + corpus + embeddings files for hand-made vectors: query i is ``q{i}``, document j is ``d{j}`` (corpus
    id ``id{j}``), query i's positives are the documents ``positives[i]``."""
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"query": f"q{i}", "positive": [f"d{j}" for j in docs]} for i, docs in enumerate(positives)],
    )
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": f"id{j}", "text": f"d{j}"} for j in range(len(documents))])
    np.save(tmp_path / "q.npy", np.asarray(queries, dtype=np.float32))
    np.save(tmp_path / "d.npy", np.asarray(documents, dtype=np.float32))
    return {
        "pairs": pairs,
        "corpus": str(corpus),
        "query_embeddings": str(tmp_path / "q.npy"),
        "corpus_embeddings": str(tmp_path / "d.npy"),
    }


def read_ids(out: Path):
    import pandas as pd

    return pd.concat([pd.read_parquet(p) for p in sorted(out.glob("ids-*.parquet"))], ignore_index=True)


def output_bytes(out: Path) -> dict[str, bytes]:
    """Every output file (not the report or stats, which hold times) by name."""
    names = [p for p in sorted(out.iterdir()) if p.is_file() and p.name not in ("report.md", "stats.json")]
    return {p.name: p.read_bytes() for p in names}
