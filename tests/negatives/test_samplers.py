import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from negkit.losses import info_nce
from negkit.negatives import ClassConditionalSampler, HardnessSampler, MinedSampler, Negatives, UniformSampler
from tests.losses.helpers import randint, randn

SAMPLERS = {
    "uniform": lambda k: UniformSampler(k, chunk_size=7),
    "uniform_replacement": lambda k: UniformSampler(k, replacement=True, chunk_size=7),
    "class_conditional": lambda k: ClassConditionalSampler(k, chunk_size=7),
    "hardness": lambda k: HardnessSampler(k, 3.0, chunk_size=7),
    "hardness_replacement": lambda k: HardnessSampler(k, 3.0, replacement=True, chunk_size=7),
    "hardness_class_conditional": lambda k: HardnessSampler(k, 3.0, class_conditional=True, chunk_size=7),
    "mined": lambda k: MinedSampler(k, (1, k + 4), chunk_size=7),
    "mined_random": lambda k: MinedSampler(k, (0, 2 * k), choose="random", chunk_size=7),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@given(st.integers(1, 6), st.integers(20, 60), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_own_id_and_same_label_rules_hold_for_every_sampler(name, B, N, k, seed):
    anchors, pool = randn(seed, B, 5).float(), randn(seed + 1, N, 5).float()
    pool_ids = torch.arange(N)
    anchor_ids = randint(seed + 2, N, B)
    anchor_labels, pool_labels = randint(seed + 3, 3, B), torch.arange(N) % 3
    sampler = SAMPLERS[name](k)
    negatives = sampler.sample(
        anchors,
        pool,
        anchor_ids=anchor_ids,
        pool_ids=pool_ids,
        anchor_labels=anchor_labels,
        pool_labels=pool_labels,
        generator=torch.Generator().manual_seed(seed),
    )
    assert negatives.indices.shape == (B, k) and negatives.indices.dtype == torch.long
    assert bool((negatives.indices >= 0).all()) and bool((negatives.indices < N).all())
    assert bool((negatives.indices != anchor_ids.unsqueeze(1)).all())
    if sampler.class_conditional or isinstance(sampler, MinedSampler):
        assert bool((pool_labels[negatives.indices] != anchor_labels.unsqueeze(1)).all())
    if not getattr(sampler, "replacement", False):
        assert all(len(set(row)) == k for row in negatives.indices.tolist())
    if negatives.log_weights is not None:
        assert negatives.log_weights.shape == (B, k) and torch.isfinite(negatives.log_weights).all()


@pytest.mark.parametrize(
    "sampler",
    [
        UniformSampler(5, chunk_size=6),
        UniformSampler(5, replacement=True, chunk_size=6),
        ClassConditionalSampler(4, chunk_size=6),
        HardnessSampler(5, 4.0, chunk_size=6),
        HardnessSampler(5, 4.0, replacement=True, chunk_size=6),
        HardnessSampler(4, 4.0, class_conditional=True, chunk_size=6),
    ],
    ids=repr,
)
def test_log_weights_make_the_negative_mass_unbiased(sampler):
    """Mean over draws of Σ_k exp(v_k + log w_k) equals Σ_{eligible j} exp(v_j), for values v unrelated to
    the sampler's own scores (here the logits of a temperature-0.2 InfoNCE)."""
    repeats, N = 40_000, 16
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(N, 6, generator=generator)
    anchor = torch.randn(1, 6, generator=generator)
    labels = torch.arange(N) % 4
    negatives = sampler.sample(
        anchor.expand(repeats, 6),
        pool,
        anchor_ids=torch.full((repeats,), 3),
        pool_ids=torch.arange(N),
        anchor_labels=torch.full((repeats,), 1),
        pool_labels=labels,
        generator=torch.Generator().manual_seed(1),
    )
    values = (F.normalize(anchor, dim=1) @ F.normalize(pool, dim=1).T).squeeze(0).double() / 0.2
    eligible = torch.arange(N) != 3
    if sampler.class_conditional:
        eligible &= labels != 1
    exact = float(torch.exp(values[eligible]).sum())
    estimates = torch.exp(values[negatives.indices] + negatives.log_weights.double()).sum(dim=1)
    standard_error = float(estimates.std()) / math.sqrt(repeats)
    assert abs(float(estimates.mean()) - exact) < max(4 * standard_error, 1e-3 * exact)


def test_weighted_sampled_info_nce_approaches_the_full_pool_loss():
    generator = torch.Generator().manual_seed(0)
    B, N, d = 64, 400, 16
    anchors, positives = torch.randn(B, d, generator=generator), torch.randn(B, d, generator=generator)
    pool = torch.randn(N, d, generator=generator)
    full = info_nce(anchors, positives, pool, in_batch_negatives=False, reduction="none")
    draws = []
    sampler = UniformSampler(200)
    for seed in range(30):
        sampled = sampler.sample(anchors, pool, generator=torch.Generator().manual_seed(seed))
        draws.append(info_nce(anchors, positives, sampled.gather(pool), in_batch_negatives=False, reduction="none"))
    mean = torch.stack(draws).mean(dim=0)
    unweighted = info_nce(anchors, positives, pool[sampled.indices], in_batch_negatives=False, reduction="none")
    # Importance weights put the estimate on the full-pool scale (up to the small downward bias of a log of an
    # unbiased sum, Jensen); without them the loss is lower by about log(N / K) = log 2.
    assert abs(float((mean - full).mean())) < 0.05 and float((mean - full).abs().max()) < 0.2
    assert float((unweighted - full).mean()) < -0.5


def test_k_larger_than_the_pool_names_both_numbers():
    anchors, pool = randn(0, 3, 4).float(), randn(1, 6, 4).float()
    with pytest.raises(
        ValueError,
        match=r"k = 6 is larger than the eligible pool rows of anchors \[0, 1, 2\] "
        r"\(as few as 5\); lower k or pass replacement=True",
    ):
        UniformSampler(6).sample(anchors, pool, anchor_ids=torch.arange(3), pool_ids=torch.arange(6))
    drawn = UniformSampler(6, replacement=True).sample(
        anchors, pool, anchor_ids=torch.arange(3), pool_ids=torch.arange(6)
    )
    assert drawn.indices.shape == (3, 6) and bool((drawn.indices != torch.arange(3).unsqueeze(1)).all())
    with pytest.raises(ValueError, match="have no eligible pool rows to draw from"):
        ClassConditionalSampler(2, replacement=True).sample(
            anchors, pool, anchor_labels=torch.zeros(3, dtype=torch.long), pool_labels=torch.zeros(6, dtype=torch.long)
        )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: UniformSampler(0), "k must be >= 1"),
        (lambda: UniformSampler(2).sample(torch.randn(3), torch.randn(5, 3)), "anchors must be 2-D"),
        (lambda: UniformSampler(2).sample(torch.randn(3, 4), torch.randn(5, 3)), "pool must have 4 features"),
        (
            lambda: UniformSampler(2).sample(torch.randn(3, 3), torch.randn(5, 3), anchor_ids=torch.arange(3)),
            "anchor_ids and pool_ids must be given together",
        ),
        (
            lambda: UniformSampler(2).sample(torch.randn(3, 3), torch.randn(5, 3), pool_labels=torch.arange(4)),
            r"pool_labels must have shape \[5\]",
        ),
        (lambda: ClassConditionalSampler(2).sample(torch.randn(3, 3), torch.randn(5, 3)), "is class-conditional"),
        (lambda: HardnessSampler(2, float("nan")), "beta must be finite"),
        (lambda: MinedSampler(3, (2, 4)), r"holds 2 ranks, fewer than k = 3"),
        (lambda: MinedSampler(3, (4, 2)), "rank_window must be"),
        (lambda: MinedSampler(2, margin=0.1).sample(torch.randn(3, 3), torch.randn(5, 3)), "need positives"),
        (lambda: MinedSampler(2, backend="annoy"), "backend must be"),
        (
            lambda: HardnessSampler(2, chunk_size=2).sample(torch.randn(3, 3), torch.full((5, 3), float("nan"))),
            r"pool contains non-finite values \(NaN or inf\) in rows 0..1",
        ),
        (lambda: MinedSampler(2).sample(torch.randn(3, 3), torch.full((5, 3), float("inf"))), "non-finite"),
        (lambda: UniformSampler(2).sample(torch.full((3, 3), float("nan")), torch.randn(5, 3)), "anchors contains 9"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def brute_force_window(anchors, pool, lo, hi, exclude):
    s = F.normalize(anchors, dim=1) @ F.normalize(pool, dim=1).T
    s = s.masked_fill(exclude, float("-inf"))
    return s.argsort(dim=1, descending=True, stable=True)[:, lo:hi]


@given(st.integers(1, 8), st.integers(30, 90), st.integers(0, 2**31 - 1), st.sampled_from([1, 5, 1000]))
def test_mined_window_equals_a_full_sort_whatever_the_chunk_size(B, N, seed, chunk):
    anchors, pool = randn(seed, B, 6).float(), randn(seed + 1, N, 6).float()
    anchor_ids = randint(seed + 2, N, B)
    got = MinedSampler(4, (3, 7), chunk_size=chunk, backend="exact").sample(
        anchors, pool, anchor_ids=anchor_ids, pool_ids=torch.arange(N)
    )
    exclude = anchor_ids.unsqueeze(1) == torch.arange(N).unsqueeze(0)
    assert torch.equal(got.indices, brute_force_window(anchors, pool, 3, 7, exclude)) and got.log_weights is None


def test_faiss_backend_equals_the_exact_search_with_filters():
    generator = torch.Generator().manual_seed(0)
    anchors, pool = torch.randn(40, 16, generator=generator), torch.randn(3000, 16, generator=generator)
    positives = anchors + 0.5 * torch.randn(40, 16, generator=generator)
    kwargs = dict(
        anchor_ids=torch.arange(40),
        pool_ids=torch.arange(3000),
        anchor_labels=torch.arange(40) % 7,
        pool_labels=torch.arange(3000) % 7,
        positives=positives,
    )
    exact = MinedSampler(8, (5, 30), margin=0.05, backend="exact").sample(anchors, pool, **kwargs)
    fast = MinedSampler(8, (5, 30), margin=0.05, backend="faiss").sample(anchors, pool, **kwargs)
    assert torch.equal(exact.indices, fast.indices)


def test_margin_filters_drop_candidates_near_or_above_the_positive():
    generator = torch.Generator().manual_seed(3)
    anchors, pool = torch.randn(20, 8, generator=generator), torch.randn(200, 8, generator=generator)
    positives = anchors + 0.8 * torch.randn(20, 8, generator=generator)
    s = F.normalize(anchors, dim=1) @ F.normalize(pool, dim=1).T
    s_pos = (F.normalize(anchors, dim=1) * F.normalize(positives, dim=1)).sum(dim=1, keepdim=True)
    for sampler, ceiling in (
        (MinedSampler(5, (0, 5), margin=0.1), s_pos - 0.1),
        (MinedSampler(5, (0, 5), relative_margin=0.2), s_pos - 0.2 * s_pos.abs()),
    ):
        negatives = sampler.sample(anchors, pool, positives=positives)
        chosen = s.gather(1, negatives.indices)
        assert bool((chosen <= ceiling + 1e-6).all())
        # ... and they are the hardest ones that pass: the best remaining candidate is chosen first.
        assert torch.allclose(chosen[:, 0], s.masked_fill(s > ceiling, -2).max(dim=1).values)


def test_relative_margin_stays_below_a_negative_positive_score():
    # anchor (1, 0); positive at cos −0.5; candidates at cos −0.45 (above the positive), −0.55 and −0.7
    anchors = torch.tensor([[1.0, 0.0]])
    angle = torch.tensor([-0.5, -0.45, -0.55, -0.7]).acos()
    rows = torch.stack([angle.cos(), angle.sin()], dim=1)
    positives, pool = rows[:1], rows[1:]
    negatives = MinedSampler(1, (0, 3), relative_margin=0.2).sample(anchors, pool, positives=positives)
    assert negatives.indices.tolist() == [[2]]  # −0.45 and −0.55 exceed −0.5 − 0.5·0.2 = −0.6; −0.7 passes


def test_random_choice_stays_in_the_window_and_gathering_feeds_info_nce():
    anchors, pool = randn(0, 6, 5).float(), randn(1, 50, 5).float()
    window = set()
    for seed in range(20):
        negatives = MinedSampler(3, (2, 8), choose="random").sample(
            anchors[:1], pool, generator=torch.Generator().manual_seed(seed)
        )
        window.update(negatives.indices[0].tolist())
    assert window == set(brute_force_window(anchors[:1], pool, 2, 8, torch.zeros(1, 50, dtype=torch.bool))[0].tolist())
    sampled = UniformSampler(4).sample(anchors, pool, generator=torch.Generator().manual_seed(0))
    gathered = sampled.gather(pool)
    assert gathered.embeddings.shape == (6, 4, 5)
    torch.testing.assert_close(
        info_nce(anchors, anchors, gathered),
        info_nce(anchors, anchors, pool[sampled.indices], negative_log_weights=sampled.log_weights),
    )
    with pytest.raises(ValueError, match="already carries its log-weights"):
        info_nce(anchors, anchors, gathered, negative_log_weights=sampled.log_weights)
    assert isinstance(sampled, Negatives)


def test_mined_fill_tops_up_rows_that_the_filters_starve():
    generator = torch.Generator().manual_seed(5)
    anchors, pool = torch.randn(8, 6, generator=generator), torch.randn(60, 6, generator=generator)
    positives = -anchors  # every candidate scores above such a positive: the margin rejects them all
    with pytest.raises(ValueError, match="pass fill='uniform'"):
        MinedSampler(4, (0, 10), margin=0.0).sample(anchors, pool, positives=positives)
    filled = MinedSampler(4, (0, 10), margin=0.0, fill="uniform").sample(
        anchors, pool, positives=positives, anchor_ids=torch.arange(8), pool_ids=torch.arange(60), generator=generator
    )
    assert all(len(set(row)) == 4 for row in filled.indices.tolist())
    assert bool((filled.indices != torch.arange(8).unsqueeze(1)).all())


@given(st.integers(1, 10), st.integers(1, 40), st.integers(0, 2**31 - 1), st.booleans(), st.booleans())
def test_fast_eligible_counts_equal_a_full_scan(B, N, seed, by_id, by_label):
    from negkit.negatives.sampling import Eligibility, PoolView, count_eligible

    rule = Eligibility(
        anchor_ids=randint(seed, 8, B) if by_id else None,
        pool_ids=randint(seed + 1, 8, N) if by_id else None,
        anchor_labels=randint(seed + 2, 3, B) - 1,
        pool_labels=randint(seed + 3, 3, N) - 1,
        drop_same_label=by_label,
    )
    view = PoolView(B, N, None, rule, torch.device("cpu"), chunk_size=7)
    mask = rule.mask(slice(None), torch.arange(N).unsqueeze(0), None)
    expected = torch.full((B,), N) if mask is None else mask.sum(dim=1)
    assert torch.equal(count_eligible(view), expected)
