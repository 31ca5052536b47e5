import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.losses import AMCL, DegenerateBatchError, amcl, count_skipped, create_loss, get_loss, hard_nce, strict
from tests.losses.helpers import grads, randn


def cos(u, v):
    return (u * v).sum() / (u.norm() * v.norm())


def amcl_loop(z1, z2, temperatures, *, beta):
    """negkit's AMCL, one head, view and pair at a time (float64)."""
    batch, heads = z1.shape[0], z1.shape[1]
    views = torch.cat([z1, z2])
    n = 2 * batch
    per_view = []
    for i in range(n):
        partner = (i + batch) % n
        loss, reg = 0.0, 0.0
        for c in range(heads):

            def logit(j, c=c, i=i):
                return cos(views[i, c], views[j, c]) / temperatures[c, i, j]

            denominator = sum(torch.exp(logit(j)) for j in range(n) if j != i)
            loss = loss - torch.log(torch.exp(logit(partner)) / denominator)
            reg = reg + sum(
                (n / 2) * torch.log(temperatures[c, i, j]) + 1 / temperatures[c, i, j] for j in range(n) if j != i
            ) / (n - 1)
        per_view.append(loss / heads + beta * reg / heads)
    per_view = torch.stack(per_view)
    return 0.5 * (per_view[:batch] + per_view[batch:])


def positive_temperatures(seed, heads, n):
    return 0.05 + torch.rand(heads, n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(1, 3), st.integers(1, 4), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_matches_the_loop_reference(B, C, d, beta, seed):
    z1, z2 = randn(seed, B, C, d, requires_grad=True), randn(seed + 1, B, C, d, requires_grad=True)
    tau = positive_temperatures(seed + 2, C, 2 * B).requires_grad_(True)
    want = amcl_loop(z1, z2, tau, beta=beta)
    got = amcl(z1, z2, tau, beta=beta, reduction="none")
    torch.testing.assert_close(got, want)
    for g_got, g_want in zip(grads(got.mean(), z1, z2, tau), grads(want.mean(), z1, z2, tau), strict=True):
        torch.testing.assert_close(g_got, g_want)


def test_constant_temperature_without_regulariser_is_symmetric_nt_xent():
    z1, z2 = randn(0, 6, 4), randn(1, 6, 4)
    tau = torch.full((1, 12, 12), 0.2, dtype=torch.float64)
    torch.testing.assert_close(amcl(z1, z2, tau, beta=0.0), hard_nce(z1, z2, temperature=0.2, beta=0.0))


def test_gradcheck():
    z1, z2 = randn(0, 3, 2, 3, requires_grad=True), randn(1, 3, 2, 3, requires_grad=True)
    tau = positive_temperatures(2, 2, 6).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, t: amcl(a, b, t, beta=0.1), (z1, z2, tau))


def test_module_temperatures_are_the_official_formula():
    torch.manual_seed(0)
    module = AMCL(heads=2, hidden=8).double()
    z1, z2 = randn(3, 3, 2, 4), randn(4, 3, 2, 4)
    tau = module.temperatures(z1, z2)
    views = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=-1)
    for c in range(2):
        net = module.temperature_nets[c]
        for i in range(6):
            for j in range(6):
                raw = net(torch.cat([views[i, c], views[j, c]]))
                want = 1e-5 + (2.0 - 1e-5) * torch.sigmoid(raw)
                torch.testing.assert_close(tau[c, i, j], want.squeeze())
    torch.testing.assert_close(module(z1, z2), amcl(z1, z2, tau, beta=0.1))
    flat = module(z1[:, 0], z2[:, 0])  # [B,d]: every head sees the same projection
    shared = z1[:, :1].expand(-1, 2, -1), z2[:, :1].expand(-1, 2, -1)
    torch.testing.assert_close(flat, amcl(*shared, module.temperatures(*shared), beta=0.1))
    assert all(g is not None for g in torch.autograd.grad(module(z1, z2), list(module.parameters())))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_low_temperatures(dtype):
    z1, z2 = randn(0, 8, 3, 16, dtype=dtype, requires_grad=True), randn(1, 8, 3, 16, dtype=dtype, requires_grad=True)
    module = create_loss("amcl")  # τ ∈ (1e-5, 2)
    loss = module(z1, z2)
    assert torch.isfinite(loss)
    for g in grads(loss, z1, z2, *module.parameters()):
        assert bool(torch.isfinite(g).all())
    tau = torch.full((3, 16, 16), 0.01, dtype=torch.float32)
    fixed = amcl(z1, z2, tau)
    assert torch.isfinite(fixed) and all(bool(torch.isfinite(g).all()) for g in grads(fixed, z1, z2))


def test_one_sample_and_empty_batches_are_zero_or_strict_error():
    z1, z2 = randn(0, 1, 2, 3, requires_grad=True), randn(1, 1, 2, 3)
    tau = torch.ones(2, 2, 2, dtype=torch.float64)
    with count_skipped() as skipped:
        loss = amcl(z1, z2, tau)
    assert loss.item() == 0.0 and loss.requires_grad and skipped.anchors == 2
    assert bool((grads(loss, z1)[0] == 0).all())
    with strict(), pytest.raises(DegenerateBatchError, match="no negative"):
        amcl(z1, z2, tau)
    empty = amcl(z1[:0], z2[:0], torch.ones(2, 0, 0, dtype=torch.float64))
    assert empty.item() == 0.0 and empty.requires_grad
    with strict(), pytest.raises(DegenerateBatchError, match="empty"):
        amcl(z1[:0], z2[:0], torch.ones(2, 0, 0, dtype=torch.float64))


def test_registry_and_module():
    spec = get_loss("amcl")
    assert spec.function is None and spec.defaults == {"heads": 3, "tau_lo": 1e-5, "tau_hi": 2.0, "beta": 0.1}
    module = create_loss("amcl", heads=2)
    assert isinstance(module, AMCL) and module.heads == 2 and len(module.temperature_nets) == 2
    z1, z2 = randn(0, 4, 2, 3, dtype=torch.float32), randn(1, 4, 2, 3, dtype=torch.float32)
    torch.testing.assert_close(module(z1 * 1e30, z2 * 1e-30), module(z1, z2))
    assert "heads=2" in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"heads": 0}, "heads"),
        ({"hidden": 1.5}, "hidden"),
        ({"tau_lo": 0.0}, "tau_lo"),
        ({"tau_hi": 1e-6}, "tau_hi"),
        ({"beta": -1.0}, "beta"),
        ({"beta": math.nan}, "beta"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AMCL(**kwargs)


def test_bad_inputs_name_the_argument():
    z1, z2, tau = randn(0, 3, 2, 4), randn(1, 3, 2, 4), positive_temperatures(2, 2, 6)
    with pytest.raises(ValueError, match="z1"):
        amcl(z1[0, 0], z2, tau)
    with pytest.raises(ValueError, match="z2"):
        amcl(z1, z2[:2], tau)
    with pytest.raises(ValueError, match="temperatures"):
        amcl(z1, z2, tau[:1])
    with pytest.raises(ValueError, match="temperatures"):
        amcl(z1, z2, -tau)
    with pytest.raises(ValueError, match="beta"):
        amcl(z1, z2, tau, beta=-0.1)
    with pytest.raises(ValueError, match="z2"):
        AMCL(heads=2)(z1, z2[:2])
    with pytest.raises(ValueError, match="temperatures"):
        AMCL(heads=3)(z1, z2)  # 2 heads in the input, 3 in the module
