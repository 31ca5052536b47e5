import pytest
import torch

from negkit.strategies import create_strategy, get_strategy, list_strategies, register_strategy
from negkit.strategies.registry import StrategyLoss


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_gives_a_finite_loss_and_gradient(name):
    z1 = torch.randn(16, 8, requires_grad=True)
    z2 = torch.randn(16, 8, requires_grad=True)
    labels = torch.arange(16) % 4
    loss = create_strategy(name)(z1, z2, labels, torch.arange(16))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_labels_matter_only_for_supervised_strategies():
    z1, z2 = torch.randn(12, 8), torch.randn(12, 8)
    a, b = torch.arange(12) % 3, torch.arange(12) % 4
    for name in list_strategies():
        strategy = create_strategy(name)
        changed = not torch.equal(strategy(z1, z2, a, torch.arange(12)), strategy(z1, z2, b, torch.arange(12)))
        assert changed == get_strategy(name).uses_labels, name


def test_parameters_and_errors():
    assert get_strategy("hucl").defaults() == {"temperature": 0.1, "beta": 0.5, "tau_plus": 0.0}
    assert create_strategy("hscl", beta=2.0).beta == 2.0
    with pytest.raises(ValueError, match="strategy 'simclr' has no parameter beta; valid: temperature"):
        create_strategy("simclr", beta=1.0)
    with pytest.raises(ValueError, match="unknown strategy 'moco'; registered:"):
        get_strategy("moco")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("simclr", "again", uses_labels=False)(StrategyLoss)


def test_false_negative_rate_of_in_batch_negatives():
    labels = torch.tensor([0, 0, 1, 1])
    # Each anchor has 3 in-batch negatives, one of which shares its label.
    assert create_strategy("simclr").false_negative_rate(labels) == pytest.approx(1 / 3)
    assert create_strategy("scl").false_negative_rate(labels) == 0.0
