import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.losses import AdaMEOW, DegenerateBatchError, adameow, count_skipped, create_loss, get_loss, strict
from tests.losses.helpers import grads, randn


def adameow_loop(anchor, positive, weight_logits, *, temperature, similarity="cosine"):
    """AdaMEOW's ``weight_InfoNce`` (−log(d_ii / Σ_j w_ij d_ij), j = i included), one pair at a time."""

    def d(i, j):
        dot = (anchor[i] * positive[j]).sum()
        if similarity == "cosine":
            dot = dot / (anchor[i].norm() * positive[j].norm())
        return torch.exp(dot / temperature)

    out = []
    for i in range(anchor.shape[0]):
        denominator = sum(torch.sigmoid(weight_logits[i, j]) * d(i, j) for j in range(anchor.shape[0]))
        out.append(-torch.log(d(i, i) / denominator))
    return torch.stack(out)


def reference_weight_info_nce(module, z_anchor, z, tau):
    """The reference code's ``weight_InfoNce`` on L2-normalised projections, with the module's MLP + sigmoid."""
    z_anchor, z = torch.nn.functional.normalize(z_anchor, dim=1), torch.nn.functional.normalize(z, dim=1)
    n = z.size(0)
    dots = torch.exp(torch.mm(z_anchor, z.t()) / tau)
    nominator = torch.diag(dots)
    w_anchor = torch.stack([z_anchor[i].unsqueeze(0).repeat(n, 1) for i in range(n)]).reshape(n * n, -1)
    w = z.unsqueeze(0).repeat(n, 1, 1).reshape(n * n, -1)
    weight = torch.sigmoid(module.weight_net(w_anchor + w)).reshape(n, n)
    denominator = torch.mul(dots, weight).sum(axis=1)
    return (-torch.log(nominator / denominator)).mean()


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.floats(0.05, 2.0),
    st.sampled_from(["cosine", "dot"]),
    st.integers(0, 2**31 - 1),
)
def test_matches_the_loop_reference(B, d, temperature, similarity, seed):
    a, p = randn(seed, B, d, requires_grad=True), randn(seed + 1, B, d, requires_grad=True)
    w = randn(seed + 2, B, B, requires_grad=True) * 3
    want = adameow_loop(a, p, w, temperature=temperature, similarity=similarity)
    got = adameow(a, p, w, temperature=temperature, similarity=similarity, reduction="none")
    torch.testing.assert_close(got, want)
    mean = adameow(a, p, w, temperature=temperature, similarity=similarity)
    for g_got, g_want in zip(grads(mean, a, p, w), grads(want.mean(), a, p, w), strict=True):
        torch.testing.assert_close(g_got, g_want)


def test_module_equals_the_reference_code():
    torch.manual_seed(0)
    module = AdaMEOW(0.9).double()
    a, p = randn(1, 6, 4, requires_grad=True), randn(2, 6, 4)
    got = module(a, p)
    want = reference_weight_info_nce(module, a, p, 0.9)
    assert abs(got.item() - want.item()) < 1e-12
    (g_got,), (g_want,) = grads(got, a), grads(want, a)
    torch.testing.assert_close(g_got, g_want)
    params = list(module.parameters())
    fresh = reference_weight_info_nce(module, a, p, 0.9)
    for g_got, g_want in zip(grads(module(a, p), *params), grads(fresh, *params), strict=True):
        torch.testing.assert_close(g_got, g_want)


def test_gradcheck():
    a, p, w = randn(3, 3, 4, requires_grad=True), randn(4, 3, 4, requires_grad=True), randn(5, 3, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, z: adameow(x, y, z, temperature=0.5), (a, p, w))


def test_unit_weights_are_info_nce_without_the_uniform_shift():
    from negkit.losses import info_nce

    a, p = randn(0, 5, 3), randn(1, 5, 3)
    huge = torch.full((5, 5), 60.0, dtype=torch.float64)  # σ(60) = 1 in float64
    torch.testing.assert_close(adameow(a, p, huge, temperature=0.2), info_nce(a, p, temperature=0.2))
    shifted = adameow(a, p, torch.zeros(5, 5, dtype=torch.float64), temperature=0.2)  # w = 1/2 everywhere
    torch.testing.assert_close(shifted, info_nce(a, p, temperature=0.2) - math.log(2.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_temperature_001(dtype):
    module = create_loss("adameow", temperature=0.01)
    a = randn(0, 16, 8, dtype=dtype, requires_grad=True)
    p = randn(1, 16, 8, dtype=dtype, requires_grad=True)
    loss = module(a, p)
    assert torch.isfinite(loss)
    for g in grads(loss, a, p, *module.parameters()):
        assert bool(torch.isfinite(g).all())


def test_empty_batch_is_zero_or_strict_error_and_one_row_is_legal():
    a, p = randn(0, 0, 3, requires_grad=True), randn(1, 0, 3)
    with count_skipped() as skipped:
        loss = adameow(a, p, torch.zeros(0, 0, dtype=torch.float64))
    assert loss.item() == 0.0 and loss.requires_grad and skipped.anchors == 0
    with strict(), pytest.raises(DegenerateBatchError, match="anchor is empty"):
        adameow(a, p, torch.zeros(0, 0, dtype=torch.float64))
    one = adameow(randn(2, 1, 3), randn(3, 1, 3), torch.tensor([[0.3]], dtype=torch.float64))
    torch.testing.assert_close(one, torch.nn.functional.logsigmoid(torch.tensor(0.3, dtype=torch.float64)))


def test_module_registry_and_learning_the_weights():
    spec = get_loss("adameow")
    assert spec.function is None and spec.defaults == {"temperature": 1.0, "hidden": 16}
    module = create_loss("adameow")
    assert isinstance(module, AdaMEOW) and module.temperature == 1.0 and module.hidden == 16
    a, p = randn(0, 6, 4, dtype=torch.float32), randn(1, 6, 4, dtype=torch.float32)
    loss = module(a, p)
    assert set(dict(module.state_dict())) == {f"weight_net.{i}.{n}" for i in (0, 2) for n in ("weight", "bias")}
    logits = module.weight_logits(a, p)
    torch.testing.assert_close(loss, adameow(a, p, logits))
    assert all(g is not None for g in torch.autograd.grad(loss, list(module.parameters())))
    torch.testing.assert_close(module(a * 1e30, p * 1e-30), loss)  # cosine: the MLP sees unit rows


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"similarity": "l2"}, "similarity"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(kwargs, name):
    a, p, w = randn(0, 3, 2), randn(1, 3, 2), randn(2, 3, 3)
    with pytest.raises(ValueError, match=name):
        adameow(a, p, w, **kwargs)
    with pytest.raises(ValueError, match=name):
        AdaMEOW(**kwargs)
    with pytest.raises(ValueError, match="hidden"):
        AdaMEOW(hidden=0)


def test_bad_inputs_name_the_argument():
    a, p, w = randn(0, 3, 2), randn(1, 3, 2), randn(2, 3, 3)
    with pytest.raises(ValueError, match="anchor"):
        adameow(a[0], p, w)
    with pytest.raises(ValueError, match="positive"):
        adameow(a, p[:2], w)
    with pytest.raises(ValueError, match="weight_logits"):
        adameow(a, p, w[:2])
    bad = w.clone()
    bad[0, 0] = math.inf
    with pytest.raises(ValueError, match="weight_logits"):
        adameow(a, p, bad)
    with pytest.raises(ValueError, match="positive"):
        AdaMEOW()(a, p[:2])
