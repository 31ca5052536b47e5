"""Samplers, pools, the report and the how-many estimators check what they are given (issue 14): every bad input
is a ValueError naming the argument, never an IndexError, a bare AssertionError, a silently truncated label or a
report of zeros; an empty batch of anchors is degenerate, not an error (except in strict mode)."""

import math

import pytest
import torch

from negkit.losses import DegenerateBatchError, strict
from negkit.negatives import (
    AdaptiveK,
    ClassConditionalSampler,
    EmbeddingCache,
    HardnessSampler,
    MCMCSampler,
    MinedSampler,
    Queue,
    UniformSampler,
    negative_report,
    optimal_k,
    ranking_quality,
)

anchors = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
pool = torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
ids = torch.arange(4)

MCMC_CASES = {
    "empty pool": (lambda s: s.sample(anchors, pool[:0], anchor_ids=ids), "pool is empty"),
    "pool width": (lambda s: s.sample(anchors, torch.randn(30, 5), anchor_ids=ids), "pool must have 3 features"),
    "float anchor ids": (lambda s: s.sample(anchors, pool, anchor_ids=ids.float()), "anchor_ids must hold integer"),
    "float pool ids": (
        lambda s: s.sample(anchors, pool, anchor_ids=ids, pool_ids=torch.arange(30.0)),
        "pool_ids must hold integer",
    ),
    "pool ids length": (
        lambda s: s.sample(anchors, pool, anchor_ids=ids, pool_ids=torch.arange(29)),
        r"pool_ids must have shape \[30\]",
    ),
    "float exclude ids": (
        lambda s: s.sample(anchors, pool, anchor_ids=ids, exclude_ids=ids.double()),
        "exclude_ids must hold integer",
    ),
    "anchor ids range": (lambda s: s.sample(anchors, pool, anchor_ids=ids + 97), r"anchor_ids must lie in \[0, 100\)"),
    "not a tensor": (lambda s: s.sample(anchors, pool, anchor_ids=[0, 1, 2, 3]), "anchor_ids must be a torch.Tensor"),
    "nan pool": (lambda s: s.sample(anchors, torch.full((30, 3), math.nan), anchor_ids=ids), "non-finite"),
    "k zero": (lambda s: MCMCSampler(10, 0, 1.0), "k must be >= 1"),
    "k float": (lambda s: MCMCSampler(10, 2.5, 1.0), "k must be an int"),
}


@pytest.mark.parametrize("case", sorted(MCMC_CASES))
def test_mcmc_sampler_rejects_bad_input(case):
    call, message = MCMC_CASES[case]
    with pytest.raises(ValueError, match=message):
        call(MCMCSampler(100, 3, 5.0))


SAMPLERS = {
    "uniform": lambda: UniformSampler(3),
    "class": lambda: ClassConditionalSampler(3),
    "hardness": lambda: HardnessSampler(3, 2.0),
    "mined": lambda: MinedSampler(3, backend="exact"),
    "mined-faiss": lambda: MinedSampler(3, backend="faiss"),  # faiss is a test dependency (negkit[dev])
}


def _labels(sampler, rows=4, size=30):
    if not sampler.class_conditional:
        return {}
    return {"anchor_labels": torch.arange(rows) % 2, "pool_labels": torch.arange(size) % 3}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_reject_bad_pools_labels_and_ids(name):
    sampler = SAMPLERS[name]()
    with pytest.raises(ValueError, match="pool is empty"):
        sampler.sample(anchors, pool[:0], **_labels(sampler, size=0))
    with pytest.raises(ValueError, match="anchor_ids must hold integer"):
        sampler.sample(anchors, pool, anchor_ids=ids.float(), pool_ids=torch.arange(30), **_labels(sampler))
    with pytest.raises(ValueError, match="pool_labels must hold integer"):
        sampler.sample(anchors, pool, anchor_labels=ids, pool_labels=torch.zeros(30))
    with pytest.raises(ValueError, match="pool must have 3 features"):
        sampler.sample(anchors, torch.randn(30, 4), **_labels(sampler))
    if name not in ("uniform", "class"):  # uniform samplers never read the pool's values (documented)
        bad = pool.clone()
        bad[7, 1] = math.nan
        with pytest.raises(ValueError, match=r"pool contains non-finite values .* rows"):
            sampler.sample(anchors, bad, **_labels(sampler))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_an_empty_batch_of_anchors_gets_an_empty_result_or_a_strict_error(name):
    sampler = SAMPLERS[name]()
    out = sampler.sample(anchors[:0], pool, **_labels(sampler, rows=0))
    assert out.indices.shape == (0, 3) and out.indices.dtype == torch.long
    assert (out.log_weights is None) == (not sampler.weighted)
    with strict(), pytest.raises(DegenerateBatchError, match="anchors is empty"):
        sampler.sample(anchors[:0], pool, **_labels(sampler, rows=0))
    mcmc = MCMCSampler(100, 3, 5.0)
    before = mcmc.state.clone()
    assert mcmc.sample(anchors[:0], pool, anchor_ids=ids[:0]).indices.shape == (0, 3)
    assert torch.equal(mcmc.state, before)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_are_scale_invariant(name):
    sampler = SAMPLERS[name]()
    draws = [
        sampler.sample(anchors * scale, pool * scale, generator=torch.Generator().manual_seed(4), **_labels(sampler))
        for scale in (1.0, 1e30, 1e-30)
    ]
    for other in draws[1:]:
        assert torch.equal(other.indices, draws[0].indices)
        if draws[0].log_weights is not None:
            torch.testing.assert_close(other.log_weights, draws[0].log_weights)


