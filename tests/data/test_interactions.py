"""MovieLens-100k from the recbole wheel: the leave-last-out split and hidden known false negatives, checked
against an independent pass over the raw file."""

import csv
import math
from collections import defaultdict

import pytest
import torch

from negkit.data.interactions import load_interactions, load_movielens100k
from negkit.data.sources import package_dir


@pytest.fixture(scope="module")
def raw_rows():
    path = package_dir("recbole") / "dataset_example" / "ml-100k" / "ml-100k.inter"
    with path.open(encoding="latin-1") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    return [(int(u), int(i), float(t)) for u, i, _, t in rows]


@pytest.fixture(scope="module")
def data():
    return load_movielens100k()


def test_counts_match_the_published_dataset(data):
    assert (data.num_users, data.num_items) == (943, 1682)
    assert len(data.train_users) + data.num_users == 100_000
    assert data.known.sum() == 100_000  # no duplicate (user, item) pair in ML-100k
    assert data.item_features.shape == (1682, 19) and data.user_features.shape == (943, 3)


def test_the_test_item_is_each_users_latest_interaction(data, raw_rows):
    by_user = defaultdict(list)
    for position, (user, item, time) in enumerate(raw_rows):
        by_user[user].append((time, position, item))
    for user, events in by_user.items():
        latest_time = max(t for t, _, _ in events)
        last_item = max(e for e in events if e[0] == latest_time)[2]  # ties: the last row in the file
        assert int(data.test_items[user - 1]) + 1 == last_item  # ids are dense, ML ids start at 1


def test_training_never_contains_a_test_item_and_is_in_time_order(data, raw_rows):
    assert not data.train_matrix()[torch.arange(943), data.test_items].any()
    times = {(u - 1, i - 1): t for u, i, t in raw_rows}
    train_times = [times[(int(u), int(i))] for u, i in zip(data.train_users, data.train_items, strict=True)]
    assert train_times == sorted(train_times)


def test_hidden_interactions_leave_training_but_stay_known(data):
    hidden = load_movielens100k(hide_fraction=0.5, seed=3)
    train = hidden.train_matrix()
    assert not train[hidden.hidden_users, hidden.hidden_items].any()
    assert hidden.known[hidden.hidden_users, hidden.hidden_items].all()
    assert torch.equal(hidden.known, data.known) and torch.equal(hidden.test_items, data.test_items)
    assert len(hidden.train_users) + len(hidden.hidden_users) == len(data.train_users)
    per_user = torch.bincount(hidden.train_users, minlength=943)
    assert per_user.min() >= 1
    share = len(hidden.hidden_users) / len(data.train_users)
    assert abs(share - 0.5) < 0.01
    other_seed = load_movielens100k(hide_fraction=0.5, seed=4)
    assert not torch.equal(other_seed.hidden_items, hidden.hidden_items)


def test_known_false_negative_rate_equals_a_loop_over_users():
    data = load_movielens100k(hide_fraction=0.25)
    train = data.train_matrix()
    total, weight = 0.0, 0
    for user in range(data.num_users):
        n_train = int(train[user].sum())
        unrated = data.num_items - n_train
        known_unrated = int((data.known[user] & ~train[user]).sum())
        total += n_train * known_unrated / unrated
        weight += n_train
    assert math.isclose(data.known_false_negative_rate(), total / weight, rel_tol=1e-12)
    assert load_movielens100k().known_false_negative_rate() < data.known_false_negative_rate()


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="hide_fraction"):
        load_movielens100k(hide_fraction=1.0)
    with pytest.raises(ValueError, match="unknown interaction dataset 'ml-1m'"):
        load_interactions("ml-1m")
