"""EMC²'s Metropolis–Hastings sampler: stationarity, persistence, exclusions, cost independent of N."""

import pytest
import torch
import torch.nn.functional as F

from negkit.negatives import MCMCSampler

CHAINS, D = 20_000, 6


def target(anchor, pool, beta, eligible):
    s = (F.normalize(anchor, dim=1) @ F.normalize(pool, dim=1).T).double().squeeze(0)
    return torch.softmax((beta * s).masked_fill(~eligible, float("-inf")), dim=0)


@pytest.mark.parametrize("beta", [0.0, 4.0, 14.28])
def test_stationary_distribution_is_the_tilted_target(beta):
    """Long chains on a fixed pool: the recorded states' distribution is softmax(beta · s) within TV 0.02.

    With 20,000 chains × 64 recorded (correlated) states over 12 rows, the sampling error of a correct
    chain is far below the bound; a chain without the acceptance step (uniform) is at TV ≥ 0.2 for beta ≥ 4.
    """
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(12, D, generator=generator)
    anchor = torch.randn(1, D, generator=generator)
    sampler = MCMCSampler(CHAINS + 1, k=64, beta=beta)
    ids = torch.arange(CHAINS)
    for _ in range(4):  # the chains carry over between calls
        negatives = sampler.sample(
            anchor.expand(CHAINS, D), pool, anchor_ids=ids, pool_ids=torch.arange(12) + 1000, generator=generator
        )
    empirical = torch.bincount(negatives.indices.flatten(), minlength=12).double() / negatives.indices.numel()
    expected = target(anchor, pool, beta, torch.ones(12, dtype=torch.bool))
    assert 0.5 * float((empirical - expected).abs().sum()) < 0.02
    assert 0.0 < sampler.acceptance_rate <= 1.0


def test_own_id_is_never_a_state_and_out_of_pool_states_are_reported_by_id():
    generator = torch.Generator().manual_seed(1)
    sampler = MCMCSampler(50, k=8, beta=2.0, burn_in=0.5)
    ids = torch.arange(10)
    batch_one = torch.randn(10, D, generator=generator)
    first = sampler.sample(batch_one, batch_one, anchor_ids=ids, pool_ids=ids, generator=generator)
    assert bool((sampler.last_state_ids != ids.unsqueeze(1)).all())
    assert bool((first.indices >= 0).all())  # everything recorded this call came from this pool
    # A new batch with other ids: the chains start from states that are not in it.
    batch_two = torch.randn(10, D, generator=generator)
    second = sampler.sample(batch_one, batch_two, anchor_ids=ids, pool_ids=ids + 20, generator=generator)
    outside = second.indices < 0
    assert bool((sampler.last_state_ids[outside] < 10).all())  # old states: ids of the first pool
    assert bool((sampler.last_state_ids[~outside] >= 20).all())
    assert torch.equal(sampler.last_state_ids[~outside] - 20, second.indices[~outside])


def test_state_survives_a_checkpoint_and_continues_identically():
    generator = torch.Generator().manual_seed(2)
    pool, anchors = torch.randn(30, D, generator=generator), torch.randn(5, D, generator=generator)
    sampler = MCMCSampler(5, k=4, beta=3.0)
    sampler.sample(anchors, pool, anchor_ids=torch.arange(5), generator=generator)
    restored = MCMCSampler(5, k=4, beta=3.0)
    restored.load_state_dict(sampler.state_dict())
    a = sampler.sample(anchors, pool, anchor_ids=torch.arange(5), generator=torch.Generator().manual_seed(3))
    b = restored.sample(anchors, pool, anchor_ids=torch.arange(5), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and set(sampler.state_dict()) == {
        "state",
        "log_target",
        "accepted",
        "proposed",
    }


def test_steps_follow_burn_in_and_errors():
    assert MCMCSampler(4, k=64, beta=1.0, burn_in=0.5).steps == 128
    assert MCMCSampler(4, k=10, beta=1.0, burn_in=0.0).steps == 10
    for call, message in [
        (lambda: MCMCSampler(4, k=0, beta=1.0), "must be >= 1"),
        (lambda: MCMCSampler(4, k=2, beta=1.0, burn_in=1.0), "burn_in must be < 1"),
        (
            lambda: MCMCSampler(4, k=2, beta=1.0).sample(
                torch.randn(2, 3), torch.randn(5, 3), anchor_ids=torch.tensor([0, 4])
            ),
            r"anchor_ids must lie",
        ),
        (
            lambda: MCMCSampler(4, k=2, beta=1.0).sample(
                torch.randn(2, 3), torch.randn(5, 3), anchor_ids=torch.tensor([0, 1]), pool_ids=torch.arange(4)
            ),
            r"pool_ids must have shape \[5\]",
        ),
        (
            lambda: MCMCSampler(4, k=2, beta=1.0).sample(
                torch.randn(2, 3), torch.full((5, 3), float("nan")), anchor_ids=torch.tensor([0, 1])
            ),
            "non-finite values",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


def test_exclude_ids_replace_the_own_id_rule_for_a_separate_pool():
    """Queries over a document corpus: chain i must never sit on its positive document, whatever its own id."""
    generator = torch.Generator().manual_seed(2)
    queries, documents = torch.randn(6, D, generator=generator), torch.randn(6, D, generator=generator)
    positives = torch.tensor([5, 4, 3, 2, 1, 0])
    sampler = MCMCSampler(6, k=16, beta=0.0, burn_in=0.5)
    for _ in range(5):
        sampler.sample(queries, documents, anchor_ids=torch.arange(6), exclude_ids=positives, generator=generator)
        assert bool((sampler.last_state_ids != positives.unsqueeze(1)).all())
    # without exclude_ids, query i may sit on document i but never on its own id... which is document i
    states = set()
    for _ in range(5):
        sampler.sample(queries, documents, anchor_ids=torch.arange(6), generator=generator)
        states |= {(i, int(s)) for i, row in enumerate(sampler.last_state_ids) for s in row}
    assert all(i != s for i, s in states) and any(positives[i] == s for i, s in states)
    with pytest.raises(ValueError, match="exclude_ids must have shape"):
        sampler.sample(queries, documents, anchor_ids=torch.arange(6), exclude_ids=positives[:3])
