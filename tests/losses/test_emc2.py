"""``emc2``: EMC²'s sampled-negative surrogate of the global contrastive loss, against a float64 loop and the
gradient it estimates."""

from __future__ import annotations

import pytest
import torch

from negkit.losses import DegenerateBatchError, EMC2Loss, count_skipped, emc2, strict
from tests.losses import reference as ref
from tests.losses.helpers import grads, randn


def loop_emc2(anchor, positive, negatives, mask, *, temperature, similarity="cosine"):
    """``S_i = (mean_{k: mask_ik} s(a_i, n_ik) − s(a_i, p_i)) / T``, one anchor and one negative at a time."""
    out = []
    for i in range(anchor.shape[0]):
        kept = [k for k in range(negatives.shape[1]) if bool(mask[i, k])]
        negative = sum(ref.sim(anchor[i], negatives[i, k], similarity) for k in kept) / len(kept)
        out.append((negative - ref.sim(anchor[i], positive[i], similarity)) / temperature)
    return torch.stack(out)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_value_and_gradient_equal_the_loop(similarity):
    a, p, n = (
        randn(0, 5, 4, requires_grad=True),
        randn(1, 5, 4, requires_grad=True),
        randn(2, 5, 3, 4, requires_grad=True),
    )
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    expected = loop_emc2(a, p, n, mask, temperature=0.2, similarity=similarity)
    got = emc2(a, p, n, negative_mask=mask, temperature=0.2, similarity=similarity, reduction="none")
    torch.testing.assert_close(got, expected)
    ours = grads(got.sum(), a, p, n)
    for mine, theirs in zip(ours, grads(expected.sum(), a, p, n), strict=True):
        torch.testing.assert_close(mine, theirs)
    # masked-out slots get no gradient; no mask = every slot kept
    assert torch.equal(ours[2][~mask], torch.zeros(int((~mask).sum()), 4, dtype=torch.float64))
    full = emc2(a, p, n, temperature=0.2, similarity=similarity, reduction="none")
    torch.testing.assert_close(full, loop_emc2(a, p, n, torch.ones(5, 3), temperature=0.2, similarity=similarity))


def test_reductions_and_module():
    a, p, n = randn(3, 6, 4), randn(4, 6, 4), randn(5, 6, 2, 4)
    per_anchor = emc2(a, p, n, reduction="none")
    torch.testing.assert_close(emc2(a, p, n), per_anchor.mean())
    torch.testing.assert_close(emc2(a, p, n, reduction="sum"), per_anchor.sum())
    torch.testing.assert_close(EMC2Loss(0.1)(a, p, n), emc2(a, p, n, temperature=0.1), rtol=0, atol=0)
    mask = torch.ones(6, 2, dtype=torch.bool)
    mask[0, 1] = False
    torch.testing.assert_close(
        EMC2Loss(0.3, reduction="none")(a, p, n, negative_mask=mask),
        emc2(a, p, n, negative_mask=mask, temperature=0.3, reduction="none"),
    )


def test_its_gradient_estimates_the_global_contrastive_gradient():
    # Negatives drawn from q(z) ∝ e^{s(a, z)/T} over a pool: the anchor gradient of the surrogate converges to
    # that of L = −s(a, p)/T + log Σ_z e^{s(a, z)/T} (pool and positive held fixed).
    temperature, pool = 0.5, randn(6, 7, 4)
    anchor, positive = randn(7, 2, 4, requires_grad=True), randn(8, 2, 4)
    logits = torch.nn.functional.normalize(anchor, dim=1) @ torch.nn.functional.normalize(pool, dim=1).T / temperature
    global_loss = (torch.logsumexp(logits, dim=1) - ref_cos(anchor, positive) / temperature).sum()
    (exact,) = grads(global_loss, anchor)
    draws = torch.multinomial(logits.detach().softmax(dim=1), 40_000, replacement=True, generator=seeded(9))
    surrogate = emc2(anchor, positive, pool[draws], temperature=temperature, reduction="sum")
    (estimate,) = grads(surrogate, anchor)
    torch.testing.assert_close(estimate, exact, atol=0.01, rtol=0.0)  # uniform draws: off by 0.17


def ref_cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a, p, n: emc2(a, p, n[:, :, :2]), r"negatives must have shape \[4, K, 3\]"),
        (lambda a, p, n: emc2(a, p[:2], n), "positive must have the shape of anchor"),
        (lambda a, p, n: emc2(a, p, n[0]), "negatives must be 3-D"),
        (lambda a, p, n: emc2(a, p, n, temperature=0.0), "temperature must be a finite number > 0"),
        (lambda a, p, n: emc2(a, p, n, similarity="l2"), "similarity"),
        (lambda a, p, n: emc2(a, p, n, negative_mask=torch.ones(4, 3)), r"negative_mask must have shape \[4, 2\]"),
        (lambda a, p, n: emc2(a, p, n.float()), "dtype"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(randn(0, 4, 3), randn(1, 4, 3), randn(2, 4, 2, 3))


def test_anchor_without_negative_is_skipped_or_an_error_in_strict_mode():
    a, p, n = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3), randn(2, 4, 2, 3)
    mask = torch.tensor([[1, 1], [0, 0], [1, 0], [0, 0]])
    with count_skipped() as skipped:
        per_anchor = emc2(a, p, n, negative_mask=mask, reduction="none")
    assert skipped.anchors == 2 and per_anchor[[1, 3]].tolist() == [0.0, 0.0]
    kept = [0, 2]
    torch.testing.assert_close(
        emc2(a, p, n, negative_mask=mask), emc2(a[kept], p[kept], n[kept], negative_mask=mask[kept])
    )
    with strict(), pytest.raises(DegenerateBatchError, match=r"anchors \[1, 3\] have no negative"):
        emc2(a, p, n, negative_mask=mask)
