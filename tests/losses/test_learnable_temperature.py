"""A learnable temperature on every path (issue 17): the gradient of the temperature (and of CLIP's log-scale)
through the plain and the tiled paths, against float64 explicit loops and finite differences (gradcheck); the
``LogitScale`` module and ``learnable_temperature=True`` on every loss module (gradient reaches the optimiser,
state in ``state_dict``)."""

import math

import pytest
import torch
from torch import nn

import negkit.losses.functional.nce as nce
from negkit.losses import (
    DCL,
    EMC2Loss,
    HardNCE,
    InfoNCE,
    SoftTopK,
    SupCon,
    dcl,
    decoupled_softmax,
    emc2,
    hard_nce,
    info_nce,
    sup_con,
)
from negkit.losses.functional.tiled import tiled_logsumexp, tiled_symmetric_logsumexp
from negkit.losses.modules import AdaMEOW, DecoupledSoftmax, LogitScale
from tests.losses import reference as ref
from tests.losses.helpers import randint, randn

B, D = 6, 4
a, p = randn(0, B, D), randn(1, B, D)
shared, own = randn(2, 3, D), randn(3, B, 2, D)
log_w = 0.3 * randn(4, 3)
labels = torch.tensor([0, 1, 0, 2, 1, 3])


def t64(value: float = 0.3) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64, requires_grad=True)


def _reference_info_nce(temperature, *, symmetric=False, **kwargs):
    forward = ref.info_nce(a, p, temperature=temperature, **kwargs)
    if not symmetric:
        return forward.mean()
    reverse = ref.info_nce(p, a, temperature=temperature, labels=kwargs.get("labels"))
    return 0.5 * (forward.mean() + reverse.mean())


# (info_nce kwargs, reference kwargs): every candidate layout of the core
INFO_NCE_CASES = {
    "in-batch": ({}, {}),
    "labels": ({"labels": labels}, {"labels": labels}),
    "shared + weights": (
        {"negatives": shared, "negative_log_weights": log_w},
        {"negatives": shared, "negative_log_weights": log_w},
    ),
    "per-anchor only": (
        {"negatives": own, "in_batch_negatives": False},
        {"negatives": own, "in_batch_negatives": False},
    ),
    "symmetric": ({"symmetric": True}, {"symmetric": True}),
    "symmetric + labels + shared": (
        {"symmetric": True, "labels": labels, "negatives": shared},
        {"symmetric": True, "labels": labels, "negatives": shared},
    ),
    "dot": ({"similarity": "dot"}, {"similarity": "dot"}),
}


@pytest.mark.parametrize("case", sorted(INFO_NCE_CASES))
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_info_nce_temperature_gradient_equals_the_loop_reference(case, chunk_size):
    kwargs, ref_kwargs = INFO_NCE_CASES[case]
    kwargs = dict(kwargs)
    negatives = kwargs.pop("negatives", None)
    t = t64()
    value = info_nce(a, p, negatives, temperature=t, chunk_size=chunk_size, **kwargs)
    (grad,) = torch.autograd.grad(value, t)
    t_ref = t64()
    expected = _reference_info_nce(t_ref, **ref_kwargs)
    (expected_grad,) = torch.autograd.grad(expected, t_ref)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert grad.abs() > 1e-6


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck_info_nce_in_the_log_scale(chunk_size, symmetric):
    """CLIP's parametrisation: T = exp(−log_scale); gradcheck through every input and the log-scale."""
    anchor, positive = a.clone().requires_grad_(True), p.clone().requires_grad_(True)
    negatives = shared.clone().requires_grad_(True)
    log_scale = torch.tensor(math.log(1 / 0.3), dtype=torch.float64, requires_grad=True)

    def loss(anchor, positive, negatives, log_scale):
        return info_nce(
            anchor,
            positive,
            negatives,
            temperature=torch.exp(-log_scale),
            labels=labels,
            symmetric=symmetric,
            chunk_size=chunk_size,
            reduction="none",
        )

    assert torch.autograd.gradcheck(loss, (anchor, positive, negatives, log_scale))


def test_gradcheck_of_the_tiled_functions_in_the_scale():
    x, c = randn(5, 5, 3, requires_grad=True), randn(6, 7, 3, requires_grad=True)
    w = randn(7, 7, requires_grad=True)
    scale = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    row_labels, col_labels = randint(8, 3, 5), randint(9, 3, 7)
    own_column = torch.tensor([0, 2, 4, 6, 1])

    def one_way(x, c, w, scale):
        return tiled_logsumexp(
            x,
            c,
            scale,
            log_weights=w,
            row_labels=row_labels,
            col_labels=col_labels,
            own_column=own_column,
            chunk_size=3,
        )

    assert torch.autograd.gradcheck(one_way, (x, c, w, scale))
    y = randn(10, 5, 3, requires_grad=True)
    for symmetric_labels in (None, row_labels):
        assert torch.autograd.gradcheck(
            lambda x, y, scale, lab=symmetric_labels: tiled_symmetric_logsumexp(x, y, scale, labels=lab, chunk_size=2),
            (x, y, scale),
        )


