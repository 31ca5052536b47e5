"""The streaming frequency estimator of Yi et al. (RecSys 2019, Algorithm 2): convergence on synthetic streams
within the tolerance its theory gives, hashing, the update rule itself, and its state."""

import copy
import math

import pytest
import torch

from negkit.negatives.frequency import StreamingFrequency

ALPHA = 0.01


def bernoulli_stream(probabilities: torch.Tensor, steps: int, seed: int = 0):
    """Each step, item j is present independently with probability p_j: its gaps are geometric(p_j)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.arange(len(probabilities))
    for _ in range(steps):
        yield ids[torch.rand(len(probabilities), generator=generator) < probabilities]


def test_converges_to_the_true_frequencies_within_the_ema_theory():
    # p from 0.05 to 0.9; every item occurs >= ~500 times (5/α), so the EMA is near its steady state
    probabilities = torch.tensor([0.9, 0.6, 0.4, 0.25, 0.15, 0.1, 0.07, 0.05], dtype=torch.float64)
    estimator = StreamingFrequency(len(probabilities), alpha=ALPHA, hashed=False)
    for ids in bernoulli_stream(probabilities, 10_000):
        estimator.update(ids)
    estimate = estimator.probability(torch.arange(len(probabilities)))
    # The gap estimate B is an EMA of geometric gaps (mean 1/p, variance (1 − p)/p²): in steady state its
    # relative standard deviation is sqrt(α(1 − p)/(2 − α)); p̂ = 1/B has the same to first order. 4.5 sd for
    # each of the 8 items (a two-sided miss probability of about 1e-5 each).
    relative_sd = torch.sqrt(ALPHA * (1 - probabilities) / (2 - ALPHA))
    relative_error = (estimate / probabilities - 1).abs()
    assert (relative_error <= 4.5 * relative_sd + 1e-12).all(), (relative_error / relative_sd).tolist()
    # and it is an estimate, not a copy: not every item is within 0.2 sd
    assert (relative_error > 0.2 * relative_sd).any()


def test_the_mean_over_many_seeds_is_unbiased():
    # independent estimators on independent streams: the mean error shrinks as 1/sqrt(runs)
    p = torch.tensor([0.3, 0.1], dtype=torch.float64)
    gaps = []
    for seed in range(30):
        estimator = StreamingFrequency(2, alpha=0.05, hashed=False)
        for ids in bernoulli_stream(p, 600, seed):
            estimator.update(ids)
        gaps.append(1 / estimator.probability(torch.arange(2)))
    gaps = torch.stack(gaps)
    # E[B] = 1/p at every step (the first gap starts it at a sample of the gap distribution, and each update
    # averages in another one); its variance is at most the gap's, (1 − p)/p²: 4 sd of the mean of 30 runs
    sd_of_mean = torch.sqrt(1 - p) / p / math.sqrt(30)
    assert ((gaps.mean(0) - 1 / p).abs() <= 4 * sd_of_mean).all()
    assert ((gaps.mean(0) - 1 / p).abs() <= 0.1 / p).all()  # within 10 % as well


def test_occurrences_per_step_with_duplicates_in_a_batch():
    # batches of 16 draws with replacement: p̂ estimates the expected count per batch, 16·q
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    estimator = StreamingFrequency(4, alpha=0.002, hashed=False)
    for _ in range(3_000):
        estimator.update(torch.multinomial(q, 16, replacement=True, generator=generator))
    estimate = estimator.probability(torch.arange(4))
    # gaps are 0 within a batch and ~1 between: relative sd of a gap ~ sqrt(16q − 1) at most 2.3; EMA factor
    # sqrt(α/(2 − α)) = 0.032: 4 sd is 0.3 of the value at worst
    torch.testing.assert_close(estimate, 16 * q, rtol=0.3, atol=0)
    assert torch.argsort(estimate, descending=True).tolist() == [0, 1, 2, 3]


def test_the_update_rule_step_by_step():
    estimator = StreamingFrequency(5, alpha=0.5, hashed=False)
    estimator.update(torch.tensor([1]))  # step 1: item 1's first gap is 1
    estimator.update(torch.tensor([2]))  # step 2
    estimator.update(torch.tensor([1, 1]))  # step 3: gap 2, then a repeat (gap 0)
    # B_1: 1 → 0.5·1 + 0.5·2 = 1.5 → 0.5·1.5 + 0.5·0 = 0.75; B_2 = 2 (first seen at step 2)
    assert estimator.gap[0, 1].item() == pytest.approx(0.75) and estimator.gap[0, 2].item() == pytest.approx(2.0)
    assert estimator.last_seen[0].tolist() == [-1, 3, 2, -1, -1] and int(estimator.step) == 3
    probability = estimator.probability(torch.tensor([1, 2, 0]))
    torch.testing.assert_close(
        probability, torch.tensor([1 / 0.75, 0.5, 1 / 4], dtype=torch.float64)
    )  # unseen: 1/(3+1)
    torch.testing.assert_close(estimator.log_probability(torch.tensor([2])), torch.tensor([math.log(0.5)]).double())


def test_several_hashes_reduce_the_overestimate_of_colliding_rare_items():
    # 400 items into 64 buckets: rare items share buckets with popular ones and look popular
    generator = torch.Generator().manual_seed(0)
    weights = 1 / torch.arange(1, 401, dtype=torch.float64)
    q = weights / weights.sum()
    truth = 8 * q
    one = StreamingFrequency(64, alpha=0.02, num_hashes=1, seed=1)
    three = StreamingFrequency(64, alpha=0.02, num_hashes=3, seed=1)
    exact = StreamingFrequency(400, alpha=0.02, hashed=False)
    for _ in range(1_000):
        ids = torch.multinomial(q, 8, replacement=True, generator=generator)
        for estimator in (one, three, exact):
            estimator.update(ids)
    ids = torch.arange(400)

    def log_error(estimator):
        return (estimator.log_probability(ids) - truth.log()).abs().mean().item()

    assert log_error(exact) < log_error(three) < log_error(one)
    assert (one.log_probability(ids)[200:] > truth.log()[200:]).float().mean() > 0.9  # collisions overestimate


def test_hashing_is_deterministic_and_in_range():
    estimator = StreamingFrequency(97, num_hashes=4, seed=5)
    ids = torch.tensor([0, 1, 2, 10**12, 2**40 + 3])
    buckets = estimator.buckets(ids)
    assert buckets.shape == (4, 5) and int(buckets.min()) >= 0 and int(buckets.max()) < 97
    assert torch.equal(buckets, StreamingFrequency(97, num_hashes=4, seed=5).buckets(ids))
    assert not torch.equal(buckets, StreamingFrequency(97, num_hashes=4, seed=6).buckets(ids))


def test_state_dict_round_trip_continues_identically():
    p = torch.tensor([0.5, 0.2, 0.05])
    estimator = StreamingFrequency(128, alpha=0.1, num_hashes=2, seed=3)
    stream = list(bernoulli_stream(p, 200, seed=9))
    for ids in stream[:100]:
        estimator.update(ids)
    state = copy.deepcopy(estimator.state_dict())
    assert {"gap", "last_seen", "step", "hash_a", "hash_b"} <= set(state)
    restored = StreamingFrequency(128, alpha=0.1, num_hashes=2, seed=99)  # other hash seeds: restored from state
    restored.load_state_dict(state)
    for ids in stream[100:]:
        estimator.update(ids)
        restored.update(ids)
    ids = torch.arange(3)
    torch.testing.assert_close(restored.probability(ids), estimator.probability(ids), rtol=0, atol=0)


def test_errors():
    with pytest.raises(ValueError, match="num_buckets must be >= 1"):
        StreamingFrequency(0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        StreamingFrequency(8, alpha=0.0)
    with pytest.raises(ValueError, match=r"alpha must be <= 1\.0"):
        StreamingFrequency(8, alpha=1.5)
    with pytest.raises(ValueError, match="num_hashes must be 1 without hashing"):
        StreamingFrequency(8, num_hashes=2, hashed=False)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 8\)"):
        StreamingFrequency(8, hashed=False).update(torch.tensor([8]))
    with pytest.raises(ValueError, match="ids must be >= 0"):
        StreamingFrequency(8).update(torch.tensor([-1]))
    with pytest.raises(ValueError, match="integer ids"):
        StreamingFrequency(8).update(torch.tensor([1.0]))
