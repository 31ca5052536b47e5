import pytest
import torch

from negkit.losses import DegenerateBatchError, strict
from negkit.strategies import create_strategy, get_strategy, list_strategies, register_strategy
from negkit.strategies.registry import StrategyLoss


def bound(name: str, num_samples: int = 200, dim: int = 8, **params):
    """A strategy ready to train: bound to a dataset of ``num_samples`` and refreshed with random projections."""
    strategy = create_strategy(name, **params)
    strategy.bind(num_samples, dim)
    strategy.generator = torch.Generator().manual_seed(0)
    strategy.refresh(
        torch.randn(num_samples, dim, generator=torch.Generator().manual_seed(1)), torch.arange(num_samples) % 4
    )
    return strategy


@pytest.mark.parametrize("name", list_strategies(task="contrastive"))
def test_every_strategy_gives_a_finite_loss_and_gradient(name):
    z1 = torch.randn(16, 8, requires_grad=True)
    z2 = torch.randn(16, 8, requires_grad=True)
    labels = torch.arange(16) % 4
    strategy = bound(name)
    loss = strategy(z1, z2, labels, torch.arange(16))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    assert 0.0 <= strategy.false_negative_rate(labels) <= 1.0
    assert strategy.negative_sampler(16).k >= 1


def test_labels_matter_only_for_supervised_strategies():
    z1, z2 = torch.randn(12, 8), torch.randn(12, 8)
    a, b = torch.arange(12) % 3, torch.arange(12) % 4
    for name in list_strategies(task="contrastive"):
        # the same sampling draws for both label sets: only the labels differ
        first, second = bound(name), bound(name)
        changed = not torch.equal(first(z1, z2, a, torch.arange(12)), second(z1, z2, b, torch.arange(12)))
        assert changed == get_strategy(name).uses_labels, name


@pytest.mark.parametrize("name", ["uniform-k", "class-k", "hard-k", "mined-k", "queue", "sogclr", "emc2", "ans"])
def test_beyond_batch_strategies_keep_their_state_in_state_dict(name):
    params = {"queue": {"size": 32}, "sogclr": {}, "ans": {"initial_k": 8}}.get(name, {"k": 8})
    strategy = bound(name, **params)
    z = torch.randn(16, 8)
    strategy(z, z + 0.1, torch.arange(16) % 4, torch.arange(16))
    state = strategy.state_dict()
    assert state, name
    restored = create_strategy(name, **params)
    restored.bind(200, 8)
    restored.load_state_dict(state)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key])


def test_cached_strategies_never_use_the_anchor_as_its_own_negative_and_report_sampled_false_negatives():
    strategy = bound("class-k", k=8)
    labels = torch.arange(16) % 4
    strategy(torch.randn(16, 8), torch.randn(16, 8), labels, torch.arange(16))
    assert strategy.false_negative_rate(labels) == 0.0  # class-conditional: no same-label negatives
    uniform = bound("uniform-k", k=50)
    uniform(torch.randn(16, 8), torch.randn(16, 8), labels, torch.arange(16))
    assert 0.1 < uniform.false_negative_rate(labels) < 0.4  # about 1/4 of the rows share the label


def test_strategy_variants_parse_and_validate():
    from negkit.strategies import parse_strategy_entry

    assert parse_strategy_entry("uniform-k:k=16,in_batch=true,temperature=0.2") == (
        "uniform-k",
        {"k": 16, "in_batch": True, "temperature": 0.2},
    )
    assert parse_strategy_entry("mined-k:margin=none") == ("mined-k", {"margin": None})
    with pytest.raises(ValueError, match="unknown parameter beta; valid"):
        parse_strategy_entry("uniform-k:beta=2")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_strategy_entry("uniform-k:16")


def test_parameters_and_errors():
    assert get_strategy("hucl").defaults() == {"temperature": 0.1, "beta": 0.5, "tau_plus": 0.0}
    assert create_strategy("hscl", beta=2.0).beta == 2.0
    with pytest.raises(ValueError, match="strategy 'simclr' has no parameter beta; valid: temperature"):
        create_strategy("simclr", beta=1.0)
    with pytest.raises(ValueError, match="unknown strategy 'byol'; choose from:"):
        get_strategy("byol")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("simclr", "again", uses_labels=False)(StrategyLoss)