def test_tiled_symmetric_is_one_pass_over_the_tiles(monkeypatch):
    calls = {"one_way": 0, "symmetric": 0}
    one_way, symmetric = nce.tiled_logsumexp, nce.tiled_symmetric_logsumexp

    def count(name, function):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(nce, "tiled_logsumexp", count("one_way", one_way))
    monkeypatch.setattr(nce, "tiled_symmetric_logsumexp", count("symmetric", symmetric))
    t = t64()
    info_nce(a, p, temperature=t, symmetric=True, chunk_size=2).backward()
    assert calls == {"one_way": 0, "symmetric": 1}
    t_plain = t64()
    info_nce(a, p, temperature=t_plain, symmetric=True).backward()
    torch.testing.assert_close(t.grad, t_plain.grad)


@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_sup_con_temperature_gradient(chunk_size):
    x = torch.cat([a, p])
    y = labels.repeat(2)
    t = t64(0.2)
    value = sup_con(x, y, temperature=t, chunk_size=chunk_size)
    (grad,) = torch.autograd.grad(value, t)
    t_ref = t64(0.2)
    losses, keep = ref.sup_con(x, y, temperature=t_ref)
    expected = ref.masked_mean(losses, keep)
    (expected_grad,) = torch.autograd.grad(expected, t_ref)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert torch.autograd.gradcheck(
        lambda t: sup_con(x, y, temperature=t, chunk_size=chunk_size, reduction="none"), (t64(0.2),)
    )


def test_dcl_and_dclw_temperature_gradient():
    for sigma in (None, 0.5):
        t = t64()
        value = dcl(a, p, temperature=t, sigma=sigma)
        (grad,) = torch.autograd.grad(value, t)
        t_ref = t64()
        (expected_grad,) = torch.autograd.grad(ref.dcl(a, p, temperature=t_ref, sigma=sigma).mean(), t_ref)
        torch.testing.assert_close(grad, expected_grad)
        assert torch.autograd.gradcheck(lambda t, s=sigma: dcl(a, p, temperature=t, sigma=s), (t64(),))


def test_hard_nce_and_decoupled_softmax_temperature_gradient():
    # H-SCL (no clamp: its gradient in T is smooth) against the loop reference
    t = t64(0.5)
    (grad,) = torch.autograd.grad(hard_nce(a, p, labels, temperature=t, beta=0.7), t)
    t_ref = t64(0.5)
    (expected,) = torch.autograd.grad(ref.hscl(a, p, labels, temperature=t_ref, beta=0.7)[2], t_ref)
    torch.testing.assert_close(grad, expected)
    # H-UCL: finite differences (the clamp's floor n·e^{−1/T} is a constant of the backward pass, and inactive here)
    assert torch.autograd.gradcheck(lambda t: hard_nce(a, p, temperature=t, beta=0.5, tau_plus=0.1), (t64(0.5),))
    relevance = torch.eye(B, 8)
    relevance[0, 7] = 1
    items = randn(11, 8, D)
    t = t64(0.2)
    (grad,) = torch.autograd.grad(decoupled_softmax(a, items, relevance, temperature=t), t)
    t_ref = t64(0.2)
    losses, keep = ref.decoupled_softmax(a, items, relevance, temperature=t_ref)
    (expected,) = torch.autograd.grad(ref.masked_mean(losses, keep), t_ref)
    torch.testing.assert_close(grad, expected)


def test_emc2_temperature_gradcheck():
    assert torch.autograd.gradcheck(lambda t: emc2(a, p, own, temperature=t), (t64(0.4),))


# --------------------------------------------------------------------------------------------- LogitScale


def test_logit_scale_is_log_inverse_temperature_with_clip_clamp():
    scale = LogitScale(0.07)
    assert list(scale.state_dict()) == ["log_scale"]
    assert scale.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert scale.temperature().item() == pytest.approx(0.07)
    assert scale().item() == pytest.approx(0.07)
    assert scale.scale().item() == pytest.approx(1 / 0.07)
    # d T / d log_scale = −T inside the bounds
    (grad,) = torch.autograd.grad(scale.temperature(), scale.log_scale)
    assert grad.item() == pytest.approx(-0.07)
    with torch.no_grad():
        scale.log_scale.fill_(math.log(300.0))  # beyond CLIP's bound of 100
    assert scale.scale().item() == pytest.approx(100.0)
    assert scale.temperature().item() == pytest.approx(0.01)
    (grad,) = torch.autograd.grad(scale.temperature(), scale.log_scale)
    assert grad.item() == 0.0  # at the bound, no gradient pushes it further
    scale.clamp_()
    assert scale.log_scale.item() == pytest.approx(math.log(100.0))
    low = LogitScale(0.5, min_scale=1.0)
    with torch.no_grad():
        low.log_scale.fill_(-3.0)
    assert low.temperature().item() == pytest.approx(1.0)


