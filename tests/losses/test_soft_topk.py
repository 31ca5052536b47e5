import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.losses import (
    DegenerateBatchError,
    SoftTopK,
    count_skipped,
    create_loss,
    get_loss,
    soft_top_k,
    strict,
)
from negkit.losses.functional import soft_top_k_threshold
from tests.losses.helpers import grads, randn, random_relevance


def sim(u, v, similarity):
    dot = (u * v).sum()
    return dot if similarity == "dot" else dot / (u.norm() * v.norm())


def loop_threshold(scores, k, alpha):
    """``t`` with ``Σ σ(α(s + t)) = k``: bisection on Python floats, then one differentiable Newton step, whose
    gradient at the root is exactly the implicit-function gradient (``f = 0`` there)."""

    values = [float(s.detach()) for s in scores]

    def mass(t):
        return sum(1.0 / (1.0 + math.exp(-alpha * (s + t))) for s in values)

    low, high = -max(values) - 50.0, -min(values) + 50.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (low, middle) if mass(middle) > k else (middle, high)
    t = 0.5 * (low + high)
    sig = [torch.sigmoid(alpha * (s + t)) for s in scores]
    f = sum(sig) - k
    slope = sum(alpha * p * (1 - p) for p in sig)
    return t - f / slope


def soft_top_k_loop(query, items, relevance, *, k, alpha, temperature, similarity="cosine"):
    """DEXML's soft top-k loss (Gupta et al., ICLR 2024, §7 of the design notes), one query at a time."""
    out, keep = [], []
    for i in range(query.shape[0]):
        scores = [sim(query[i], items[j], similarity) / temperature for j in range(items.shape[0])]
        t = loop_threshold(scores, k, alpha)
        positives = [j for j in range(items.shape[0]) if relevance[i, j] == 1]
        if not positives:
            out.append(0.0 * query[i].sum())
            keep.append(False)
            continue
        terms = [-torch.log(torch.sigmoid(alpha * (scores[j] + t))) for j in positives]
        out.append(sum(terms) / len(terms))
        keep.append(True)
    return torch.stack(out), torch.tensor(keep)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(3, 9),
    st.integers(1, 4),
    st.floats(0.2, 2.0),
    st.floats(0.5, 4.0),
    st.floats(0.05, 1.0),
    st.sampled_from(["cosine", "dot"]),
    st.integers(0, 2**31 - 1),
)
def test_matches_the_loop_reference(B, N, d, k_fraction, alpha, temperature, similarity, seed):
    k = max(0.5, min(N - 0.5, k_fraction * N / 2))
    q, items = randn(seed, B, d, requires_grad=True), randn(seed + 1, N, d, requires_grad=True)
    relevance = random_relevance(seed + 2, B, N, p=0.4)
    relevance[0] = 0  # a query without a relevant item is skipped
    kw = {"k": k, "alpha": alpha, "temperature": temperature}
    want, keep = soft_top_k_loop(q, items, relevance, similarity=similarity, **kw)
    got = soft_top_k(q, items, relevance, similarity=similarity, n_iter=80, reduction="none", **kw)
    torch.testing.assert_close(got, torch.where(keep, want, torch.zeros_like(want)))
    mean = soft_top_k(q, items, relevance, similarity=similarity, n_iter=80, **kw)
    if keep.any():
        reference = want[keep].mean()
        torch.testing.assert_close(mean, reference)
        for g_got, g_want in zip(grads(mean, q, items), grads(reference, q, items), strict=True):
            torch.testing.assert_close(g_got, g_want)
    # DEXML's 32 steps: t within (max s − min s)/2^33 of the root
    default = soft_top_k(q, items, relevance, similarity=similarity, reduction="none", **kw)
    torch.testing.assert_close(default, got, atol=1e-6, rtol=1e-6)


def test_threshold_solves_the_equation_and_shifts_with_the_scores():
    scores = randn(0, 4, 12) * 10
    for k in (0.5, 1, 5, 11.5):
        t = soft_top_k_threshold(scores, k=k, alpha=2.0, n_iter=80)
        mass = torch.sigmoid(2.0 * (scores + t.unsqueeze(1))).sum(dim=1)
        torch.testing.assert_close(mass, torch.full_like(mass, float(k)), atol=1e-10, rtol=0)
        shifted = soft_top_k_threshold(scores + 3.0, k=k, alpha=2.0, n_iter=80)
        torch.testing.assert_close(shifted, t - 3.0)


