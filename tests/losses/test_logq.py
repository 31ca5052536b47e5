"""The logQ-corrected in-batch softmax (Yi et al., RecSys 2019, eqs. 3–4): a float64 loop reference (value and
gradient), gradcheck, what the correction does, masks, degenerate rows, low precision and input errors."""

import math

import pytest
import torch

from negkit.losses import DegenerateBatchError, strict
from negkit.losses.functional.logq import logq_in_batch_nce


def reference(queries, items, log_q, temperature, mask=None, correct_positive=True):
    """ℓ_i = −s^c_ii + log(e^{s^c_ii} + Σ_{j≠i, mask_ij} e^{s^c_ij}), s^c_ij = cos(q_i, v_j)/T − log q_j; an explicit
    loop over anchors and candidates (torch scalars, so the gradient can be compared), mean over kept anchors."""
    batch = queries.shape[0]
    losses = []
    for i in range(batch):

        def corrected(j, i=i):
            s = (queries[i] * items[j]).sum() / (queries[i].norm() * items[j].norm()) / temperature
            return s - log_q[j] if log_q is not None else s

        positive = corrected(i) if correct_positive or log_q is None else corrected(i) + log_q[i]
        negatives = [corrected(j) for j in range(batch) if j != i and (mask is None or bool(mask[i, j]))]
        if not negatives:
            continue
        terms = [positive, *negatives]
        top = max(float(t.detach()) for t in terms)
        losses.append(-(positive - top) + torch.log(sum(torch.exp(t - top) for t in terms)))
    return sum(losses) / len(losses)


def inputs(batch=7, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(batch, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    items = torch.randn(batch, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    log_q = torch.log(torch.rand(batch, generator=generator, dtype=torch.float64) * 3 + 0.01)
    return queries, items, log_q


@pytest.mark.parametrize("correct_positive", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_equals_the_loop_reference_in_value_and_gradient(correct_positive, masked):
    queries, items, log_q = inputs()
    mask = None
    if masked:
        mask = torch.rand(7, 7, generator=torch.Generator().manual_seed(4)) > 0.3
        mask[0] = False  # anchor 0 has no negative left: skipped
        mask[0, 0] = True  # the diagonal is ignored
    ours = logq_in_batch_nce(
        queries, items, log_q, temperature=0.2, negative_mask=mask, correct_positive=correct_positive
    )
    expected = reference(queries, items, log_q, 0.2, mask, correct_positive)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(
        torch.autograd.grad(ours, (queries, items)), torch.autograd.grad(expected, (queries, items)), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    queries, items, log_q = inputs(batch=5, dim=3, seed=2)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[1, 3] = False
    assert torch.autograd.gradcheck(
        lambda q, v: logq_in_batch_nce(q, v, log_q, temperature=0.3, negative_mask=mask), (queries, items)
    )


def test_without_log_q_it_is_the_plain_in_batch_softmax():
    queries, items, _ = inputs(seed=3)
    ours = logq_in_batch_nce(queries, items, None, temperature=0.1)
    logits = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(items, dim=1).T / 0.1
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, torch.arange(7)))
    # a constant log q changes nothing when the positive is corrected too (it cancels in the softmax)
    torch.testing.assert_close(logq_in_batch_nce(queries, items, torch.full((7,), -3.7), temperature=0.1), ours)


def test_the_correction_lowers_the_weight_of_frequent_items():
    # item 1 is sampled far more often: as a negative it counts less after the correction
    queries, items, _ = inputs(batch=4, seed=5)
    log_q = torch.log(torch.tensor([0.01, 0.9, 0.01, 0.01], dtype=torch.float64))
    plain = logq_in_batch_nce(queries, items, None, temperature=0.5, reduction="none")
    corrected = logq_in_batch_nce(queries, items, log_q, temperature=0.5, reduction="none", correct_positive=False)
    # with log q_j = log 0.01 for the others, their weight rises 100×: compare the shares of item 1 instead
    logits = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(items, dim=1).T / 0.5
    for i in (0, 2, 3):
        others = [j for j in range(4) if j != i]
        share_plain = torch.softmax(logits[i, others], 0)[others.index(1)]
        share_corrected = torch.softmax(logits[i, others] - log_q[others], 0)[others.index(1)]
        assert share_corrected < share_plain
    assert plain.shape == corrected.shape == (4,)


def test_degenerate_rows_and_strict_mode():
    queries, items, log_q = inputs(batch=3)
    nothing = torch.zeros(3, 3, dtype=torch.bool)
    loss = logq_in_batch_nce(queries, items, log_q, negative_mask=nothing)
    assert loss.item() == 0.0
    loss.backward()
    assert (queries.grad == 0).all()
    with strict(), pytest.raises(DegenerateBatchError, match="no negative left"):
        logq_in_batch_nce(queries, items, log_q, negative_mask=nothing)
    one_q, one_v, one_log = inputs(batch=1)
    assert logq_in_batch_nce(one_q, one_v, one_log).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_a_small_temperature_in_low_precision(dtype):
    queries, items, log_q = inputs(batch=16, dim=8, seed=6)
    q = queries.detach().to(dtype).requires_grad_()
    v = items.detach().to(dtype).requires_grad_()
    loss = logq_in_batch_nce(q, v, log_q.to(dtype), temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()
    expected = reference(queries.detach().to(dtype).double(), items.detach().to(dtype).double(), log_q, 0.01)
    assert math.isclose(float(loss.detach()), float(expected), rel_tol=2e-2 if dtype == torch.bfloat16 else 1e-4)


def test_input_errors():
    queries, items, log_q = inputs()
    with pytest.raises(ValueError, match="log_q must have shape \\[7\\]"):
        logq_in_batch_nce(queries, items, log_q[:3])
    with pytest.raises(ValueError, match="log_q contains 1 non-finite"):
        logq_in_batch_nce(queries, items, torch.tensor([0.0] * 6 + [math.inf]).double())
    with pytest.raises(ValueError, match="items must have the shape of queries"):
        logq_in_batch_nce(queries, items[:3], log_q)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        logq_in_batch_nce(queries, items, log_q, temperature=0.0)
    with pytest.raises(ValueError, match="negative_mask must have shape \\[7, 7\\]"):
        logq_in_batch_nce(queries, items, log_q, negative_mask=torch.ones(7, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction must be one of"):
        logq_in_batch_nce(queries, items, log_q, reduction="max")