def test_logit_scale_errors():
    with pytest.raises(ValueError, match="temperature must be in"):
        LogitScale(0.001)  # scale 1000 > 100
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        LogitScale(0.0)
    with pytest.raises(ValueError, match="min_scale must be <= max_scale"):
        LogitScale(0.1, max_scale=10, min_scale=20)
    with pytest.raises(ValueError, match="learnable_temperature=True makes the module's own LogitScale"):
        InfoNCE(temperature=torch.tensor(0.1, requires_grad=True), learnable_temperature=True)


z1, z2 = randn(20, B, D), randn(21, B, D)
relevance = torch.eye(B)
# module, forward inputs
MODULES = {
    "InfoNCE": (lambda **kw: InfoNCE(**kw), (z1, z2)),
    "InfoNCE symmetric tiled": (lambda **kw: InfoNCE(symmetric=True, **kw), (z1, z2)),
    "SupCon": (lambda **kw: SupCon(**kw), (torch.cat([z1, z2]), labels.repeat(2))),
    "DCL": (lambda **kw: DCL(sigma=0.5, **kw), (z1, z2)),
    "HardNCE": (lambda **kw: HardNCE(**kw), (z1, z2, labels)),
    "DecoupledSoftmax": (lambda **kw: DecoupledSoftmax(**kw), (z1, z2, relevance)),
    "EMC2Loss": (lambda **kw: EMC2Loss(**kw), (z1, z2, own)),
    "SoftTopK": (lambda **kw: SoftTopK(k=2, **kw), (z1, z2, relevance)),
    "AdaMEOW": (lambda **kw: AdaMEOW(**kw).double(), (z1, z2)),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_learnable_temperature_reaches_the_optimiser_and_the_state_dict(name):
    build, inputs = MODULES[name]
    module = build(temperature=0.2, learnable_temperature=True).double()
    assert isinstance(module.temperature, LogitScale)
    assert "temperature.log_scale" in module.state_dict()
    assert any(param is module.temperature.log_scale for param in module.parameters())
    optimiser = torch.optim.SGD(module.parameters(), lr=0.1)
    module(*inputs).backward()
    grad = module.temperature.log_scale.grad
    assert grad is not None and grad.abs() > 0
    before = module.temperature.log_scale.detach().clone()
    optimiser.step()
    assert module.temperature.log_scale.item() != before.item()
    # the state travels: a fresh module loaded from the state_dict computes the same loss
    fresh = build(temperature=0.5, learnable_temperature=True).double()
    if name == "AdaMEOW":
        fresh(*inputs)  # materialise the lazy MLP before loading
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh(*inputs), module(*inputs))


def test_module_log_scale_gradient_equals_the_functional_one_on_the_tiled_path():
    scale = LogitScale(0.25).double()
    module = InfoNCE(temperature=scale, symmetric=True)
    assert module.temperature is scale
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nce, "AUTO_TILE_LOGITS", 4)  # tiles without chunk_size
        module(z1, z2).backward()
    log_scale = torch.tensor(math.log(4.0), dtype=torch.float64, requires_grad=True)
    info_nce(z1, z2, temperature=torch.exp(-log_scale), symmetric=True).backward()
    torch.testing.assert_close(scale.log_scale.grad, log_scale.grad)


def test_an_nn_parameter_temperature_still_works_on_the_tiled_path():
    t = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
    InfoNCE(temperature=t)(z1, z2).backward()
    t_tiled = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
    info_nce(z1, z2, temperature=t_tiled, chunk_size=2).backward()
    torch.testing.assert_close(t.grad, t_tiled.grad)


@pytest.mark.parametrize("loss", ["info_nce", "symmetric_info_nce", "decoupled_softmax", "mw_auc"])
def test_negkit_loss_learns_a_logit_scale(loss):
    from negkit.integrations.sentence_transformers import NegkitLoss

    adapter = NegkitLoss(nn.Identity(), loss, temperature=0.1, learnable_temperature=True).double()
    assert isinstance(adapter.temperature, LogitScale)
    assert "temperature.log_scale" in adapter.state_dict()
    columns = [z1, z2, randn(30, B, D)]
    adapter.compute_loss_from_embeddings(columns).backward()
    grad = adapter.temperature.log_scale.grad
    assert grad is not None and grad.abs() > 0
    assert adapter.get_config_dict()["temperature"] == pytest.approx(0.1)
    fixed = NegkitLoss(nn.Identity(), loss, temperature=0.1)
    torch.testing.assert_close(
        NegkitLoss(nn.Identity(), loss, temperature=LogitScale(0.1).double()).compute_loss_from_embeddings(columns),
        fixed.compute_loss_from_embeddings(columns),
    )
