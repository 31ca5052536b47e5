import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from negkit.losses import DCL, dcl
from tests.losses import reference as ref
from tests.losses.helpers import grads, randn


@given(
    st.integers(2, 7),
    st.integers(1, 6),
    st.floats(0.05, 2.0),
    st.one_of(st.none(), st.floats(0.1, 2.0)),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_matches_reference_loops(B, d, temperature, sigma, detach, seed):
    z1, z2 = randn(seed, B, d, requires_grad=True), randn(seed + 1, B, d, requires_grad=True)
    got = dcl(z1, z2, temperature=temperature, sigma=sigma, detach_weights=detach, reduction="none")
    want = ref.dcl(z1, z2, temperature=temperature, sigma=sigma, detach_weights=detach)
    torch.testing.assert_close(got, want)
    for g_got, g_want in zip(grads(got.sum(), z1, z2), grads(want.sum(), z1, z2), strict=True):
        torch.testing.assert_close(g_got, g_want)


@given(st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_differs_from_nt_xent_only_by_the_positive_in_the_denominator(B, seed):
    z1, z2 = randn(seed, B, 5), randn(seed + 1, B, 5)
    Z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (Z @ Z.T / 0.1).fill_diagonal_(float("-inf"))
    partner = (torch.arange(2 * B) + B) % (2 * B)
    log_p_positive = torch.log_softmax(logits, dim=1)[torch.arange(2 * B), partner]
    # NT-Xent: log(e^pos + M) − pos; DCL: log M − pos = NT-Xent + log(1 − p_pos).
    dcl_per_view = ref.nt_xent_views(z1, z2, temperature=0.1) + torch.log1p(-torch.exp(log_p_positive))
    torch.testing.assert_close(
        dcl(z1, z2, temperature=0.1, reduction="none"), 0.5 * (dcl_per_view[:B] + dcl_per_view[B:])
    )


def test_dclw_weights_average_to_one_and_sigma_inf_limit_is_dcl():
    z1, z2 = randn(0, 6, 4), randn(1, 6, 4)
    # As sigma grows the vMF weights tend to 1, so DCLW tends to DCL.
    torch.testing.assert_close(dcl(z1, z2, sigma=1e6), dcl(z1, z2), rtol=1e-5, atol=1e-5)


def test_symmetric_in_the_two_views_and_permutation_invariant():
    z1, z2 = randn(2, 6, 4), randn(3, 6, 4)
    base = dcl(z1, z2, sigma=0.5, reduction="none")
    torch.testing.assert_close(dcl(z2, z1, sigma=0.5, reduction="none"), base)
    perm = torch.tensor([3, 1, 5, 0, 2, 4])
    torch.testing.assert_close(dcl(z1[perm], z2[perm], sigma=0.5, reduction="none"), base[perm])
    torch.testing.assert_close(dcl(z1 * 4, z2 * 0.25, sigma=0.5, reduction="none"), base)


def test_gradcheck_and_module():
    z1, z2 = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: dcl(a, b, temperature=0.3, sigma=0.5), (z1, z2))
    torch.testing.assert_close(DCL(0.3, sigma=0.5)(z1, z2), dcl(z1, z2, temperature=0.3, sigma=0.5))
