import math

import pytest
import torch

from negkit.losses import DegenerateBatchError, GlobalContrastiveLoss, dcl, strict
from tests.losses.helpers import randn


def reference_global(z1, z2, log_u_before, index, gamma, temperature):
    """SogCLR's update and surrogate written with plain exp() in float64 from algorithms.md §5.2."""
    B = z1.shape[0]
    Z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    logits = Z @ Z.T / temperature
    surrogate, new_u = [], torch.zeros(B, dtype=torch.float64)
    us = []
    for r in range(2 * B):
        partner = (r + B) % (2 * B)
        negatives = [j for j in range(2 * B) if j not in (r, partner)]
        g = sum(torch.exp(logits[r, j]) for j in negatives) / (2 * B - 2)
        stored = log_u_before[index[r % B]]
        u = g if math.isinf(stored) else (1 - gamma) * math.exp(stored) + gamma * g
        us.append(u)
        weighted = sum((torch.exp(logits[r, j]) / u).detach() * logits[r, j] for j in negatives) / (2 * B - 2)
        surrogate.append(-logits[r, partner] + weighted)
    for i in range(B):
        new_u[i] = (us[i] + us[i + B]) / 2
    surrogate = torch.stack(surrogate)
    return 0.5 * (surrogate[:B] + surrogate[B:]), new_u


def test_update_and_surrogate_match_the_reference_over_several_steps():
    loss = GlobalContrastiveLoss(10, temperature=0.5, gamma=0.7).double()
    for step, index in enumerate([torch.tensor([0, 3, 5, 7]), torch.tensor([3, 5, 1, 2]), torch.tensor([7, 0, 2, 9])]):
        z1 = randn(step, 4, 6, requires_grad=True)
        z2 = randn(step + 10, 4, 6, requires_grad=True)
        before = loss.log_u.clone()
        want, new_u = reference_global(z1, z2, before.tolist(), index.tolist(), 0.7, 0.5)
        got = GlobalContrastiveLoss.forward(loss, z1, z2, index)
        torch.testing.assert_close(got, want.mean())
        torch.testing.assert_close(loss.log_u[index].exp(), new_u)
        g_got = torch.autograd.grad(got, (z1, z2))
        g_want = torch.autograd.grad(want.mean(), (z1, z2))
        for a, b in zip(g_got, g_want, strict=True):
            torch.testing.assert_close(a, b)


def test_first_visit_gradient_is_the_gradient_of_the_decoupled_loss():
    # With u equal to this batch's estimate the surrogate's gradient is that of −l_pos + log mean exp(l_neg):
    # DCL up to the constant log(2B − 2), which is also the estimated global loss.
    z1, z2 = randn(0, 8, 5, requires_grad=True), randn(1, 8, 5, requires_grad=True)
    loss = GlobalContrastiveLoss(8, temperature=0.1).double()
    surrogate = loss(z1, z2, torch.arange(8))
    reference = dcl(z1, z2, temperature=0.1)
    for a, b in zip(torch.autograd.grad(surrogate, (z1, z2)), torch.autograd.grad(reference, (z1, z2)), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(loss.last_global_loss, reference.detach() - math.log(14))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_low_temperature_and_state_survives_a_checkpoint(dtype):
    z1 = randn(0, 32, 16).to(dtype).requires_grad_(True)
    z2 = (z1.detach() + 0.01 * randn(1, 32, 16).to(dtype)).requires_grad_(True)
    loss = GlobalContrastiveLoss(100, temperature=0.01)
    out = loss(z1, z2, torch.arange(32))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z1.grad).all() and torch.isfinite(loss.log_u[:32]).all()
    assert torch.isneginf(loss.log_u[32:]).all()  # never visited
    restored = GlobalContrastiveLoss(100, temperature=0.01)
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.log_u, loss.log_u)


def test_cosine_gamma_schedule_and_errors():
    loss = GlobalContrastiveLoss(5, gamma=0.2, gamma_schedule="cosine", decay_epochs=4)
    values = []
    for epoch in range(6):
        loss.set_epoch(epoch)
        values.append(loss.gamma)
    assert values[0] == pytest.approx(1.0) and values[2] == pytest.approx(0.6) and values[4:] == [0.2, 0.2]
    z = randn(0, 3, 4).float()
    for call, message in [
        (lambda: GlobalContrastiveLoss(5, temperature=0), "temperature"),
        (lambda: GlobalContrastiveLoss(5, gamma=0.0), "gamma must be > 0"),
        (lambda: GlobalContrastiveLoss(5, gamma_schedule="step"), "gamma_schedule"),
        (lambda: loss(z, z, torch.tensor([0, 1, 5])), r"index must lie in \[0, 5\)"),
        (lambda: loss(z, z, torch.tensor([0, 1, 1])), "index holds a sample twice"),
        (lambda: loss(z, z, torch.tensor([0.0, 1, 2])), "index must hold integer ids"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("batch", [0, 1])
def test_a_batch_without_negatives_is_zero_and_leaves_the_estimates(batch):
    loss = GlobalContrastiveLoss(5)
    z1, z2 = randn(0, batch, 4, requires_grad=True), randn(1, batch, 4, requires_grad=True)
    index = torch.arange(batch)
    before = loss.log_u.clone()
    value = loss(z1, z2, index)
    assert value.item() == 0.0 and value.requires_grad and loss.skipped_anchors == 2 * batch
    value.backward()
    assert (z1.grad == 0).all() and torch.equal(loss.log_u, before) and loss.last_global_loss is None
    with strict(), pytest.raises(DegenerateBatchError, match="has no negative"):
        loss(z1, z2, index)