def test_threshold_gradcheck_against_finite_differences():
    scores = randn(1, 3, 7, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: soft_top_k_threshold(s, k=2.5, alpha=1.5, n_iter=100), (scores,))


def test_loss_gradcheck():
    q, items = randn(2, 3, 4, requires_grad=True), randn(3, 6, 4, requires_grad=True)
    relevance = random_relevance(4, 3, 6)
    assert torch.autograd.gradcheck(
        lambda a, b: soft_top_k(a, b, relevance, k=2, alpha=2.0, temperature=0.5, n_iter=100), (q, items)
    )


def unrolled_threshold(scores, k, alpha, steps):
    """Autograd through an unrolled solver: 60 bisection steps (no gradient reaches ``t`` through them but
    the bracket ends), then ``steps`` Newton iterations, all differentiated by autograd."""
    t = soft_top_k_threshold(scores.detach(), k=k, alpha=alpha, n_iter=60)
    for _ in range(steps):
        p = torch.sigmoid(alpha * (scores + t.unsqueeze(1)))
        t = t - (p.sum(dim=1) - k) / (alpha * p * (1 - p)).sum(dim=1)
    return t


def test_implicit_gradient_equals_autograd_through_the_unrolled_solver():
    scores = randn(5, 4, 9, requires_grad=True) * 3
    weights = randn(6, 4)
    implicit = grads((soft_top_k_threshold(scores, k=3, alpha=2.0, n_iter=80) * weights).sum(), scores)[0]
    unrolled = grads((unrolled_threshold(scores, 3, 2.0, 8) * weights).sum(), scores)[0]
    torch.testing.assert_close(implicit, unrolled, atol=1e-10, rtol=1e-8)
    # the gradient of t sums to -1 over a row: shifting every score by c shifts t by -c
    row_sums = grads(soft_top_k_threshold(scores, k=3, alpha=2.0).sum(), scores)[0].sum(dim=1)
    torch.testing.assert_close(row_sums, -torch.ones(4, dtype=torch.float64))


def test_one_relevant_item_in_the_top_k_costs_little():
    q = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [-0.7, 0.7]])
    near = soft_top_k(q, items, torch.tensor([[1.0, 0, 0, 0, 0]]), k=1, temperature=0.05)
    far = soft_top_k(q, items, torch.tensor([[0.0, 0, 1, 0, 0]]), k=1, temperature=0.05)
    assert near.item() < 0.1 < far.item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_temperature_001(dtype):
    q, items = randn(7, 8, 16, dtype=dtype, requires_grad=True), randn(8, 50, 16, dtype=dtype, requires_grad=True)
    relevance = random_relevance(9, 8, 50)
    loss = soft_top_k(q, items, relevance, temperature=0.01)
    assert torch.isfinite(loss)
    for g in grads(loss, q, items):
        assert bool(torch.isfinite(g).all())
    reference = soft_top_k(q.double(), items.double(), relevance, temperature=0.01)
    assert abs(loss.item() - reference.item()) < (1e-3 if dtype == torch.float32 else 0.05) * max(1, reference.item())


def test_saturated_rows_have_finite_gradients():
    q = randn(0, 2, 3, dtype=torch.float32, requires_grad=True)
    items = torch.cat([q.detach(), -q.detach(), randn(1, 3, 3, dtype=torch.float32)]).requires_grad_(True)
    relevance = torch.zeros(2, 7)
    relevance[:, 2:4] = 1
    loss = soft_top_k(q, items, relevance, k=1, alpha=50.0, temperature=1e-3)
    assert torch.isfinite(loss)
    for g in grads(loss, q, items):
        assert bool(torch.isfinite(g).all())


