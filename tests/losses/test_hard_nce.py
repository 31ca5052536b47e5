import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from negkit.losses import DegenerateBatchError, HardNCE, count_skipped, hard_nce, info_nce, strict
from tests.losses import reference as ref
from tests.losses.helpers import grads, randint, randn

common = (
    st.integers(2, 6),
    st.integers(1, 5),
    st.floats(0.1, 1.0),
    st.floats(0.0, 3.0),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)


@given(*common, st.floats(0.0, 0.3))
def test_hucl_matches_reference_loops(B, d, temperature, beta, detach, seed, tau_plus):
    z1, z2 = randn(seed, B, d, requires_grad=True), randn(seed + 1, B, d, requires_grad=True)
    kwargs = dict(temperature=temperature, beta=beta, tau_plus=tau_plus, detach_weights=detach)
    got = hard_nce(z1, z2, reduction="none", **kwargs)
    want = ref.hucl(z1, z2, **kwargs)
    torch.testing.assert_close(got, want)
    for g_got, g_want in zip(grads(got.sum(), z1, z2), grads(want.sum(), z1, z2), strict=True):
        torch.testing.assert_close(g_got, g_want)


@given(*common, st.integers(2, 4))
def test_hscl_matches_reference_loops(B, d, temperature, beta, detach, seed, classes):
    z1, z2 = randn(seed, B, d, requires_grad=True), randn(seed + 1, B, d, requires_grad=True)
    labels = randint(seed + 2, classes, B)
    assume(int(labels.unique().numel()) > 1)
    kwargs = dict(temperature=temperature, beta=beta, detach_weights=detach)
    per_sample, counts, pair_mean = ref.hscl(z1, z2, labels, **kwargs)
    torch.testing.assert_close(hard_nce(z1, z2, labels, reduction="none", **kwargs), per_sample)
    got = hard_nce(z1, z2, labels, **kwargs)
    torch.testing.assert_close(got, pair_mean)
    torch.testing.assert_close((per_sample * counts).sum() / counts.sum(), pair_mean)  # mean = pair-weighted
    for g_got, g_want in zip(grads(got, z1, z2), grads(pair_mean, z1, z2), strict=True):
        torch.testing.assert_close(g_got, g_want)


@given(st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_beta_zero_tau_zero_is_nt_xent(B, seed):
    z1, z2 = randn(seed, B, 4), randn(seed + 1, B, 4)
    nt_xent = ref.nt_xent_views(z1, z2, temperature=0.5)
    torch.testing.assert_close(hard_nce(z1, z2, beta=0.0, reduction="none"), 0.5 * (nt_xent[:B] + nt_xent[B:]))


def test_hscl_with_distinct_labels_and_beta_zero_is_nt_xent_without_the_partner_in_negatives():
    # Distinct labels: the only positive is the other view and the negatives are the 2B − 2 others.
    z1, z2 = randn(4, 5, 3), randn(5, 5, 3)
    torch.testing.assert_close(
        hard_nce(z1, z2, torch.arange(5), beta=0.0, temperature=0.5), hard_nce(z1, z2, beta=0.0, temperature=0.5)
    )


def test_hardness_raises_the_loss_and_weights_hard_negatives():
    z1, z2 = randn(6, 16, 8), randn(7, 16, 8)
    losses = [float(hard_nce(z1, z2, beta=b)) for b in (0.0, 0.5, 1.0, 2.0)]
    # The tilted mean of e^{l} is increasing in beta (the tilt puts mass on larger logits).
    assert losses == sorted(losses) and losses[0] < losses[-1]


def test_detach_changes_gradients_only():
    z1, z2 = randn(8, 4, 3, requires_grad=True), randn(9, 4, 3, requires_grad=True)
    attached = hard_nce(z1, z2, beta=1.0)
    detached = hard_nce(z1, z2, beta=1.0, detach_weights=True)
    torch.testing.assert_close(attached, detached)
    assert not torch.allclose(grads(attached, z1)[0], grads(detached, z1)[0])


def test_debiasing_clamp_holds_at_large_tau_plus():
    # With tau_plus close to 1 the debiased estimate would be negative: the clamp keeps the loss finite.
    z1 = randn(1, 6, 4, requires_grad=True)
    z2 = z1.detach() + 0.01 * randn(2, 6, 4)
    loss = hard_nce(z1, z2, tau_plus=0.95, temperature=0.5)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref.hucl(z1, z2, temperature=0.5, beta=1.0, tau_plus=0.95).mean())
    assert torch.isfinite(grads(loss, z1)[0]).all()


def test_gradcheck():
    z1, z2 = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda a, b: hard_nce(a, b, beta=1.5, tau_plus=0.1), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: hard_nce(a, b, labels, beta=1.5), (z1, z2))


def test_module_and_invariances():
    z1, z2, labels = randn(0, 6, 3), randn(1, 6, 3), torch.tensor([0, 1, 0, 1, 2, 2])
    module = HardNCE(0.5, beta=2.0)
    torch.testing.assert_close(module(z1, z2, labels), hard_nce(z1, z2, labels, beta=2.0))
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    base = hard_nce(z1, z2, labels, beta=2.0, reduction="none")
    torch.testing.assert_close(hard_nce(z1[perm], z2[perm], labels[perm], beta=2.0, reduction="none"), base[perm])
    torch.testing.assert_close(hard_nce(3 * z1, z2 / 2, labels, beta=2.0, reduction="none"), base)


def test_not_the_cross_view_info_nce():
    # hard_nce sees same-view negatives too; info_nce sees only cross-view ones: they must differ.
    z1, z2 = randn(0, 6, 3), randn(1, 6, 3)
    assert not torch.allclose(hard_nce(z1, z2, beta=0.0, temperature=0.5), info_nce(z1, z2, temperature=0.5))


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_all_labels_equal_is_zero_or_an_error_in_strict_mode(beta):
    z1, z2 = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3)
    labels = torch.zeros(4, dtype=torch.long)
    with count_skipped() as skipped:
        loss = hard_nce(z1, z2, labels, beta=beta)
    assert loss.item() == 0.0 and skipped.anchors == 8
    (grad,) = torch.autograd.grad(loss, z1)
    assert (grad == 0).all()
    with strict(), pytest.raises(DegenerateBatchError, match=r"anchors \[0, 1, 2, 3, 4, 5, 6, 7\] have no negative"):
        hard_nce(z1, z2, labels, beta=beta)


def test_view_positives_use_only_the_other_view_against_other_class_negatives():
    z1, z2 = randn(11, 5, 4), randn(12, 5, 4)
    labels = torch.tensor([0, 0, 1, 1, 2])
    got = hard_nce(z1, z2, labels, beta=1.5, positives="view", reduction="none")
    Z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    logits = Z @ Z.T / 0.5
    y = labels.repeat(2)
    per_view = []
    for i in range(10):
        partner = (i + 5) % 10
        negatives = [j for j in range(10) if y[j] != y[i]]
        w = torch.exp(1.5 * logits[i, negatives])
        tilted_mean = (w * torch.exp(logits[i, negatives])).sum() / w.sum()
        pos = torch.exp(logits[i, partner])
        per_view.append(-torch.log(pos / (pos + len(negatives) * tilted_mean)))
    per_view = torch.stack(per_view)
    torch.testing.assert_close(got, 0.5 * (per_view[:5] + per_view[5:]))
    with pytest.raises(ValueError, match="positives must be 'label' or 'view'"):
        hard_nce(z1, z2, labels, positives="all")
