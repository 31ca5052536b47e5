import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from negkit.losses import InfoNCE, info_nce
from tests.losses import reference as ref
from tests.losses.helpers import grads, randint, randn

shapes = st.tuples(st.integers(2, 7), st.integers(2, 6), st.integers(0, 4), st.integers(0, 2**31 - 1))


@given(shapes, st.sampled_from(["cosine", "dot"]), st.floats(0.05, 2.0), st.booleans(), st.booleans())
def test_matches_reference_loops(shape, similarity, temperature, use_labels, per_anchor):
    B, d, K, seed = shape
    a, p = randn(seed, B, d, requires_grad=True), randn(seed + 1, B, d, requires_grad=True)
    negatives = None
    if K:
        negatives = randn(seed + 2, B, K, d) if per_anchor else randn(seed + 2, K, d)
        negatives.requires_grad_(True)
    labels = randint(seed + 3, 3, B) if use_labels else None
    if labels is not None and negatives is None:
        assume(bool((torch.bincount(labels)[labels] < B).all()))  # every anchor keeps a negative
    got = info_nce(a, p, negatives, temperature=temperature, labels=labels, similarity=similarity, reduction="none")
    want = ref.info_nce(a, p, negatives, temperature=temperature, labels=labels, similarity=similarity)
    torch.testing.assert_close(got, want)
    inputs = (a, p) if negatives is None else (a, p, negatives)
    for g_got, g_want in zip(grads(got.sum(), *inputs), grads(want.sum(), *inputs), strict=True):
        torch.testing.assert_close(g_got, g_want)


@given(st.integers(2, 9), st.integers(1, 8), st.integers(0, 2**31 - 1), st.sampled_from(["cosine", "dot"]))
def test_in_batch_equals_cross_entropy(B, d, seed, similarity):
    a, p = randn(seed, B, d), randn(seed + 1, B, d)
    logits = F.normalize(a, dim=1) @ F.normalize(p, dim=1).T / 0.2 if similarity == "cosine" else a @ p.T / 0.2
    want = F.cross_entropy(logits, torch.arange(B))
    torch.testing.assert_close(info_nce(a, p, temperature=0.2, similarity=similarity), want)


