"""MPerClassSampler and NoDuplicatesBatchSampler: the promised batch structure (property-based), coverage of each
epoch, seeds, length, resuming mid-epoch from ``state_dict``, DataLoader use and the errors."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from negkit.data import MPerClassSampler, NoDuplicatesBatchSampler
from negkit.data.text import duplicate_free_batches

# ------------------------------------------------------------------------------------------------ M per class

class_sizes = st.lists(st.integers(1, 12), min_size=1, max_size=8)


@st.composite
def m_per_class_setup(draw):
    sizes = draw(class_sizes)
    m = draw(st.integers(1, 4))
    per_batch = draw(st.integers(1, len(sizes)))
    labels = [c for c, size in enumerate(sizes) for _ in range(size)]
    order = draw(st.permutations(range(len(labels))))
    labels = [labels[i] for i in order]  # classes interleaved in the dataset
    return labels, m, m * per_batch, draw(st.integers(0, 2**31 - 1))


@given(m_per_class_setup())
@settings(max_examples=60, deadline=None)
def test_m_per_class_structure_coverage_and_length(setup):
    labels, m, batch_size, seed = setup
    sampler = MPerClassSampler(labels, m, batch_size, seed=seed)
    sizes = Counter(labels)
    groups = {c: math.ceil(n / m) for c, n in sizes.items()}
    per_batch = batch_size // m
    expected_len = max(math.ceil(sum(groups.values()) / per_batch), max(groups.values()))
    for _ in range(2):  # two epochs
        batches = list(sampler)
        assert len(batches) == expected_len
        for batch in batches:
            assert len(batch) == batch_size
            counts = Counter(labels[i] for i in batch)
            assert len(counts) == per_batch and set(counts.values()) == {m}
            for c in counts:  # an example repeats inside a batch only when its class is smaller than m
                if sizes[c] >= m:
                    assert len({i for i in batch if labels[i] == c}) == m
        seen = Counter(i for batch in batches for i in batch)
        assert set(seen) == set(range(len(labels)))  # every example at least once per epoch
    assert len(sampler) == expected_len


def test_m_per_class_each_example_exactly_once_when_balanced():
    labels = torch.arange(10).repeat_interleave(12)  # 10 classes × 12, m = 4: 30 groups, 5 per batch
    sampler = MPerClassSampler(labels, 4, 20, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6
    assert sorted(i for batch in batches for i in batch) == list(range(120))


def test_m_per_class_small_classes_cycle_and_dominant_class_is_completed():
    labels = [0] * 20 + [1, 2, 3]  # class 0 holds 10 of 13 groups (m=2): it sets the length
    sampler = MPerClassSampler(labels, 2, 4, seed=0)
    batches = list(sampler)
    assert len(batches) == 10
    assert all(sum(labels[i] == 0 for i in batch) == 2 for batch in batches)
    for batch in batches:  # the other half is a one-example class, repeated
        other = [i for i in batch if labels[i] != 0]
        assert len(other) == 2 and other[0] == other[1]


def test_m_per_class_seeds_and_epochs():
    labels = torch.arange(5).repeat(8)
    first = MPerClassSampler(labels, 2, 6, seed=7).batches(0)
    assert MPerClassSampler(labels, 2, 6, seed=7).batches(0) == first
    assert MPerClassSampler(labels, 2, 6, seed=8).batches(0) != first
    external = MPerClassSampler(labels, 2, 6, seed=0).epoch_batches(torch.Generator().manual_seed(7))
    assert [b.tolist() for b in external] == first  # the same rule, drawn with a caller's generator
    sampler = MPerClassSampler(labels, 2, 6, seed=7)
    assert list(sampler) == first and sampler.epoch == 1  # exhausting an epoch moves to the next
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_m_per_class_errors():
    with pytest.raises(ValueError, match=r"batch_size \(6\) must be a multiple of m \(4\)"):
        MPerClassSampler([0, 1, 2], 4, 6)
    with pytest.raises(ValueError, match="3 classes per batch, but labels hold only 2 classes"):
        MPerClassSampler([0, 0, 1, 1], 2, 6)
    with pytest.raises(ValueError, match="labels is empty"):
        MPerClassSampler([], 1, 1)
    with pytest.raises(ValueError, match="m must be >= 1"):
        MPerClassSampler([0, 1], 0, 2)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        MPerClassSampler(torch.zeros(4), 1, 1)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        MPerClassSampler([0, 1], 1, 1, seed=-1)


# --------------------------------------------------------------------------------------------- no duplicates

key_lists = st.lists(st.sets(st.integers(0, 12), min_size=1, max_size=3), min_size=1, max_size=50)


def keys_of(entry):
    return {entry} if isinstance(entry, str) else set(entry)


@given(keys=key_lists, batch_size=st.integers(1, 8), seed=st.integers(0, 2**31 - 1), data=st.data())
@settings(max_examples=60, deadline=None)
def test_no_duplicates_structure_coverage_and_length(keys, batch_size, seed, data):
    indices = data.draw(st.lists(st.integers(0, len(keys) - 1), unique=True, min_size=1))
    sampler = NoDuplicatesBatchSampler(keys, batch_size, indices=indices, seed=seed)
    for epoch in range(2):
        expected = len(sampler)
        batches = list(sampler)
        assert len(batches) == expected
        assert sorted(i for batch in batches for i in batch) == sorted(indices)  # each index once per epoch
        for batch in batches:
            assert 1 <= len(batch) <= batch_size
            shared = Counter(key for i in batch for key in keys_of(keys[i]))
            assert max(shared.values()) == 1
        assert sampler.epoch == epoch + 1
    dropped = NoDuplicatesBatchSampler(keys, batch_size, indices=indices, seed=seed, drop_last=True)
    full = [b for b in NoDuplicatesBatchSampler(keys, batch_size, indices=indices, seed=seed).batches(0)]
    assert dropped.batches(0) == [b for b in full if len(b) == batch_size]


def test_no_duplicates_is_duplicate_free_batches_with_the_epoch_generator():
    keys = ["a", "b", "a", "c", "a", "d", "b"]
    sampler = NoDuplicatesBatchSampler(keys, 3, seed=5)
    for epoch in (0, 1, 4):
        packed = duplicate_free_batches(range(7), keys, 3, torch.Generator().manual_seed(5 + epoch))
        assert sampler.batches(epoch) == [b.tolist() for b in packed]
    external = sampler.epoch_batches(torch.Generator().manual_seed(11))
    assert all(b.dtype == torch.int64 for b in external)
    packed = duplicate_free_batches(range(7), keys, 3, torch.Generator().manual_seed(11))
    assert [b.tolist() for b in external] == [b.tolist() for b in packed]
    assert sampler.epoch == 0 and sampler.position == 0


def test_no_duplicates_by_columns_compares_values_across_columns():
    # row 1's positive is row 0's anchor text; rows 2 and 3 share a positive; row 4 shares nothing
    columns = {"anchor": ["q0", "q1", "q2", "q3", "q4"], "positive": ["d0", "q0", "d2", "d2", "d4"]}
    sampler = NoDuplicatesBatchSampler(columns, 5, seed=0)
    for epoch in range(5):
        for batch in sampler.batches(epoch):
            assert not {0, 1} <= set(batch) and not {2, 3} <= set(batch)
        assert sorted(itertools.chain(*sampler.batches(epoch))) == list(range(5))
    by_id = NoDuplicatesBatchSampler({"anchor_id": [0, 1, 2], "positive_id": [10, 11, 10]}, 3)
    assert all(not {0, 2} <= set(batch) for batch in by_id.batches(0))


def test_no_duplicates_errors():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        NoDuplicatesBatchSampler(["a"], 0)
    with pytest.raises(ValueError, match="same length"):
        NoDuplicatesBatchSampler({"anchor": ["a", "b"], "positive": ["c"]}, 2)
    with pytest.raises(ValueError, match="empty mapping"):
        NoDuplicatesBatchSampler({}, 2)
    with pytest.raises(ValueError, match=r"query_ids must lie in \[0, 2\)"):
        NoDuplicatesBatchSampler(["a", "b"], 2, indices=[0, 2])


# ------------------------------------------------------------------------------------------ resume, DataLoader


def make(kind: str, seed: int):
    if kind == "m-per-class":
        return MPerClassSampler(torch.arange(6).repeat(7), 3, 9, seed=seed)
    keys = [f"t{i % 13}" for i in range(40)]
    return NoDuplicatesBatchSampler(keys, 4, seed=seed)


@pytest.mark.parametrize("kind", ["m-per-class", "no-duplicates"])
@given(stop_epoch=st.integers(0, 2), where=st.floats(0, 1, exclude_max=True), seed=st.integers(0, 1000))
@settings(max_examples=15, deadline=None)
def test_resume_from_state_dict_equals_an_uninterrupted_run(kind, stop_epoch, where, seed):
    epochs = 3
    uninterrupted = []
    sampler = make(kind, seed)
    stop_step = int(where * len(sampler.batches(stop_epoch)))  # a step inside that epoch
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        uninterrupted += list(sampler)

    first = make(kind, seed)
    seen, state = [], None
    for epoch in range(epochs):
        first.set_epoch(epoch)
        for step, batch in enumerate(first):
            if (epoch, step) == (stop_epoch, stop_step):
                state = dict(first.state_dict())  # saved before this batch is used: position = step
                break
            seen.append(batch)
        if state is not None:
            break
    assert state is not None
    assert state["position"] == stop_step + 1  # the generator had handed out this batch already
    state["position"] -= 1  # the loop checkpoints the steps it took
    resumed = make(kind, seed)
    resumed.load_state_dict(state)
    for epoch in range(state["epoch"], epochs):
        resumed.set_epoch(epoch)  # a resumed loop calls set_epoch again: the position is kept
        seen += list(resumed)
    assert seen == uninterrupted


def test_state_dict_errors():
    sampler = make("no-duplicates", 0)
    with pytest.raises(ValueError, match="saved with seed 1"):
        sampler.load_state_dict({"seed": 1, "epoch": 0, "position": 0})
    with pytest.raises(ValueError, match="past the"):
        sampler.load_state_dict({"epoch": 0, "position": 10_000})
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        sampler.set_epoch(-1)


@pytest.mark.parametrize("kind", ["m-per-class", "no-duplicates"])
def test_a_dataloader_takes_them(kind):
    sampler = make(kind, 0)
    n = 42 if kind == "m-per-class" else 40
    dataset = TensorDataset(torch.arange(n))
    loader = DataLoader(dataset, batch_sampler=sampler)
    assert len(loader) == len(sampler)
    expected = sampler.batches(0)
    got = [batch[0].tolist() for batch in loader]
    assert got == expected and sampler.epoch == 1


# --------------------------------------------------------------------------------------- the contrastive task


def test_the_contrastive_task_draws_m_per_class_batches():
    from negkit.tasks import get_task
    from negkit.train.config import ConfigError, build_config

    data = {
        "dataset": "digits",
        "strategies": ["supcon"],
        "train": {"epochs": 1, "batch_size": 40, "hidden_dim": 16, "feature_dim": 8, "projection_dim": 8},
        "batches": {"sampler": "m-per-class", "m": 4},
    }
    task = get_task("contrastive")(build_config(data))
    task.load()
    trainee = task.build("supcon")
    labels = task.data.train_y
    sizes = torch.bincount(labels)
    expected = max(math.ceil(int(((sizes + 3) // 4).sum()) / 10), int(((sizes + 3) // 4).max()))
    assert task.steps_per_epoch(trainee) == expected
    batches = list(task.batches(trainee, torch.Generator().manual_seed(0)))
    assert len(batches) == expected
    seen = set()
    for x, y, index in batches:
        assert torch.equal(y, labels[index]) and torch.equal(x, task.data.train_x[index])
        assert sorted(torch.bincount(y, minlength=10).tolist()) == [4] * 10
        seen |= set(index.tolist())
    assert seen == set(range(len(labels)))
    plain = get_task("contrastive")(build_config({**data, "batches": {}}))
    plain.load()
    assert plain.steps_per_epoch(plain.build("supcon")) == len(labels) // 40
    with pytest.raises(ConfigError, match=r"batches.m: train.batch_size \(40\) must be a multiple of m \(3\)"):
        build_config({**data, "batches": {"sampler": "m-per-class", "m": 3}})
    with pytest.raises(ConfigError, match=r"batches\.sampler"):
        build_config({**data, "batches": {"sampler": "balanced"}})
