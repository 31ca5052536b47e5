import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from negkit.losses import DecoupledSoftmax, DegenerateBatchError, count_skipped, decoupled_softmax, info_nce, strict
from tests.losses import reference as ref
from tests.losses.helpers import grads, randn


@given(
    st.integers(1, 6),
    st.integers(2, 9),
    st.integers(1, 5),
    st.floats(0.03, 1.0),
    st.sampled_from(["cosine", "dot"]),
    st.integers(0, 2**31 - 1),
)
def test_matches_reference_loops(B, N, d, temperature, similarity, seed):
    q, items = randn(seed, B, d, requires_grad=True), randn(seed + 1, N, d, requires_grad=True)
    generator = torch.Generator().manual_seed(seed)
    relevance = (torch.rand(B, N, generator=generator) < 0.4).float()
    relevance[:, -1] = 0  # every query keeps a non-relevant item
    want, keep = ref.decoupled_softmax(q, items, relevance, temperature=temperature, similarity=similarity)
    assume(bool(keep.any()))
    got = decoupled_softmax(q, items, relevance, temperature=temperature, similarity=similarity, reduction="none")
    torch.testing.assert_close(got, torch.where(keep, want, torch.zeros_like(want)))
    mean = decoupled_softmax(q, items, relevance, temperature=temperature, similarity=similarity)
    for g_got, g_want in zip(grads(mean, q, items), grads(ref.masked_mean(want, keep), q, items), strict=True):
        torch.testing.assert_close(g_got, g_want)


def test_one_relevant_item_per_query_is_info_nce():
    q, items = randn(0, 5, 4), randn(1, 5, 4)
    torch.testing.assert_close(
        decoupled_softmax(q, items, torch.eye(5), temperature=0.1), info_nce(q, items, temperature=0.1)
    )


def test_positives_do_not_compete_with_each_other():
    # Adding a second positive with a huge score does not change the first positive's term.
    q = randn(0, 1, 4)
    items = randn(1, 6, 4)
    relevance = torch.tensor([[1.0, 0, 0, 0, 0, 0]])
    first = decoupled_softmax(q, items, relevance)
    items2 = torch.cat([items, q.clone()])  # a perfect match, also relevant
    relevance2 = torch.tensor([[1.0, 0, 0, 0, 0, 0, 1]])
    both = decoupled_softmax(q, items2, relevance2)
    perfect = decoupled_softmax(q, items2[1:], torch.tensor([[0.0, 0, 0, 0, 0, 1]]))  # same negatives
    torch.testing.assert_close(both, 0.5 * (first + perfect))


def test_bool_relevance_gradcheck_and_module():
    q, items = randn(0, 3, 3, requires_grad=True), randn(1, 5, 3, requires_grad=True)
    relevance = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]).bool()
    assert torch.autograd.gradcheck(lambda a, b: decoupled_softmax(a, b, relevance, temperature=0.3), (q, items))
    torch.testing.assert_close(
        DecoupledSoftmax(0.3)(q, items, relevance.float()), decoupled_softmax(q, items, relevance, temperature=0.3)
    )
    assert decoupled_softmax(q, items, relevance, reduction="none")[2] == 0


def test_all_relevant_row_is_skipped_or_an_error_in_strict_mode():
    q, items = randn(0, 2, 3, requires_grad=True), randn(1, 3, 3)
    relevance = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    with count_skipped() as skipped:
        loss = decoupled_softmax(q, items, relevance, reduction="none")
    assert skipped.anchors == 1 and loss[1] == 0
    torch.testing.assert_close(loss[0], decoupled_softmax(q[:1], items, relevance[:1]))
    torch.testing.assert_close(decoupled_softmax(q, items, relevance), loss[0])
    with strict(), pytest.raises(DegenerateBatchError, match=r"anchors \[1\] have no negative"):
        decoupled_softmax(q, items, relevance)
