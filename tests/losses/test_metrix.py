import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.losses import DegenerateBatchError, count_skipped, create_loss, get_loss, info_nce, metrix, strict
from tests.losses.helpers import grads, randn


def sim(u, v, similarity):
    dot = (u * v).sum()
    return dot if similarity == "dot" else dot / (u.norm() * v.norm())


def metrix_loop(anchor, positive, lam, *, temperature, weight, similarity):
    """negkit's Metrix for InfoNCE, one anchor, negative and mix at a time (float64)."""
    B = anchor.shape[0]
    k = lam.shape[1]
    out = []
    for i in range(B):
        logit = [sim(anchor[i], positive[j], similarity) / temperature for j in range(B)]
        negatives = sum(torch.exp(logit[j]) for j in range(B) if j != i)
        clean_z = torch.exp(logit[i]) + negatives
        clean = -torch.log(torch.exp(logit[i]) / clean_z)
        order = sorted((j for j in range(B) if j != i), key=lambda j: -float(logit[j].detach()))[:k]
        mixed_terms = []
        for r, n in enumerate(order):
            p_vec, n_vec = positive[i], positive[n]
            if similarity == "cosine":
                p_vec, n_vec = p_vec / p_vec.norm(), n_vec / n_vec.norm()
            u = lam[i, r] * p_vec + (1 - lam[i, r]) * n_vec
            m = sim(anchor[i], u, similarity) / temperature
            as_positive = -torch.log(torch.exp(m) / (torch.exp(m) + negatives))
            as_negative = torch.log(clean_z + torch.exp(m)) - torch.log(clean_z)
            mixed_terms.append(lam[i, r] * as_positive + (1 - lam[i, r]) * as_negative)
        out.append(clean + weight * sum(mixed_terms) / len(mixed_terms))
    return torch.stack(out)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 6),
    st.integers(1, 4),
    st.integers(1, 4),
    st.floats(0.1, 1.0),
    st.floats(0.0, 2.0),
    st.sampled_from(["cosine", "dot"]),
    st.integers(0, 2**31 - 1),
)
def test_matches_the_loop_reference(B, d, top_k, temperature, weight, similarity, seed):
    a, p = randn(seed, B, d, requires_grad=True), randn(seed + 1, B, d, requires_grad=True)
    k = min(top_k, B - 1)
    lam = torch.rand(B, k, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    kw = {"temperature": temperature, "weight": weight, "similarity": similarity}
    want = metrix_loop(a, p, lam, **kw)
    got = metrix(a, p, lam=lam, top_k=top_k, reduction="none", **kw)
    torch.testing.assert_close(got, want)
    for g_got, g_want in zip(grads(got.mean(), a, p), grads(want.mean(), a, p), strict=True):
        torch.testing.assert_close(g_got, g_want)


def test_mixed_labels_at_the_ends():
    a, p = randn(0, 5, 3), randn(1, 5, 3)
    clean = info_nce(a, p, temperature=0.1)
    torch.testing.assert_close(metrix(a, p, weight=0.0), clean)
    # λ = 1: the mix is the positive itself, labelled positive: a second copy of the clean loss
    torch.testing.assert_close(metrix(a, p, lam=torch.ones(5, 3, dtype=torch.float64)), 2 * clean)
    # λ = 0: the mix is a hard negative, labelled negative: log(Z + e^{l_in}) − log Z > 0
    assert metrix(a, p, lam=torch.zeros(5, 3, dtype=torch.float64)).item() > clean.item()


def test_gradcheck():
    a, p = randn(2, 4, 3, requires_grad=True), randn(3, 4, 3, requires_grad=True)
    lam = torch.rand(4, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, y: metrix(x, y, lam=lam, top_k=2, temperature=0.5), (a, p))


def test_lambda_is_drawn_from_beta_with_the_generator():
    a, p = randn(0, 8, 4), randn(1, 8, 4)
    first = metrix(a, p, generator=torch.Generator().manual_seed(3))
    again = metrix(a, p, generator=torch.Generator().manual_seed(3))
    other = metrix(a, p, generator=torch.Generator().manual_seed(4))
    assert first.item() == again.item() and first.item() != other.item()
    state = torch.random.get_rng_state()
    metrix(a, p, generator=torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_temperature_001(dtype):
    a, p = randn(0, 16, 8, dtype=dtype, requires_grad=True), randn(1, 16, 8, dtype=dtype, requires_grad=True)
    loss = metrix(a, p, temperature=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    for g in grads(loss, a, p):
        assert bool(torch.isfinite(g).all())


def test_one_row_and_empty_batches_are_zero_or_strict_error():
    a, p = randn(0, 1, 3, requires_grad=True), randn(1, 1, 3)
    with count_skipped() as skipped:
        loss = metrix(a, p)
    assert loss.item() == 0.0 and loss.requires_grad and skipped.anchors == 1
    assert bool((grads(loss, a)[0] == 0).all())
    with strict(), pytest.raises(DegenerateBatchError, match="no negative"):
        metrix(a, p)
    assert metrix(a[:0], p[:0]).item() == 0.0
    with strict(), pytest.raises(DegenerateBatchError, match="empty"):
        metrix(a[:0], p[:0])


def test_registry():
    spec = get_loss("metrix")
    assert spec.function is metrix and spec.defaults == {"temperature": 0.1, "alpha": 2.0, "top_k": 3}
    a, p = randn(0, 6, 3), randn(1, 6, 3)
    lam = torch.full((6, 3), 0.3, dtype=torch.float64)
    torch.testing.assert_close(create_loss("metrix")(a, p, lam=lam), metrix(a, p, lam=lam))
    torch.testing.assert_close(metrix(a * 1e30, p * 1e-30, lam=lam), metrix(a, p, lam=lam))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": -1.0}, "alpha"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"weight": math.nan}, "weight"),
        ({"lam": torch.ones(4, 2, dtype=torch.float64)}, "lam"),
        ({"lam": torch.full((4, 3), 1.5, dtype=torch.float64)}, "lam"),
        ({"similarity": "l2"}, "similarity"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    a, p = randn(0, 4, 3), randn(1, 4, 3)
    with pytest.raises(ValueError, match=name):
        metrix(a, p, **kwargs)


def test_bad_inputs_name_the_argument():
    a, p = randn(0, 4, 3), randn(1, 4, 3)
    with pytest.raises(ValueError, match="anchor"):
        metrix(a[0], p)
    with pytest.raises(ValueError, match="positive"):
        metrix(a, p[:3])
    with pytest.raises(ValueError, match="positive"):
        metrix(a, p.float())
