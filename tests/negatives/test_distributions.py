"""Each sampler's empirical distribution against its target, by total variation with a fixed seed.

Many identical anchors in one call give many independent draws from the same target. With D draws over n
items, the expected total variation of the empirical distribution is about Σ_j sqrt(p_j/(2πD)) ≤ sqrt(n/(2πD));
every bound below is several times that, so a correct sampler passes and a wrong target (e.g. a missing
exclusion, or the wrong sign of beta) fails.
"""

import itertools

import pytest
import torch

from negkit.negatives import ClassConditionalSampler, HardnessSampler, UniformSampler

N, D, REPEATS = 10, 6, 20_000


def setup():
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(N, D, generator=generator)
    anchor = torch.randn(1, D, generator=generator)
    return anchor.expand(REPEATS, D).contiguous(), pool


def frequencies(indices: torch.Tensor) -> torch.Tensor:
    return torch.bincount(indices.flatten(), minlength=N).double() / indices.numel()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def hardness_target(anchor, pool, beta, eligible):
    s = torch.nn.functional.normalize(anchor[:1], dim=1) @ torch.nn.functional.normalize(pool, dim=1).T
    logits = (beta * s.double().squeeze(0)).masked_fill(~eligible, float("-inf"))
    return torch.softmax(logits, dim=0)


@pytest.mark.parametrize("beta", [0.0, 3.0, -2.0])
def test_hardness_with_replacement_matches_softmax(beta):
    anchors, pool = setup()
    negatives = HardnessSampler(3, beta, replacement=True, chunk_size=4).sample(
        anchors, pool, generator=torch.Generator().manual_seed(1)
    )
    target = hardness_target(anchors, pool, beta, torch.ones(N, dtype=torch.bool))
    assert total_variation(frequencies(negatives.indices), target) < 0.01


def test_hardness_k1_without_replacement_matches_softmax_and_respects_exclusions():
    anchors, pool = setup()
    ids = torch.arange(N)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    negatives = HardnessSampler(1, 4.0, class_conditional=True, chunk_size=3).sample(
        anchors,
        pool,
        anchor_ids=torch.full((REPEATS,), 4),
        pool_ids=ids,
        anchor_labels=torch.full((REPEATS,), 2),
        pool_labels=labels,
        generator=torch.Generator().manual_seed(2),
    )
    eligible = (ids != 4) & (labels != 2)
    target = hardness_target(anchors, pool, 4.0, eligible)
    empirical = frequencies(negatives.indices)
    assert float(empirical[~eligible].sum()) == 0.0
    assert total_variation(empirical, target) < 0.015


def plackett_luce_inclusion(p: torch.Tensor, k: int) -> torch.Tensor:
    """Exact P(item j among the first k draws without replacement), by enumerating ordered prefixes."""
    n = len(p)
    inclusion = torch.zeros(n, dtype=torch.float64)
    for prefix in itertools.permutations(range(n), k):
        prob, remaining = 1.0, 1.0
        for item in prefix:
            prob *= float(p[item]) / remaining
            remaining -= float(p[item])
        for item in prefix:
            inclusion[item] += prob
    return inclusion


def test_hardness_without_replacement_has_plackett_luce_inclusion_probabilities():
    anchors, pool = setup()
    negatives = HardnessSampler(2, 2.5).sample(anchors, pool, generator=torch.Generator().manual_seed(3))
    assert bool((negatives.indices[:, 0] != negatives.indices[:, 1]).all())  # no repeats
    target = plackett_luce_inclusion(hardness_target(anchors, pool, 2.5, torch.ones(N, dtype=torch.bool)), 2)
    empirical = torch.bincount(negatives.indices.flatten(), minlength=N).double() / REPEATS
    assert float((empirical - target).abs().max()) < 0.015


@pytest.mark.parametrize("replacement", [False, True])
def test_uniform_and_class_conditional_are_uniform_over_eligible_rows(replacement):
    anchors, pool = setup()
    labels = torch.arange(N) % 3
    common = dict(anchor_ids=torch.zeros(REPEATS, dtype=torch.long), pool_ids=torch.arange(N))
    uniform = UniformSampler(4, replacement=replacement).sample(
        anchors, pool, generator=torch.Generator().manual_seed(4), **common
    )
    eligible = torch.arange(N) != 0
    assert total_variation(frequencies(uniform.indices), eligible.double() / eligible.sum()) < 0.01
    conditional = ClassConditionalSampler(3, replacement=replacement).sample(
        anchors,
        pool,
        anchor_labels=torch.ones(REPEATS, dtype=torch.long),
        pool_labels=labels,
        generator=torch.Generator().manual_seed(5),
        **common,
    )
    eligible = (torch.arange(N) != 0) & (labels != 1)
    assert total_variation(frequencies(conditional.indices), eligible.double() / eligible.sum()) < 0.01


@pytest.mark.parametrize("conditional", [False, True])
def test_uniform_fast_path_on_a_larger_pool_is_uniform_and_distinct(conditional):
    """Pools of at least 8k rows use rejection sampling instead of Gumbel keys: same target, checked here."""
    size, k = 64, 4
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(size, D, generator=generator)
    labels = torch.arange(size) % 4
    sampler = ClassConditionalSampler(k) if conditional else UniformSampler(k)
    negatives = sampler.sample(
        pool[:1].expand(REPEATS, D),
        pool,
        anchor_ids=torch.zeros(REPEATS, dtype=torch.long),
        pool_ids=torch.arange(size),
        anchor_labels=torch.full((REPEATS,), 1),
        pool_labels=labels,
        generator=torch.Generator().manual_seed(9),
    )
    assert all(len(set(row)) == k for row in negatives.indices[:500].tolist())
    eligible = torch.arange(size) != 0
    if conditional:
        eligible &= labels != 1
    empirical = torch.bincount(negatives.indices.flatten(), minlength=size).double() / negatives.indices.numel()
    assert total_variation(empirical, eligible.double() / eligible.sum()) < 0.03