@given(st.integers(2, 6), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_weights_and_explicit_negatives(B, K, seed):
    a, p = randn(seed, B, 4), randn(seed + 1, B, 4)
    shared = randn(seed + 2, K, 4)
    per_anchor = shared.expand(B, K, 4)
    log_weights = randn(seed + 3, B, K)
    # A [K,d] pool shared by all anchors is the same as giving each anchor that pool.
    torch.testing.assert_close(info_nce(a, p, shared), info_nce(a, p, per_anchor))
    # A log-weight of log 2 counts a negative twice.
    doubled = torch.cat([shared, shared])
    torch.testing.assert_close(
        info_nce(a, p, shared, negative_log_weights=torch.full((K,), math.log(2.0), dtype=a.dtype)),
        info_nce(a, p, doubled),
    )
    # Weights [K] broadcast over anchors like [B,K] with equal rows.
    torch.testing.assert_close(
        info_nce(a, p, shared, negative_log_weights=log_weights[0]),
        info_nce(a, p, shared, negative_log_weights=log_weights[0].expand(B, K)),
    )
    torch.testing.assert_close(
        info_nce(a, p, per_anchor, negative_log_weights=log_weights, reduction="none"),
        ref.info_nce(a, p, per_anchor, negative_log_weights=log_weights, temperature=0.1),
    )


def test_without_in_batch_negatives_uses_only_explicit_ones():
    a, p, n = randn(0, 5, 8), randn(1, 5, 8), randn(2, 5, 3, 8)
    got = info_nce(a, p, n, in_batch_negatives=False, reduction="none")
    want = ref.info_nce(a, p, n, in_batch_negatives=False, temperature=0.1)
    torch.testing.assert_close(got, want)
    # Row i depends on row i only: changing another anchor's positive leaves it unchanged.
    p2 = p.clone()
    p2[1] += 1.0
    torch.testing.assert_close(info_nce(a, p2, n, in_batch_negatives=False, reduction="none")[0], got[0])


def test_distinct_labels_change_nothing_and_shared_labels_mask():
    a, p = randn(3, 6, 5), randn(4, 6, 5)
    torch.testing.assert_close(info_nce(a, p, labels=torch.arange(6)), info_nce(a, p))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    masked = info_nce(a, p, labels=labels, reduction="none")
    # Removing candidates from the denominator can only lower each anchor's loss.
    assert bool((masked < info_nce(a, p, reduction="none")).all())


def test_symmetric_averages_both_directions():
    a, p = randn(5, 7, 4), randn(6, 7, 4)
    got = info_nce(a, p, symmetric=True, reduction="none")
    want = 0.5 * (ref.info_nce(a, p, temperature=0.1) + ref.info_nce(p, a, temperature=0.1))
    torch.testing.assert_close(got, want)
    labels = torch.tensor([0, 0, 1, 2, 3, 3, 4])
    torch.testing.assert_close(
        info_nce(a, p, labels=labels, symmetric=True, reduction="none"),
        0.5 * (ref.info_nce(a, p, labels=labels, temperature=0.1) + ref.info_nce(p, a, labels=labels, temperature=0.1)),
    )


def test_symmetric_with_explicit_negatives_uses_them_in_the_forward_direction_only():
    a, p, shared, per_anchor = randn(7, 5, 4), randn(8, 5, 4), randn(9, 3, 4), randn(10, 5, 2, 4)
    for negatives in (shared, per_anchor):
        got = info_nce(a, p, negatives, symmetric=True, reduction="none")
        want = 0.5 * (ref.info_nce(a, p, negatives, temperature=0.1) + ref.info_nce(p, a, temperature=0.1))
        torch.testing.assert_close(got, want)


def test_reductions_are_consistent():
    a, p = randn(7, 6, 4), randn(8, 6, 4)
    none = info_nce(a, p, reduction="none")
    assert none.shape == (6,)
    torch.testing.assert_close(info_nce(a, p, reduction="mean"), none.mean())
    torch.testing.assert_close(info_nce(a, p, reduction="sum"), none.sum())


@given(st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_permutation_and_scale_invariance(B, seed):
    a, p, n = randn(seed, B, 5), randn(seed + 1, B, 5), randn(seed + 2, B, 3, 5)
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(seed))
    base = info_nce(a, p, n, reduction="none")
    torch.testing.assert_close(info_nce(a[perm], p[perm], n[perm], reduction="none"), base[perm])
    scale = randn(seed + 3, B, 1).abs() + 0.1
    torch.testing.assert_close(info_nce(a * scale, p * 3.0, n * 0.5, reduction="none"), base)


def test_learnable_temperature_gets_a_gradient():
    a, p = randn(0, 4, 3), randn(1, 4, 3)
    temperature = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    info_nce(a, p, temperature=temperature).backward()
    assert temperature.grad is not None and torch.isfinite(temperature.grad)
    torch.testing.assert_close(info_nce(a, p, temperature=temperature).detach(), info_nce(a, p, temperature=0.2))


def test_gradcheck():
    a, p = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3, requires_grad=True)
    n, w = randn(2, 4, 2, 3, requires_grad=True), randn(3, 4, 2, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2])
    assert torch.autograd.gradcheck(
        lambda a, p, n, w: info_nce(a, p, n, negative_log_weights=w, labels=labels, temperature=0.3), (a, p, n, w)
    )
    assert torch.autograd.gradcheck(lambda a, p: info_nce(a, p, symmetric=True, similarity="dot"), (a, p))


def test_module_matches_function():
    a, p, n = randn(0, 5, 4), randn(1, 5, 4), randn(2, 3, 4)
    module = InfoNCE(0.2, symmetric=False, similarity="dot")
    torch.testing.assert_close(module(a, p, n), info_nce(a, p, n, temperature=0.2, similarity="dot"))
    assert "temperature=0.2" in repr(module)


@pytest.mark.parametrize("B", [1])
def test_single_pair_with_explicit_negatives_is_fine(B):
    a, p, n = randn(0, B, 4), randn(1, B, 4), randn(2, 3, 4)
    torch.testing.assert_close(info_nce(a, p, n, reduction="none"), ref.info_nce(a, p, n, temperature=0.1))