def test_faiss_backend_matches_the_exact_one_on_bad_pools():
    bad = pool.clone()
    bad[3] = math.nan
    for backend in ("exact", "faiss"):
        sampler = MinedSampler(3, backend=backend)
        with pytest.raises(ValueError, match=r"pool contains non-finite values \(NaN or inf\) in rows"):
            sampler.sample(anchors, bad)
        with pytest.raises(ValueError, match="pool is empty"):
            sampler.sample(anchors, pool[:0])


POOL_CASES = {
    "queue float labels": (lambda: Queue(5, 3).enqueue(anchors, labels=torch.full((4,), 0.5)), "labels must hold"),
    "queue float ids": (lambda: Queue(5, 3).enqueue(anchors, ids=ids.float()), "ids must hold integer"),
    "queue mask values": (lambda: Queue(5, 3).enqueue(anchors, mask=torch.full((4,), 0.5)), "mask must contain"),
    "queue mask length": (lambda: Queue(5, 3).enqueue(anchors, mask=torch.ones(3)), r"mask must have shape \[4\]"),
    "queue size float": (lambda: Queue(2.5, 3), "size must be an int"),
    "cache float labels": (
        lambda: EmbeddingCache(10, 3).update(ids, anchors, labels=torch.full((4,), 0.5)),
        "labels must hold integer",
    ),
    "cache float index": (lambda: EmbeddingCache(10, 3).update(ids.float(), anchors), "index must hold integer"),
    "cache index list": (lambda: EmbeddingCache(10, 3).update([0, 1, 2, 3], anchors), "index must be a torch.Tensor"),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pools_reject_float_labels_and_ids(case):
    call, message = POOL_CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_queue_keeps_integer_labels_exactly():
    queue = Queue(5, 3)
    queue.enqueue(anchors, labels=torch.tensor([0, 1, 2, 3]), ids=ids, mask=torch.tensor([1, 0, 1, 1]))
    assert queue.labels.tolist() == [0, 2, 3] and queue.ids.tolist() == [0, 2, 3]


REPORT_CASES = {
    "index past the pool": (lambda: negative_report(anchors, pool, torch.full((4, 2), 30)), r"in \[0, 30\)"),
    "negative index": (lambda: negative_report(anchors, pool, torch.full((4, 2), -1)), r"in \[0, 30\)"),
    "float index": (lambda: negative_report(anchors, pool, torch.zeros(4, 2)), "negatives must hold integer"),
    "empty": (lambda: negative_report(anchors, pool, torch.zeros(4, 0, dtype=torch.long)), "negatives is empty"),
    "pool labels length": (
        lambda: negative_report(
            anchors, pool, torch.zeros(4, 2, dtype=torch.long), anchor_labels=ids, pool_labels=torch.arange(29)
        ),
        r"pool_labels must have shape \[30\]",
    ),
    "one of the labels": (
        lambda: negative_report(anchors, pool, torch.zeros(4, 2, dtype=torch.long), anchor_labels=ids),
        "give both anchor_labels and pool_labels",
    ),
    "positives shape": (
        lambda: negative_report(anchors, pool, torch.zeros(4, 2, dtype=torch.long), positives=anchors[:2]),
        "positives must have the shape of anchors",
    ),
    "pool width": (lambda: negative_report(anchors, pool[:, :2], torch.zeros(4, 2, dtype=torch.long)), "features"),
}


@pytest.mark.parametrize("case", sorted(REPORT_CASES))
def test_negative_report_rejects_indices_outside_the_pool(case):
    call, message = REPORT_CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


HOW_MANY_CASES = {
    "k_min 0": (lambda: AdaptiveK(0.1, k_min=0), "k_min must be >= 1"),
    "k_min float": (lambda: AdaptiveK(0.1, k_min=1.5), "k_min must be an int"),
    "k_max below k_min": (lambda: AdaptiveK(0.1, k_min=8, k_max=4), "need k_min <= k_max"),
    "interval": (lambda: AdaptiveK(0.1, interval=0), "interval must be >= 1"),
    "noise rate": (lambda: AdaptiveK(1.0), "noise_rate must be < 1"),
    "optimal_k k_min": (lambda: optimal_k(0.1, 0.7, k_min=0), "k_min must be >= 1"),
    "ranking empty": (lambda: ranking_quality(torch.zeros(0), torch.zeros(0, 3)), "no .positive, negative. pair"),
    "ranking no negative": (lambda: ranking_quality(torch.zeros(2), torch.zeros(2, 0)), "no .positive, negative. pair"),
    "ranking nan": (lambda: ranking_quality(torch.tensor([math.nan]), torch.zeros(1, 2)), "positive_scores contains"),
    "ranking mask": (
        lambda: ranking_quality(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)),
        "mask selects no negative",
    ),
}


@pytest.mark.parametrize("case", sorted(HOW_MANY_CASES))
def test_how_many_rejects_bad_arguments(case):
    call, message = HOW_MANY_CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_adaptive_k_noise_rate_is_in_the_state_dict():
    schedule = AdaptiveK(0.0, interval=1, k_max=64, initial_k=4)
    schedule.noise_rate = 0.3  # what the ans strategy's refresh() does
    restored = AdaptiveK(0.0, interval=1, k_max=64, initial_k=4)
    restored.load_state_dict(schedule.state_dict())
    assert restored.noise_rate == 0.3
    assert [restored.update(0.8) for _ in range(3)] == [schedule.update(0.8) for _ in range(3)]
    with pytest.raises(ValueError, match="noise_rate must be < 1"):
        schedule.noise_rate = 1.5
    # a checkpoint from before noise_rate was saved still loads (with the constructor's value)
    old = {key: value for key, value in schedule.state_dict().items() if key != "rho"}
    AdaptiveK(0.2).load_state_dict(old)
