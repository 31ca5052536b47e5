"""Gumbel-top-k with noise drawn only where it can matter (``sampling._keys_above``) has the law of dense noise.

``perturbed_top_k`` gives a row dense Gumbel noise until it holds k + 1 keys, then, chunk by chunk, draws only
the items whose noise can beat the row's running (k+1)-th key. These tests force that path on small pools (tiny
chunks, and ``SPARSE_BELOW = 1`` so that every row with a finite threshold takes it) and compare the samples with
exact laws computed independently: the first pick is a softmax draw (Gumbel-max), the inclusion probabilities are
Plackett–Luce's (enumerated), the (k+1)-th key has the law of the dense path (two-sample Kolmogorov–Smirnov
against ``chunk_size ≥ N``, which is the old, all-dense computation), and the log-weights stay unbiased.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from negkit.negatives import HardnessSampler, sampling
from negkit.negatives.sampling import Eligibility, PoolView, perturbed_top_k

N, D, REPEATS = 12, 5, 20_000


@pytest.fixture
def always_lazy(monkeypatch):
    monkeypatch.setattr(sampling, "SPARSE_BELOW", 1.0)


def setup(n=N, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(n, D, generator=generator)
    anchor = torch.randn(1, D, generator=generator)
    return anchor, pool


def softmax_target(anchor, pool, beta, eligible=None):
    s = (F.normalize(anchor, dim=1).double() @ F.normalize(pool, dim=1).double().T).squeeze(0)
    logits = beta * s
    if eligible is not None:
        logits = logits.masked_fill(~eligible, float("-inf"))
    return torch.softmax(logits, dim=0)


def plackett_luce_inclusion(p, k):
    n, inclusion = len(p), torch.zeros(len(p), dtype=torch.float64)
    for prefix in itertools.permutations(range(n), k):
        prob, remaining = 1.0, 1.0
        for item in prefix:
            prob *= float(p[item]) / remaining
            remaining -= float(p[item])
        for item in prefix:
            inclusion[item] += prob
    return inclusion


def chi_square_p_value(counts, expected_probabilities):
    keep = expected_probabilities > 0
    expected = expected_probabilities[keep] * counts.sum()
    statistic = float(((counts[keep] - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(statistic, int(keep.sum()) - 1))


@pytest.mark.parametrize("beta", [0.0, 3.0, -2.0])
def test_first_pick_is_a_softmax_draw_on_the_lazy_path(always_lazy, beta):
    anchor, pool = setup()
    ids = torch.arange(N)
    negatives = HardnessSampler(3, beta, chunk_size=2).sample(
        anchor.expand(REPEATS, D),
        pool,
        anchor_ids=torch.full((REPEATS,), 5),
        pool_ids=ids,
        generator=torch.Generator().manual_seed(1),
    )
    assert bool((negatives.indices != 5).all())
    rows = negatives.indices.sort(dim=1).values
    assert bool((rows[:, 1:] != rows[:, :-1]).all())  # without replacement
    # Gumbel-top-k returns the keys in decreasing order: the first is the Gumbel-max, a softmax draw
    counts = torch.bincount(negatives.indices[:, 0], minlength=N).double()
    assert chi_square_p_value(counts, softmax_target(anchor, pool, beta, ids != 5)) > 1e-3


def test_inclusion_probabilities_are_plackett_luces_on_the_lazy_path(always_lazy):
    anchor, pool = setup()
    negatives = HardnessSampler(2, 2.5, chunk_size=3).sample(
        anchor.expand(REPEATS, D), pool, generator=torch.Generator().manual_seed(3)
    )
    inclusion = plackett_luce_inclusion(softmax_target(anchor, pool, 2.5), 2)
    counts = torch.bincount(negatives.indices.flatten(), minlength=N).double()
    # each item's count is Binomial(REPEATS, inclusion): five standard deviations
    sd = (REPEATS * inclusion * (1 - inclusion)).sqrt()
    assert bool(((counts - REPEATS * inclusion).abs() < 5 * sd + 1).all())


def _thresholds(anchor, pool, k, beta, chunk, seed):
    logits = beta * (F.normalize(anchor, dim=1) @ F.normalize(pool, dim=1).T).expand(REPEATS, -1).contiguous()
    view = PoolView(REPEATS, pool.shape[0], lambda a, b: logits[:, a:b], Eligibility(), logits.device, chunk)
    _, _, threshold = perturbed_top_k(view, k, torch.Generator().manual_seed(seed))
    return threshold


@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_the_threshold_key_has_the_law_of_dense_noise(always_lazy, beta):
    """The (k+1)-th key, on which the log-weights rest: lazy chunks against one dense chunk (KS, two-sample)."""
    anchor, pool = setup(40, seed=4)
    dense = _thresholds(anchor, pool, 3, beta, chunk=40, seed=5)
    lazy = _thresholds(anchor, pool, 3, beta, chunk=4, seed=6)
    assert stats.ks_2samp(dense.numpy(), lazy.numpy()).pvalue > 1e-3
    # a shifted law is caught at this sample size (the test can fail)
    assert stats.ks_2samp(dense.numpy(), (lazy + 0.05).numpy()).pvalue < 1e-3


def test_lazy_log_weights_keep_the_negative_mass_unbiased(always_lazy):
    repeats, n = 40_000, 30
    anchor, pool = setup(n, seed=7)
    labels = torch.arange(n) % 4
    negatives = HardnessSampler(4, 3.0, class_conditional=True, chunk_size=5).sample(
        anchor.expand(repeats, D),
        pool,
        anchor_ids=torch.full((repeats,), 3),
        pool_ids=torch.arange(n),
        anchor_labels=torch.full((repeats,), 1),
        pool_labels=labels,
        generator=torch.Generator().manual_seed(8),
    )
    eligible = (torch.arange(n) != 3) & (labels != 1)
    assert bool(eligible[negatives.indices].all())
    values = (F.normalize(anchor, dim=1) @ F.normalize(pool, dim=1).T).squeeze(0).double() / 0.2
    exact = float(torch.exp(values[eligible]).sum())
    estimates = torch.exp(values[negatives.indices] + negatives.log_weights.double()).sum(dim=1)
    standard_error = float(estimates.std()) / math.sqrt(repeats)
    assert abs(float(estimates.mean()) - exact) < 4 * standard_error


def test_a_large_pool_draws_dense_noise_for_its_first_chunk_only(monkeypatch):
    """The point of the lazy path: on 50,000 rows in chunks of 1,000, dense noise covers the first chunk and a few
    rows of the next ones, and the keys drawn lazily are a small share of the rest; own ids are still excluded."""
    drawn = []
    real_gumbel, real_keys = sampling._gumbel, sampling._keys_above
    monkeypatch.setattr(sampling, "_gumbel", lambda shape, *a: drawn.append(math.prod(shape)) or real_gumbel(shape, *a))
    lazy = []

    def counting_keys(*args):
        row, column, key = real_keys(*args)
        lazy.append(len(key))
        return row, column, key

    monkeypatch.setattr(sampling, "_keys_above", counting_keys)
    generator = torch.Generator().manual_seed(9)
    pool = torch.randn(50_000, 16, generator=generator)
    rows, k = 8, 16
    negatives = HardnessSampler(k, 5.0, chunk_size=1_000).sample(
        pool[:rows], pool, anchor_ids=torch.arange(rows), pool_ids=torch.arange(50_000), generator=generator
    )
    assert drawn[0] == rows * 1_000 and sum(drawn) <= 2 * rows * 1_000
    assert len(lazy) >= 45 and sum(lazy) < 0.05 * rows * 49_000
    assert bool((negatives.indices != torch.arange(rows).unsqueeze(1)).all())
    assert negatives.log_weights.isfinite().all()


def test_rows_whose_chunk_is_all_masked_out_get_no_lazy_keys(always_lazy):
    """Logits of -inf (the mining API masks with them) leave a row's threshold where it was."""
    logits = torch.randn(4, 20, dtype=torch.float64)
    logits[:2, 5:] = float("-inf")
    view = PoolView(4, 20, lambda a, b: logits[:, a:b], Eligibility(), logits.device, 5)
    indices, chosen_logits, threshold = perturbed_top_k(view, 3, torch.Generator().manual_seed(0))
    assert bool((indices[:2] < 5).all()) and bool(torch.isfinite(threshold).all())
    assert torch.equal(chosen_logits, logits.gather(1, indices))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_two_level_draws_equal_one_inverse_cdf_over_the_pool_on_the_same_uniforms(chunk):
    """Draws with replacement pick a chunk from its mass, then the item by the same uniform rescaled: the result is
    the item a single float64 inverse CDF over the whole (masked) pool gives for that uniform, whatever the chunk."""
    generator = torch.Generator().manual_seed(11)
    rows, n, k = 6, 300, 40
    logits = 3 * torch.randn(rows, n, generator=generator)
    ids = torch.arange(n)
    rule = Eligibility(anchor_ids=torch.tensor([0, 5, 7, 299, 3, 3]), pool_ids=ids)
    view = PoolView(rows, n, lambda a, b: logits[:, a:b], rule, logits.device, chunk)
    indices, log_probabilities = sampling.categorical_draws(view, k, torch.Generator().manual_seed(12))

    replay = torch.Generator().manual_seed(12)
    targets = torch.rand(rows, k, generator=replay, dtype=torch.float64).sort(dim=1).values
    shuffle = torch.rand(rows, k, generator=replay).argsort(dim=1)
    masked = logits.double().masked_fill(rule.anchor_ids.unsqueeze(1) == ids, float("-inf"))
    cdf = torch.softmax(masked, dim=1).cumsum(dim=1)
    expected = torch.searchsorted(cdf, targets, right=True).clamp(max=n - 1).gather(1, shuffle)
    assert (indices == expected).double().mean() > 0.99  # a uniform within rounding of a boundary may differ
    assert bool((indices != rule.anchor_ids.unsqueeze(1)).all())
    exact = torch.log_softmax(masked, dim=1).gather(1, indices)
    torch.testing.assert_close(log_probabilities, exact, rtol=1e-5, atol=1e-5)
