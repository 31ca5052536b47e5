"""The shared core: masked log-sum-exp, the per-pair NLL, averaging over positives, reductions."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from negkit.losses import DegenerateBatchError, count_skipped, strict
from negkit.losses.functional.core import masked_logsumexp, nce_rows, positive_nll, reduce_loss, skip_anchors
from tests.losses.helpers import randn


@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_masked_logsumexp_matches_a_loop(B, C, seed, density):
    logits, log_weights = randn(seed, B, C) * 5, randn(seed + 1, B, C)
    mask = torch.rand(B, C, generator=torch.Generator().manual_seed(seed)) < density
    got = masked_logsumexp(logits, mask, log_weights)
    for i in range(B):
        terms = [math.exp(logits[i, j] + log_weights[i, j]) for j in range(C) if mask[i, j]]
        expected = math.log(sum(terms)) if terms else -math.inf
        assert got[i].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_empty_rows_are_minus_inf_with_zero_gradient():
    logits = randn(0, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    out = masked_logsumexp(logits, mask)
    assert torch.isneginf(out[1]) and torch.isfinite(out[[0, 2]]).all()
    out[[0, 2]].sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[1] == 0).all()
    assert (logits.grad[0, [1, 3]] == 0).all()


def test_stable_at_extreme_logits():
    logits = torch.tensor([[1e4, 1e4 - 1.0, -1e4]], dtype=torch.float32)
    assert masked_logsumexp(logits).item() == pytest.approx(1e4 + math.log1p(math.exp(-1.0)))
    assert positive_nll(torch.tensor(1e4), torch.tensor(-1e4)).item() == 0.0
    assert positive_nll(torch.tensor(-1e4), torch.tensor(1e4)).item() == pytest.approx(2e4)


def test_nce_rows_reports_the_anchors_without_negatives():
    logits = randn(0, 4, 3)
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[[1, 3]] = False
    rows = nce_rows(logits[:, :1], logits, negative_mask=mask)
    assert rows.no_negative.tolist() == [False, True, False, True]
    # strict mode: the policy names them (with the context)
    with (
        strict(),
        pytest.raises(DegenerateBatchError, match=r"anchors \[1, 3\] have no negative left after masking \(because\)"),
    ):
        skip_anchors(4, no_negative=rows.no_negative, context="because")
    # default: they are skipped, counted, and left out of the reduction
    with count_skipped() as skipped:
        dropped = skip_anchors(4, no_negative=rows.no_negative, context="because")
    assert skipped.anchors == 2 and dropped.tolist() == [False, True, False, True]
    expected = rows.loss[[0, 2]].mean()
    torch.testing.assert_close(reduce_loss(rows.loss, "mean", skipped=dropped), expected)
    # An anchor without any positive may lack negatives: it is left out instead, and is not "no negative".
    positive_mask = torch.tensor([[True], [False], [True], [False]])
    rows = nce_rows(logits[:, :1], logits, positive_mask=positive_mask, negative_mask=mask)
    assert rows.num_positives.tolist() == [1, 0, 1, 0] and rows.loss[1] == 0
    assert not rows.no_negative.any()


def test_reduce_loss():
    loss = torch.tensor([1.0, 2.0, 4.0])
    weights = torch.tensor([1.0, 0.0, 3.0])
    assert reduce_loss(loss, "mean").item() == pytest.approx(7 / 3)
    assert reduce_loss(loss, "mean", weights).item() == pytest.approx((1 + 12) / 4)
    assert reduce_loss(loss, "sum", weights).item() == pytest.approx(5.0)
    assert reduce_loss(loss, "none", weights).tolist() == [1.0, 0.0, 4.0]
    skipped = torch.tensor([False, False, True])
    assert reduce_loss(loss, "mean", weights, skipped=skipped).item() == pytest.approx(1.0)
    assert reduce_loss(loss, "none", skipped=skipped).tolist() == [1.0, 2.0, 0.0]
    # every anchor skipped (or none at all): 0, still connected to the graph
    x = loss.clone().requires_grad_(True)
    for out in (reduce_loss(x, "mean", skipped=torch.ones(3, dtype=torch.bool)), reduce_loss(x[:0], "mean")):
        assert out.item() == 0.0 and out.requires_grad
        (grad,) = torch.autograd.grad(out, x)
        assert (grad == 0).all()
    with pytest.raises(ValueError, match="reduction must be one of"):
        reduce_loss(loss, "avg")
