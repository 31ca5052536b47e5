import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from negkit.losses import DegenerateBatchError, SupCon, hard_nce, strict, sup_con
from tests.losses import reference as ref
from tests.losses.helpers import grads, randint, randn


@given(st.integers(2, 10), st.integers(1, 6), st.integers(1, 5), st.floats(0.05, 2.0), st.integers(0, 2**31 - 1))
def test_matches_reference_loops(N, d, classes, temperature, seed):
    x = randn(seed, N, d, requires_grad=True)
    labels = randint(seed + 1, classes, N)
    want, keep = ref.sup_con(x, labels, temperature=temperature)
    assume(bool(keep.any()))
    got = sup_con(x, labels, temperature=temperature, reduction="none")
    torch.testing.assert_close(got, torch.where(keep, want, torch.zeros_like(want)))
    mean = sup_con(x, labels, temperature=temperature)
    torch.testing.assert_close(mean, ref.masked_mean(want, keep))
    torch.testing.assert_close(grads(mean, x)[0], grads(ref.masked_mean(want, keep), x)[0])


@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_one_positive_per_anchor_is_nt_xent(B, seed):
    z1, z2 = randn(seed, B, 4), randn(seed + 1, B, 4)
    labels = torch.arange(B).repeat(2)
    if B == 1:
        got = sup_con(torch.cat([z1, z2]), labels, temperature=0.3, reduction="none")
        torch.testing.assert_close(got, torch.zeros(2, dtype=got.dtype))  # log(1/1): the positive is alone
        return
    got = sup_con(torch.cat([z1, z2]), labels, temperature=0.3, reduction="none")
    torch.testing.assert_close(got, ref.nt_xent_views(z1, z2, temperature=0.3))
    torch.testing.assert_close(got.mean(), hard_nce(z1, z2, temperature=0.3, beta=0.0))


def test_anchors_without_positive_are_left_out():
    x = randn(0, 5, 3)
    labels = torch.tensor([0, 0, 1, 2, 2])
    none = sup_con(x, labels, reduction="none")
    assert none[2] == 0
    torch.testing.assert_close(sup_con(x, labels), none[[0, 1, 3, 4]].mean())
    torch.testing.assert_close(sup_con(x, labels, reduction="sum"), none.sum())


def test_permutation_and_scale_invariance():
    x, labels = randn(1, 9, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3])
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    base = sup_con(x, labels, reduction="none")
    torch.testing.assert_close(sup_con(x[perm], labels[perm], reduction="none"), base[perm])
    torch.testing.assert_close(sup_con(x * 7.0, labels, reduction="none"), base)


def test_identical_same_class_rows_give_the_analytic_value():
    # Two classes of 3 identical unit vectors, the classes orthogonal: l = 1/T within class, 0 across.
    T = 0.5
    e = torch.eye(2, dtype=torch.float64)
    x = torch.cat([e[0].expand(3, 2), e[1].expand(3, 2)])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    denominator = 2 * torch.exp(torch.tensor(1 / T, dtype=torch.float64)) + 3
    expected = -(1 / T - torch.log(denominator))
    torch.testing.assert_close(sup_con(x, labels, temperature=T), expected)


def test_gradcheck():
    x = randn(0, 6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda x: sup_con(x, labels, temperature=0.4), (x,))


def test_module():
    x, labels = randn(0, 6, 3), torch.tensor([0, 1, 0, 1, 2, 2])
    torch.testing.assert_close(SupCon(0.2)(x, labels), sup_con(x, labels, temperature=0.2))
    module = SupCon()
    assert module(x, labels).item() > 0 and module.skipped_anchors == 0
    assert module(x, torch.tensor([0, 1, 0, 3, 4, 5])).item() > 0 and module.skipped_anchors == 4
    assert module(x, torch.arange(6)).item() == 0.0 and module.skipped_anchors == 6
    with strict(), pytest.raises(DegenerateBatchError, match="no anchor has a positive"):
        module(x, torch.arange(6))