def test_queries_without_a_relevant_item_are_skipped_or_strict_error():
    q, items = randn(0, 3, 4, requires_grad=True), randn(1, 6, 4)
    relevance = random_relevance(2, 3, 6)
    relevance[1] = 0
    with count_skipped() as skipped:
        per_query = soft_top_k(q, items, relevance, k=2, reduction="none")
    assert skipped.anchors == 1 and per_query[1] == 0
    torch.testing.assert_close(soft_top_k(q, items, relevance, k=2), per_query[[0, 2]].mean())
    torch.testing.assert_close(soft_top_k(q, items, relevance, k=2, reduction="sum"), per_query.sum())
    none = soft_top_k(q, items, torch.zeros(3, 6), k=2)
    assert none.item() == 0.0 and bool((grads(none, q)[0] == 0).all())
    with strict(), pytest.raises(DegenerateBatchError, match="no query has a relevant item"):
        soft_top_k(q, items, torch.zeros(3, 6), k=2)
    empty = soft_top_k(q[:0], items, relevance[:0], k=2)
    assert empty.item() == 0.0 and empty.requires_grad
    with strict(), pytest.raises(DegenerateBatchError, match="query is empty"):
        soft_top_k(q[:0], items, relevance[:0], k=2)


def test_every_item_relevant_is_legal():
    q, items = randn(0, 2, 4, requires_grad=True), randn(1, 5, 4)
    loss = soft_top_k(q, items, torch.ones(2, 5), k=2)
    assert torch.isfinite(loss) and loss.item() > 0


def test_scale_invariant_cosine():
    q, items, relevance = randn(0, 3, 4), randn(1, 6, 4), random_relevance(2, 3, 6)
    want = soft_top_k(q, items, relevance, k=2)
    torch.testing.assert_close(soft_top_k(q * 1e30, items * 1e-30, relevance, k=2), want)


def test_module_registry_and_defaults():
    spec = get_loss("soft_top_k")
    module = create_loss("soft_top_k")
    assert isinstance(module, SoftTopK) and spec.function is soft_top_k
    assert spec.defaults == {"temperature": 0.05, "k": 5, "alpha": 2.0, "n_iter": 32}
    for key, value in spec.defaults.items():
        assert getattr(module, key) == value
    q, items, relevance = randn(0, 4, 5), randn(1, 12, 5), random_relevance(2, 4, 12)
    torch.testing.assert_close(module(q, items, relevance), soft_top_k(q, items, relevance), rtol=0, atol=0)
    torch.testing.assert_close(spec.bind()(q, items, relevance), soft_top_k(q, items, relevance), rtol=0, atol=0)
    assert dict(module.state_dict()) == {}
    module(q, items, relevance * 0)
    assert module.skipped_anchors == 4
    assert "k=5" in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 6}, "k"),
        ({"k": 0}, "k"),
        ({"k": math.nan}, "k"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": math.inf}, "alpha"),
        ({"n_iter": 0}, "n_iter"),
        ({"n_iter": 2.5}, "n_iter"),
        ({"temperature": -1.0}, "temperature"),
        ({"similarity": "l2"}, "similarity"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(kwargs, name):
    q, items, relevance = randn(0, 2, 3), randn(1, 6, 3), random_relevance(2, 2, 6)
    with pytest.raises(ValueError, match=name):
        soft_top_k(q, items, relevance, **{"k": 2, **kwargs})
    if name != "k" or kwargs["k"] != 6:  # the module cannot know the number of items yet
        with pytest.raises(ValueError, match=name):
            SoftTopK(**{"k": 2, **kwargs})


def test_bad_inputs_name_the_argument():
    q, items, relevance = randn(0, 2, 3), randn(1, 6, 3), random_relevance(2, 2, 6)
    with pytest.raises(ValueError, match="query"):
        soft_top_k(q[0], items, relevance, k=2)
    with pytest.raises(ValueError, match="items"):
        soft_top_k(q, items[:, :2], relevance, k=2)
    with pytest.raises(ValueError, match="items"):
        soft_top_k(q, items.float(), relevance, k=2)
    with pytest.raises(ValueError, match="relevance"):
        soft_top_k(q, items, relevance[:, :5], k=2)
    bad = relevance.clone()
    bad[0, 0] = 0.5
    with pytest.raises(ValueError, match="relevance"):
        soft_top_k(q, items, bad, k=2)
