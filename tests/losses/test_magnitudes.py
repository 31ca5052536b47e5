"""Extreme magnitudes (issue 14): cosine similarity is scale-invariant, so inputs ×1e30 or ×1e-30 in float32 give
the unscaled value (before, the squared norm overflowed and every cosine became 0); an all-zero row has cosine 0
and a zero gradient (before: gradients of 1e11–1e12); dot-product logits that overflow are a clear error."""

import pytest
import torch
import torch.nn.functional as F

from negkit._validation import normalize_rows
from negkit.losses import (
    GlobalContrastiveLoss,
    dcl,
    decoupled_softmax,
    emc2,
    hard_nce,
    indexed_info_nce,
    info_nce,
    mw_auc,
    sup_con,
)
from negkit.losses.functional import similarity_logits
from tests.losses import reference as ref
from tests.losses.helpers import randn

B, D = 6, 5
labels = torch.tensor([0, 1, 0, 1, 2, 2])

COSINE_LOSSES = {
    "info_nce": lambda a, b: info_nce(a, b, temperature=0.1),
    "info_nce_tiled": lambda a, b: info_nce(a, b, b.flip(0), temperature=0.1, chunk_size=2),
    "info_nce_negatives": lambda a, b: info_nce(a, b, torch.stack([b.roll(1, 0), b.roll(2, 0)], 1), temperature=0.1),
    "info_nce_symmetric": lambda a, b: info_nce(a, b, temperature=0.1, symmetric=True),
    "sup_con": lambda a, b: sup_con(torch.cat([a, b]), labels.repeat(2), temperature=0.1),
    "sup_con_tiled": lambda a, b: sup_con(torch.cat([a, b]), labels.repeat(2), temperature=0.1, chunk_size=3),
    "dcl": lambda a, b: dcl(a, b, temperature=0.1, sigma=0.5),
    "hucl": lambda a, b: hard_nce(a, b, temperature=0.1, beta=1.0, tau_plus=0.1),
    "hscl": lambda a, b: hard_nce(a, b, labels, temperature=0.1, beta=1.0),
    "decoupled_softmax": lambda a, b: decoupled_softmax(a, b, torch.eye(B), temperature=0.1),
    "emc2": lambda a, b: emc2(a, b, torch.stack([b.roll(1, 0), b.roll(2, 0)], 1), temperature=0.1),
    "indexed_info_nce": lambda a, b: indexed_info_nce(a, b, torch.arange(B), temperature=0.1),
    "global_contrastive": lambda a, b: GlobalContrastiveLoss(B, temperature=0.1)(a, b, torch.arange(B)),
}


@pytest.mark.parametrize("name", sorted(COSINE_LOSSES))
@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e20, 1e-20])
def test_cosine_losses_are_scale_invariant(name, scale):
    fn = COSINE_LOSSES[name]
    a, b = randn(0, B, D).float(), randn(1, B, D).float()
    expected = fn(a, b)
    scaled_a = (a * scale).requires_grad_(True)
    scaled_b = (b * scale).requires_grad_(True)
    assert torch.isfinite(scaled_a).all()
    value = fn(scaled_a, scaled_b)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    value.backward()
    # the gradient of a cosine loss scales as 1/|x|: it is finite, and (× scale) the unscaled one
    plain_a = a.clone().requires_grad_(True)
    fn(plain_a, b).backward()
    assert torch.isfinite(scaled_a.grad).all()
    torch.testing.assert_close(scaled_a.grad.double() * scale, plain_a.grad.double(), rtol=1e-4, atol=1e-6)


def test_the_issue_example_info_nce_of_huge_vectors():
    a, b = randn(7, 6, 16).float(), randn(8, 6, 16).float()
    exact = info_nce(a.double(), b.double(), temperature=0.1)
    for scale in (1.0, 1e30):
        assert info_nce(a * scale, b * scale, temperature=0.1).item() == pytest.approx(exact.item(), rel=1e-5)


def test_normalize_rows_is_f_normalize_on_ordinary_rows_bit_for_bit():
    x = randn(3, 8, 5).float().requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    upstream = randn(4, 8, 5).float()
    out, expected = normalize_rows(x), F.normalize(y, dim=-1)
    assert torch.equal(out, expected)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    assert torch.equal(x.grad, y.grad)


def test_zero_rows_have_cosine_zero_and_a_zero_gradient():
    x = randn(0, 4, 3, dtype=torch.float32)
    x[1] = 0.0
    x.requires_grad_(True)
    unit = normalize_rows(x)
    assert torch.equal(unit[1], torch.zeros(3)) and torch.allclose(unit[[0, 2, 3]].norm(dim=1), torch.ones(3))
    unit.sum().backward()
    assert (x.grad[1] == 0).all() and torch.isfinite(x.grad).all()


def _info_nce_with_zero_anchor(similarity_of_zero_row: float):
    """float64 reference: anchor row 2 is all-zero, its cosine with every candidate is 0."""
    a, p = randn(0, 4, 3), randn(1, 4, 3)
    a[2] = 0.0
    per_anchor = ref.info_nce(a, p, temperature=0.5)
    logits = torch.full((4,), similarity_of_zero_row / 0.5, dtype=torch.float64)
    per_anchor[2] = torch.logsumexp(logits, 0) - logits[2]  # = log 4
    return a, p, per_anchor.mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_zero_anchor_in_a_loss_counts_as_orthogonal_with_bounded_gradients(dtype):
    a, p, expected = _info_nce_with_zero_anchor(0.0)
    a, p = a.to(dtype).requires_grad_(True), p.to(dtype).requires_grad_(True)
    loss = info_nce(a, p, temperature=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert (a.grad[2] == 0).all()
    assert a.grad.abs().max() < 10 and p.grad.abs().max() < 10  # not 1/eps = 1e12


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: info_nce(a, b, similarity="dot"),
        lambda a, b: info_nce(a, b, similarity="dot", chunk_size=2),
        lambda a, b: info_nce(a, b, b.unsqueeze(1), similarity="dot", in_batch_negatives=False),
        lambda a, b: decoupled_softmax(a, b, torch.eye(B), similarity="dot"),
        lambda a, b: emc2(a, b, b.unsqueeze(1), similarity="dot"),
        lambda a, b: indexed_info_nce(a, b, torch.arange(B), similarity="dot"),
        lambda a, b: similarity_logits(a, b, 0.1, "dot", names="anchor, positive"),
    ],
)
def test_dot_logits_that_overflow_are_a_clear_error(call):
    a, b = randn(0, B, D).float() * 1e30, randn(1, B, D).float() * 1e30
    with pytest.raises(
        ValueError, match=r"logits similarity\(.*\) / temperature overflow torch.float32.*similarity='dot'"
    ):
        call(a, b)


def test_a_temperature_too_small_for_float32_is_a_clear_error():
    a, b = randn(0, B, D).float(), randn(1, B, D).float()
    with pytest.raises(ValueError, match=r"overflow .* raise temperature"):
        info_nce(a, b, temperature=1e-40)
    with pytest.raises(ValueError, match="beta / temperature"):
        hard_nce(a, b, temperature=1e-10, beta=1e30)


def test_scores_that_cannot_be_subtracted_are_a_clear_error():
    scores = torch.tensor([[3e38, -3e38, 0.0]])
    with pytest.raises(ValueError, match=r"scores span more than torch\.float32"):
        mw_auc(scores, torch.tensor([[0, 1, 0]]))
    assert torch.isfinite(mw_auc(scores * 1e-8, torch.tensor([[0, 1, 0]])))
