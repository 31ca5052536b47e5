import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.losses import DegenerateBatchError, count_skipped, create_loss, get_loss, info_nce, metrix, strict
from negkit.losses.functional.mixing import metrix_plan, mix_rows
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


# ------------------------------------------------------------------ mixes made outside: input and feature space


def mixed_loop(anchor, positive, mixed, lam, *, temperature, weight):
    """negkit's Metrix with given mix embeddings ``mixed [B,k,d]`` (cosine), one anchor and mix at a time."""
    B, k = lam.shape
    out = []
    for i in range(B):
        logit = [sim(anchor[i], positive[j], "cosine") / temperature for j in range(B)]
        negatives = sum(torch.exp(logit[j]) for j in range(B) if j != i)
        clean_z = torch.exp(logit[i]) + negatives
        terms = []
        for r in range(k):
            m = sim(anchor[i], mixed[i, r], "cosine") / temperature
            as_positive = -torch.log(torch.exp(m) / (torch.exp(m) + negatives))
            as_negative = torch.log(clean_z + torch.exp(m)) - torch.log(clean_z)
            terms.append(lam[i, r] * as_positive + (1 - lam[i, r]) * as_negative)
        out.append(-torch.log(torch.exp(logit[i]) / clean_z) + weight * sum(terms) / k)
    return torch.stack(out)


def test_plan_picks_the_hardest_negatives_and_draws_lambda_as_metrix():
    a, p = randn(0, 7, 4), randn(1, 7, 4)
    plan = metrix_plan(a, p, top_k=3, generator=torch.Generator().manual_seed(5))
    for i in range(7):
        order = sorted((j for j in range(7) if j != i), key=lambda j: -float(sim(a[i], p[j], "cosine")))[:3]
        assert plan.hardest[i].tolist() == order
    assert plan.lam.shape == (7, 3) and bool(((plan.lam > 0) & (plan.lam < 1)).all())
    # the embedding-space mixes of the plan reproduce metrix's own draw, value for value
    mixed = mix_rows(torch.nn.functional.normalize(p, dim=1), plan.hardest, plan.lam)
    own = metrix(a, p, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(metrix(a, p, lam=plan.lam, mixed=mixed), own)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.integers(1, 4), st.floats(0.1, 1.0), st.floats(0.0, 2.0), st.integers(0, 2**31 - 1))
def test_given_mixes_match_the_loop_reference(B, top_k, temperature, weight, seed):
    a, p = randn(seed, B, 3, requires_grad=True), randn(seed + 1, B, 3, requires_grad=True)
    k = min(top_k, B - 1)
    mixed = randn(seed + 2, B, k, 3, requires_grad=True)
    lam = torch.rand(B, k, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64)
    got = metrix(a, p, lam=lam, mixed=mixed, top_k=top_k, temperature=temperature, weight=weight, reduction="none")
    want = mixed_loop(a, p, mixed, lam, temperature=temperature, weight=weight)
    torch.testing.assert_close(got, want)
    for g_got, g_want in zip(grads(got.sum(), a, p, mixed), grads(want.sum(), a, p, mixed), strict=True):
        torch.testing.assert_close(g_got, g_want)


def test_gradcheck_through_the_mixes():
    a, p = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3)
    mixed = randn(2, 4, 2, 3, requires_grad=True)
    lam = torch.rand(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, m: metrix(x, p, lam=lam, mixed=m, top_k=2, temperature=0.5), (a, mixed))


def test_input_space_mixes_of_a_linear_encoder_equal_embedding_space_mixes():
    # f(x) = W x is linear: encoding λ x_i + (1 − λ) x_n gives λ f(x_i) + (1 − λ) f(x_n) (dot similarity)
    weight = randn(0, 5, 2 * 3 * 3)
    x = randn(1, 6, 2, 3, 3)
    encode = lambda images: images.flatten(1) @ weight.T  # noqa: E731
    a, p = randn(2, 6, 5), encode(x)
    plan = metrix_plan(a, p, top_k=2, similarity="dot", generator=torch.Generator().manual_seed(0))
    images = mix_rows(x, plan.hardest, plan.lam)  # [B, k, 2, 3, 3]
    assert images.shape == (6, 2, 2, 3, 3)
    for i in range(6):
        for r in range(2):
            lam, n = plan.lam[i, r].double(), int(plan.hardest[i, r])
            torch.testing.assert_close(images[i, r], lam * x[i] + (1 - lam) * x[n])
    mixed = encode(images.flatten(0, 1)).unflatten(0, (6, 2))
    kw = dict(lam=plan.lam, top_k=2, similarity="dot", temperature=0.5)
    torch.testing.assert_close(metrix(a, p, mixed=mixed, **kw), metrix(a, p, **kw))


def test_mixes_made_outside_are_checked():
    a, p = randn(0, 4, 3), randn(1, 4, 3)
    lam = torch.full((4, 2), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match="mixed needs lam"):
        metrix(a, p, top_k=2, mixed=randn(2, 4, 2, 3))
    with pytest.raises(ValueError, match="mixed"):
        metrix(a, p, top_k=2, lam=lam, mixed=randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="mixed"):
        metrix(a, p, top_k=2, lam=lam, mixed=randn(2, 4, 2, 3, dtype=torch.float32))
    hardest = torch.tensor([[1, 2], [0, 2], [0, 1], [0, 1]])
    with pytest.raises(ValueError, match="partners"):
        mix_rows(p, hardest + 3, lam)
    with pytest.raises(ValueError, match="partners"):
        mix_rows(p, hardest.double(), lam)
    with pytest.raises(ValueError, match="lam"):
        mix_rows(p, hardest, lam[:, :1])
    with pytest.raises(ValueError, match="lam"):
        metrix_plan(a, p, top_k=2, lam=lam[:, :1])
    with pytest.raises(ValueError, match="alpha"):
        metrix_plan(a, p, alpha=0.0)
    assert metrix_plan(a[:1], p[:1]).hardest.shape == (1, 0)