def test_false_negative_rate_of_in_batch_negatives():
    labels = torch.tensor([0, 0, 1, 1])
    # Each anchor has 3 in-batch negatives, one of which shares its label.
    assert create_strategy("simclr").false_negative_rate(labels) == pytest.approx(1 / 3)
    assert create_strategy("scl").false_negative_rate(labels) == 0.0


def test_class_conditional_in_batch_negatives_are_label_masked_too():
    from negkit.losses import info_nce

    strategy = bound("class-k", k=4, in_batch=True)
    strategy.generator = torch.Generator().manual_seed(3)
    z1, z2, labels = torch.randn(12, 8), torch.randn(12, 8), torch.arange(12) % 3
    loss = strategy(z1, z2, labels, torch.arange(12))
    fresh = bound("class-k", k=4, in_batch=True)
    fresh.generator = torch.Generator().manual_seed(3)
    negatives = fresh.sampler().sample(
        z1,
        fresh.cache.table,
        anchor_labels=labels,
        pool_labels=fresh.cache.labels,
        anchor_ids=torch.arange(12),
        pool_ids=torch.arange(200),
        positives=z2,
        generator=fresh.generator,
    )
    expected = info_nce(z1, z2, fresh.cache.table[negatives.indices], labels=labels, temperature=0.1)
    torch.testing.assert_close(loss, expected)


def test_emc2_skips_a_chain_that_recorded_nothing():
    # One sample: both views carry the anchor's own id, so no proposal can be accepted: loss 0 (strict: an error).
    strategy = bound("emc2", k=4)
    z = torch.randn(1, 8, requires_grad=True)
    loss = strategy(z, z + 0.1, torch.tensor([0]), torch.tensor([0]))
    assert loss.item() == 0.0
    loss.backward()
    assert (z.grad == 0).all()
    with strict(), pytest.raises(DegenerateBatchError, match=r"anchors \[0\] have no negative"):
        bound("emc2", k=4)(z, z + 0.1, torch.tensor([0]), torch.tensor([0]))


@pytest.mark.parametrize("name", list_strategies(task="contrastive"))
def test_every_strategy_trains_through_a_batch_of_one_sample(name):
    # A trailing batch of one: no in-batch negative. Every strategy gives a finite loss whose backward works
    # (0 where the batch was all it had), and a finite false-negative rate.
    strategy = bound(name)
    z1 = torch.randn(1, 8, requires_grad=True)
    z2 = torch.randn(1, 8, requires_grad=True)
    loss = strategy(z1, z2, torch.tensor([1]), torch.tensor([5]))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z1.grad).all()
    assert strategy.false_negative_rate(torch.tensor([1])) == 0.0 or name in ("uniform-k", "hard-k", "mined-k", "ans")
    if name in ("simclr", "dcl", "hucl", "sogclr", "queue"):  # in-batch negatives only (the queue is empty)
        assert loss.item() == 0.0


def test_ans_restored_mid_epoch_continues_identically():
    # refresh() re-estimates AdaptiveK.noise_rate from the labels; it must be in the state_dict, or a run resumed
    # mid-epoch (no refresh before its next step) would move K with the constructor's noise rate instead.
    params = {"interval": 1, "initial_k": 4, "k_max": 64, "in_batch": True}
    z = torch.randn(5, 2, 16, 8, generator=torch.Generator().manual_seed(3))
    labels, index = torch.arange(16) % 4, torch.arange(16) * 3
    running = bound("ans", **params)
    assert running.schedule.noise_rate == pytest.approx(0.25)
    for step in range(2):
        running(z[step, 0], z[step, 1], labels, index)
    restored = create_strategy("ans", **params)
    restored.bind(200, 8)
    restored.load_state_dict(running.state_dict())
    restored.generator = torch.Generator()
    restored.generator.set_state(running.generator.get_state())
    assert restored.schedule.noise_rate == running.schedule.noise_rate
    for step in range(2, 5):
        expected = running(z[step, 0], z[step, 1], labels, index)
        torch.testing.assert_close(restored(z[step, 0], z[step, 1], labels, index), expected, rtol=0, atol=0)
        assert restored.schedule.k == running.schedule.k
    assert "schedule.rho" in running.state_dict()
