"""A learnable temperature (issue 14): every module keeps the tensor it is given, so the temperature receives the
same gradient as through the functional form; an ``nn.Parameter`` is registered (parameters(), state_dict)."""

import pytest
import torch
from torch import nn

from negkit.losses import (
    DCL,
    EMC2Loss,
    GlobalContrastiveLoss,
    HardNCE,
    InfoNCE,
    SupCon,
    create_loss,
    dcl,
    decoupled_softmax,
    emc2,
    hard_nce,
    info_nce,
    sup_con,
)
from negkit.losses.modules import DecoupledSoftmax
from tests.losses.helpers import randn

z1, z2 = randn(0, 6, 4), randn(1, 6, 4)
labels = torch.tensor([0, 1, 0, 1, 2, 2])
negatives = randn(2, 6, 3, 4)
relevance = torch.eye(6)

# (module class, module kwargs, forward inputs, functional form, its inputs)
CASES = {
    "info_nce": (InfoNCE, {}, (z1, z2), info_nce, (z1, z2)),
    "info_nce symmetric": (InfoNCE, {"symmetric": True}, (z1, z2), info_nce, (z1, z2)),
    "sup_con": (SupCon, {}, (torch.cat([z1, z2]), labels.repeat(2)), sup_con, (torch.cat([z1, z2]), labels.repeat(2))),
    "dcl": (DCL, {"sigma": 0.5}, (z1, z2), dcl, (z1, z2)),
    "hard_nce": (HardNCE, {"beta": 1.0}, (z1, z2, labels), hard_nce, (z1, z2, labels)),
    "decoupled_softmax": (DecoupledSoftmax, {}, (z1, z2, relevance), decoupled_softmax, (z1, z2, relevance)),
    "emc2": (EMC2Loss, {}, (z1, z2, negatives), emc2, (z1, z2, negatives)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", ["tensor", "parameter"])
def test_module_temperature_gets_the_functional_gradient(case, kind):
    module_cls, kwargs, inputs, function, function_inputs = CASES[case]
    t_module = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    if kind == "parameter":
        t_module = nn.Parameter(t_module.detach().clone())
    module = module_cls(temperature=t_module, **kwargs)
    assert module.temperature is t_module
    module(*inputs).backward()
    t_function = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    if case == "info_nce symmetric":
        kwargs = {"symmetric": True}
    function(*function_inputs, temperature=t_function, **kwargs).backward()
    assert t_module.grad is not None and t_module.grad.abs() > 0
    torch.testing.assert_close(t_module.grad, t_function.grad)
    registered = [p for p in module.parameters() if p is t_module]
    assert bool(registered) == (kind == "parameter")
    assert ("temperature" in module.state_dict()) == (kind == "parameter")


def test_a_float_or_a_constant_tensor_stays_a_float():
    assert InfoNCE(temperature=torch.tensor(0.3)).temperature == pytest.approx(0.3)
    assert isinstance(create_loss("supcon", temperature=0.07).temperature, float)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        InfoNCE(temperature=torch.tensor(-0.2, requires_grad=True))


def test_a_temperature_learnt_below_zero_is_a_clear_error_at_the_next_call():
    t = nn.Parameter(torch.tensor(0.2, dtype=torch.float64))
    module = InfoNCE(temperature=t)
    with torch.no_grad():
        t.fill_(-0.1)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got -0\.1"):
        module(z1, z2)


def _sogclr_reference(z1, z2, temperature):
    """SogCLR's surrogate at a first visit (γ = 1), written out in float64: rows i of Z = [z1; z2], partner i',
    l = cos / T, g_i = mean_{j ∉ {i, i'}} e^{l_ij} (a constant), S_i = −l_ii' + mean_j (e^{l_ij} / g_i) · l_ij."""
    z = torch.cat([z1, z2])
    n = z.shape[0]
    unit = z / z.norm(dim=1, keepdim=True)
    logits = unit @ unit.T / temperature
    total = 0.0
    for i in range(n):
        partner = (i + n // 2) % n
        others = [j for j in range(n) if j not in (i, partner)]
        g = torch.stack([torch.exp(logits[i, j]) for j in others]).mean().detach()
        weights = [(torch.exp(logits[i, j]) / g).detach() for j in others]
        surrogate = -logits[i, partner] + sum(w * logits[i, j] for w, j in zip(weights, others, strict=True)) / len(
            others
        )
        total = total + surrogate
    return total / n


@pytest.mark.parametrize("kind", ["tensor", "parameter"])
def test_global_contrastive_loss_keeps_a_learnable_temperature(kind):
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    if kind == "parameter":
        t = nn.Parameter(t.detach().clone())
    loss = GlobalContrastiveLoss(10, temperature=t)
    assert loss.temperature is t
    value = loss(z1, z2, torch.arange(6))
    value.backward()
    t_ref = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    expected = _sogclr_reference(z1, z2, t_ref)
    expected.backward()
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(t.grad, t_ref.grad)
    assert ("temperature" in loss.state_dict()) == (kind == "parameter")
