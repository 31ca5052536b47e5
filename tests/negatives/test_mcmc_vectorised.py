"""The vectorised EMC² step equals a plain per-chain, per-step Metropolis–Hastings loop on the same random draws.

``MCMCSampler.sample`` draws all proposals (``randint [B, T]``) and uniforms (``rand [B, T]``) of a call at once,
computes every proposal's log-target in blocks of chains, and runs only the accept/reject recurrence step by step.
The reference below redraws the same numbers from the same seed and walks each chain one step at a time in
Python floats (float32 arithmetic where the sampler uses float32), so the states, the recorded negatives and the
acceptance counts must agree exactly. Its cosines come from float64 ``F.normalize`` rounded to float32 (the
sampler's differ in the last bits; no accept decision of these seeds hinges on them), so the cached log-targets
agree to a tolerance.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from negkit.negatives import MCMCSampler, mcmc

D = 7


def reference(sampler_before, anchors, pool, anchor_ids, pool_ids, seed):
    """States, recorded ids and positions, final log-targets and accepted count of one call, chain by chain."""
    steps, k = sampler_before.steps, sampler_before.k
    generator = torch.Generator().manual_seed(seed)
    batch, size = anchors.shape[0], pool.shape[0]
    proposal = torch.randint(0, size, (batch, steps), generator=generator)
    uniform = torch.rand(batch, steps, generator=generator)
    a = F.normalize(anchors.double(), dim=1)
    rows = F.normalize(pool.double(), dim=1)
    ids = pool_ids if pool_ids is not None else torch.arange(size)
    beta = np.float32(sampler_before.beta)
    states, positions, targets, accepted = [], [], [], 0
    for i in range(batch):
        state = int(sampler_before.state[anchor_ids[i]])
        position = int((ids == state).nonzero()[0]) if state >= 0 and bool((ids == state).any()) else -1
        target = np.float32(sampler_before.log_target[anchor_ids[i]])
        row_states, row_positions = [], []
        for t in range(steps):
            j = int(proposal[i, t])
            cosine = float(a[i] @ rows[j])
            log_proposal = np.float32(beta * np.float32(cosine))
            log_u = np.float32(np.log(max(np.float32(uniform[i, t]), np.float32(1e-30))))
            own = int(ids[j]) == int(anchor_ids[i])
            if not own and log_u < np.float32(log_proposal - target):
                state, position, target = int(ids[j]), j, log_proposal
                accepted += 1
            if t >= steps - k:
                row_states.append(state)
                row_positions.append(position)
        states.append(row_states)
        positions.append(row_positions)
        targets.append(target)
    return torch.tensor(states), torch.tensor(positions), torch.tensor(targets), accepted


@pytest.mark.parametrize("with_pool_ids", [False, True])
def test_one_call_equals_the_per_step_loop_on_the_same_draws(with_pool_ids):
    generator = torch.Generator().manual_seed(0)
    size, batch = 40, 9
    pool = torch.randn(size, D, generator=generator)
    anchors = torch.randn(batch, D, generator=generator)
    anchor_ids = torch.tensor([0, 3, 5, 7, 11, 13, 17, 19, 23])
    pool_ids = torch.arange(size) * 2 + 1 if with_pool_ids else None  # odd ids: some anchors' own ids are in it
    sampler = MCMCSampler(60, k=6, beta=3.0, burn_in=0.5)
    for call in range(3):  # chains carry over: later calls start from the earlier states
        before = MCMCSampler(60, k=6, beta=3.0, burn_in=0.5)
        before.load_state_dict(sampler.state_dict())
        seed = 10 + call
        negatives = sampler.sample(
            anchors, pool, anchor_ids=anchor_ids, pool_ids=pool_ids, generator=torch.Generator().manual_seed(seed)
        )
        states, positions, targets, accepted = reference(before, anchors, pool, anchor_ids, pool_ids, seed)
        assert torch.equal(sampler.last_state_ids, states)
        assert torch.equal(negatives.indices, positions)
        assert torch.allclose(sampler.log_target[anchor_ids], targets, rtol=1e-5, atol=1e-5)
        assert int(sampler.accepted) - int(before.accepted) == accepted


def test_cosines_match_float64_and_odd_rows_follow_normalize_rows():
    generator = torch.Generator().manual_seed(1)
    pool = torch.randn(30, D, generator=generator)
    pool[3] = 0.0  # no direction: cosine 0
    pool[4] *= 1e30  # the squared norm overflows float32
    pool[5] *= 1e-30  # below F.normalize's eps
    anchors = F.normalize(torch.randn(4, D, generator=generator), dim=1)
    proposal = torch.randint(0, 30, (4, 50), generator=generator)
    proposal[:, :3] = torch.tensor([3, 4, 5])
    got = mcmc._cosines(anchors, pool, proposal)
    direction = pool.double() / pool.double().norm(dim=1, keepdim=True).clamp_min(1e-300)
    expected = torch.einsum("bd,btd->bt", anchors.double(), direction[proposal])
    assert torch.allclose(got.double(), expected, atol=1e-6)
    assert bool((got[:, 0] == 0).all())
    # the torch path (any pool but a float32 CPU one; here float64) computes the same cosines
    through_torch = mcmc._cosines(anchors, pool.double(), proposal)
    assert torch.allclose(through_torch.double(), expected, atol=1e-6) and bool((through_torch[:, 0] == 0).all())


def test_blocks_of_chains_do_not_change_the_result(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    pool, anchors = torch.randn(50, D, generator=generator), torch.randn(12, D, generator=generator)
    results = []
    for block_elements in (1 << 18, 1):  # all chains in one block; one chain per block
        monkeypatch.setattr(mcmc, "_BLOCK_ELEMENTS", block_elements)
        sampler = MCMCSampler(12, k=5, beta=2.0)
        out = sampler.sample(anchors, pool, anchor_ids=torch.arange(12), generator=torch.Generator().manual_seed(3))
        results.append((out.indices, sampler.state.clone(), sampler.log_target.clone()))
    assert all(torch.equal(x, y) for x, y in zip(*results, strict=True))


def test_a_non_finite_proposed_row_is_an_error_and_leaves_the_chains_alone():
    pool = torch.randn(6, D)
    pool[2, 1] = float("inf")
    sampler = MCMCSampler(3, k=40, beta=1.0)  # 80 proposals per chain over 6 rows: row 2 is proposed
    with pytest.raises(ValueError, match="non-finite values"):
        sampler.sample(torch.randn(3, D), pool, anchor_ids=torch.arange(3), generator=torch.Generator().manual_seed(0))
    assert bool((sampler.state == -1).all()) and int(sampler.proposed) == 0
