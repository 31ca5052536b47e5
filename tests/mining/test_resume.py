"""A run killed mid-encoding or mid-search resumes without redoing finished shards or blocks, and its files are
byte-identical to those of an uninterrupted run; a run folder in the way is a clear error."""

import pytest

from negkit.mining import MiningError, mine

from .conftest import EXAMPLE, PAIRS, output_bytes


class KilledError(Exception):
    """What the callback raises to simulate a kill."""


def settings(model, tmp_path, **extra):
    return {
        **EXAMPLE,
        "model": model,
        "max_seq_length": 64,
        "k": 3,
        "shard_size": 100,
        "query_block": 64,
        "sampling": "hardness",
        "range_max": 12,
        "seed": 7,
        "cache_dir": str(tmp_path / "cache"),
        **extra,
    }


def recorder(kill_stage=None, kill_at=None):
    calls = []

    def callback(stage, done, total):
        calls.append((stage, done, total))
        if stage == kill_stage and done == kill_at:
            raise KilledError(f"{stage} {done}/{total}")

    return calls, callback


@pytest.fixture
def uninterrupted(tmp_path, tiny_model):
    options = settings(tiny_model, tmp_path / "clean")
    return output_bytes(mine(PAIRS, tmp_path / "clean", **options).out)


@pytest.mark.parametrize(("stage", "at"), [("encode-documents", 3), ("search", 3)])
def test_killed_run_resumes_to_the_same_bytes(tmp_path, tiny_model, uninterrupted, stage, at):
    options = settings(tiny_model, tmp_path / "killed")
    _, callback = recorder(stage, at)
    with pytest.raises(KilledError):
        mine(PAIRS, tmp_path / "killed", callback=callback, **options)
    assert not (tmp_path / "killed" / "manifest.json").exists()

    calls, callback = recorder()
    result = mine(PAIRS, tmp_path / "killed", resume=True, callback=callback, **options)
    resumed = [(done, total) for s, done, total in calls if s == stage]
    total = resumed[-1][1]
    # only what was not finished is redone: the first new shard/block is number at + 1
    assert resumed[0][0] == at + 1 and len(resumed) == total - at
    assert output_bytes(result.out) == uninterrupted


def test_embeddings_are_cached_across_runs(tmp_path, tiny_model):
    options = settings(tiny_model, tmp_path)
    mine(PAIRS, tmp_path / "first", **options)
    calls, callback = recorder()
    mine(PAIRS, tmp_path / "second", callback=callback, **options)
    encoded = [c for c in calls if c[0].startswith("encode")]
    assert encoded == [("encode-documents", 9, 9), ("encode-queries", 4, 4)]  # found whole in the cache


def test_a_run_folder_in_the_way(tmp_path, tiny_model):
    options = settings(tiny_model, tmp_path)
    out = tmp_path / "run"
    mine(PAIRS, out, **options)
    with pytest.raises(MiningError, match="holds a mining run already; pass --resume"):
        mine(PAIRS, out, **options)
    with pytest.raises(MiningError, match=r"different settings \(index\)"):
        mine(PAIRS, out, resume=True, **{**options, "index": "exact"})
    # the filters and the sampling may change on resume: the saved search is reused
    changed = mine(PAIRS, out, resume=True, **{**options, "k": 2, "sampling": "top"})
    assert changed.stats["written"]["queries"] > 0
    again = mine(PAIRS, out, force=True, **options)
    assert again.stats["optimal_k"]["k_used"] == 3
