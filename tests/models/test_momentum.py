"""The momentum (EMA) key encoder: update_momentum, the momentum schedules, MomentumEncoder's BN modes and state."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from negkit.models import build_model
from negkit.models.momentum import MomentumEncoder, momentum_at, update_momentum


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), feature_dim=16, hidden_dim=32, projection_dim=8)


def run_some_batches(model: nn.Module, seed: int = 5) -> None:
    """Change the running statistics of the model's batch norms (train-mode forward passes)."""
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8, generator=generator) * 3 + 1)


@pytest.mark.parametrize("m", [0.0, 0.3, 0.99, 1.0])
def test_update_momentum_is_the_ema_of_every_parameter(m):
    online, ema = small_model(0), small_model(1)
    before = [p.detach().double().clone() for p in ema.parameters()]
    update_momentum(online, ema, m)
    for old, new, source in zip(before, ema.parameters(), online.parameters(), strict=True):
        expected = m * old + (1 - m) * source.detach().double()
        torch.testing.assert_close(new.double(), expected, rtol=1e-6, atol=1e-7)
        assert not new.requires_grad or new.grad is None
    if m == 0.0:
        assert all(torch.equal(a, b) for a, b in zip(online.parameters(), ema.parameters(), strict=True))


def test_update_momentum_leaves_buffers_alone_unless_asked():
    online, ema = small_model(0), small_model(0)
    run_some_batches(online)
    buffers_before = [b.clone() for b in ema.buffers()]
    update_momentum(online, ema, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(buffers_before, ema.buffers(), strict=True))
    update_momentum(online, ema, 0.5, buffers=True)
    for old, new, source in zip(buffers_before, ema.buffers(), online.buffers(), strict=True):
        if old.is_floating_point():
            torch.testing.assert_close(new, 0.5 * old + 0.5 * source)
        else:  # num_batches_tracked is copied
            assert torch.equal(new, source)


def test_update_momentum_errors():
    online = small_model(0)
    with pytest.raises(ValueError, match=r"m must be <= 1\.0"):
        update_momentum(online, copy.deepcopy(online), 1.5)
    with pytest.raises(ValueError, match=r"m must be >= 0\.0"):
        update_momentum(online, copy.deepcopy(online), -0.1)
    with pytest.raises(ValueError, match="same parameters"):
        update_momentum(online, nn.Linear(3, 2), 0.9)
    other = build_model("mlp", (1, 8, 8), feature_dim=16, hidden_dim=24, projection_dim=8)
    with pytest.raises(ValueError, match="same parameters"):
        update_momentum(online, other, 0.9)


def test_momentum_schedules():
    assert momentum_at(0, None, 0.99) == 0.99 and momentum_at(500, 10, 0.99) == 0.99
    total, base = 100, 0.9
    assert momentum_at(0, total, base, "cosine") == pytest.approx(base)
    assert momentum_at(total, total, base, "cosine") == pytest.approx(1.0)
    assert momentum_at(2 * total, total, base, "cosine") == pytest.approx(1.0)
    assert momentum_at(total // 2, total, base, "cosine") == pytest.approx(1 - (1 - base) / 2)
    # BYOL's formula, written out: 1 − (1 − m0)(cos(πk/K) + 1)/2
    assert momentum_at(25, total, base, "cosine") == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)
    values = [momentum_at(step, total, base, "cosine") for step in range(total + 1)]
    assert all(a <= b for a, b in itertools.pairwise(values))  # rises monotonically
    with pytest.raises(ValueError, match="momentum schedule must be one of"):
        momentum_at(0, 10, 0.9, "linear")
    with pytest.raises(ValueError, match="needs total_steps"):
        momentum_at(0, None, 0.9, "cosine")


def test_the_key_encoder_starts_as_a_copy_and_takes_no_gradient():
    online = small_model(0)
    keys = MomentumEncoder(online, 0.9)
    assert all(not p.requires_grad for p in keys.parameters())
    assert all(p.requires_grad for p in online.parameters())
    x = torch.rand(6, 1, 8, 8)
    online.train()
    out = keys(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, online(x).detach())  # same weights, both in train mode (batch statistics)


def test_bn_modes_use_batch_or_running_statistics():
    online = small_model(0)
    run_some_batches(online)
    batch_keys, running_keys = MomentumEncoder(online, 0.0, bn="batch"), MomentumEncoder(online, 0.0, bn="running")
    for encoder in (batch_keys, running_keys):
        encoder.update(online)  # m = 0: a copy of the online weights (and, for "running", of its statistics)
    x = torch.rand(10, 1, 8, 8)
    reference = copy.deepcopy(online)
    with torch.no_grad():
        torch.testing.assert_close(batch_keys(x), reference.train()(x))
        reference = copy.deepcopy(online)
        torch.testing.assert_close(running_keys(x), reference.eval()(x))
        # the running mode does not depend on the other rows of the batch; the batch mode does
        torch.testing.assert_close(running_keys(x[:3]), running_keys(x)[:3])
        assert not torch.allclose(batch_keys(x[:3]), batch_keys(x)[:3])


def test_update_follows_the_schedule_and_the_state_resumes():
    online = small_model(0)
    keys = MomentumEncoder(online, 0.5, schedule="cosine", total_steps=4)
    used = []
    optimizer = torch.optim.SGD(online.parameters(), lr=0.1)
    for step in range(3):
        optimizer.zero_grad()
        online(torch.rand(8, 1, 8, 8)).pow(2).sum().backward()
        optimizer.step()
        used.append(keys.update(online))
        if step == 0:
            saved = copy.deepcopy(keys.state_dict())
            online_after_first = copy.deepcopy(online)
    assert used == pytest.approx([momentum_at(s, 4, 0.5, "cosine") for s in range(3)])
    assert int(keys.steps) == 3
    restored = MomentumEncoder(small_model(3), 0.5, schedule="cosine", total_steps=4)
    restored.load_state_dict(saved)
    assert int(restored.steps) == 1 and restored.current_momentum() == pytest.approx(used[1])
    for a, b in zip(
        restored.encoder.parameters(), MomentumEncoder(online_after_first, 0.0).encoder.parameters(), strict=True
    ):
        assert not torch.equal(a, b)  # a 0.5-EMA, not a copy of the online weights


def test_constructor_errors():
    online = small_model(0)
    with pytest.raises(ValueError, match="bn must be one of"):
        MomentumEncoder(online, bn="shuffle")
    with pytest.raises(ValueError, match=r"momentum must be <= 1\.0"):
        MomentumEncoder(online, 2.0)
    with pytest.raises(ValueError, match="needs total_steps"):
        MomentumEncoder(online, 0.9, schedule="cosine")
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        MomentumEncoder(online, 0.9, schedule="cosine", total_steps=0)
