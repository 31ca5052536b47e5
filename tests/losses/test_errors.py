"""Every bad input gets a ValueError whose message names the argument (or the anchors) at fault."""

import math

import pytest
import torch

from negkit._validation import check_compatible
from negkit.losses import (
    DCL,
    DecoupledSoftmax,
    DegenerateBatchError,
    HardNCE,
    InfoNCE,
    MannWhitneyLoss,
    SupCon,
    count_skipped,
    create_loss,
    dcl,
    decoupled_softmax,
    hard_nce,
    info_nce,
    is_strict,
    mw_auc,
    set_strict,
    strict,
    sup_con,
)
from tests.losses.helpers import randn

a, p = randn(0, 4, 3), randn(1, 4, 3)
nan_a = a.clone()
nan_a[1, 2] = math.nan

CASES = {
    "anchor 1-D": (lambda: info_nce(a[0], p), "anchor must be 2-D"),
    "positive shape": (lambda: info_nce(a, p[:3]), "positive must have the shape of anchor"),
    "integer anchor": (lambda: info_nce(a.long(), p.long()), "anchor must be a floating-point tensor"),
    "not a tensor": (lambda: info_nce(a.tolist(), p), "anchor must be a torch.Tensor"),
    "negatives 4-D": (lambda: info_nce(a, p, randn(2, 4, 2, 2, 3)), "negatives must be 2-D or 3-D"),
    "negatives dim": (lambda: info_nce(a, p, randn(2, 5, 2)), "negatives must have 3 features"),
    "negatives batch": (lambda: info_nce(a, p, randn(2, 3, 5, 3)), r"B = 4 .* got 3"),
    "temperature 0": (lambda: info_nce(a, p, temperature=0.0), "temperature must be a finite number > 0"),
    "temperature < 0": (lambda: info_nce(a, p, temperature=-0.1), "temperature must be a finite number > 0"),
    "temperature nan": (lambda: info_nce(a, p, temperature=math.nan), "temperature must be a finite number > 0"),
    "temperature inf": (lambda: info_nce(a, p, temperature=math.inf), "temperature must be a finite number > 0"),
    "temperature tensor": (lambda: info_nce(a, p, temperature=torch.ones(2)), "temperature must be a scalar"),
    "nan anchor": (lambda: info_nce(nan_a, p), r"anchor contains 1 non-finite"),
    "inf negatives": (lambda: info_nce(a, p, torch.full((2, 3), math.inf, dtype=a.dtype)), "negatives contains 6"),
    "labels length": (lambda: info_nce(a, p, labels=torch.arange(3)), r"labels must have shape \[4\]"),
    "labels float": (lambda: info_nce(a, p, labels=torch.zeros(4)), "labels must hold integer class ids"),
    "reduction": (lambda: info_nce(a, p, reduction="avg"), "reduction must be one of"),
    "similarity": (lambda: info_nce(a, p, similarity="l2"), "similarity must be one of"),
    "symmetric no in-batch": (
        lambda: info_nce(a, p, randn(2, 2, 3), symmetric=True, in_batch_negatives=False),
        "symmetric=True needs in_batch_negatives=True",
    ),
    "no negatives": (lambda: info_nce(a, p, in_batch_negatives=False), "no negatives"),
    "dtype mismatch": (lambda: info_nce(a, p.float()), "positive has dtype torch.float32 but anchor"),
    "weights without negatives": (lambda: info_nce(a, p, negative_log_weights=torch.zeros(2)), "negatives is None"),
    "weights shape": (
        lambda: info_nce(a, p, randn(2, 2, 3), negative_log_weights=torch.zeros(3, dtype=a.dtype)),
        r"negative_log_weights must have shape \[2\] or \[4, 2\]",
    ),
    "weights nan": (
        lambda: info_nce(a, p, randn(2, 2, 3), negative_log_weights=torch.tensor([0.0, math.nan])),
        "negative_log_weights contains 1 non-finite",
    ),
    "supcon labels": (lambda: sup_con(a, torch.zeros(5, dtype=torch.long)), r"labels must have shape \[4\]"),
    "supcon 3-D": (lambda: sup_con(a.unsqueeze(0), torch.zeros(1)), "embeddings must be 2-D"),
    "dcl shapes": (lambda: dcl(a, p[:, :2]), "z2 must have the shape of z1"),
    "dcl sigma": (lambda: dcl(a, p, sigma=0.0), "sigma must be a finite number > 0"),
    "hard beta": (lambda: hard_nce(a, p, beta=-1.0), "beta must be >= 0"),
    "hard tau_plus": (lambda: hard_nce(a, p, tau_plus=1.0), "tau_plus must be < 1"),
    "hard tau_plus labels": (lambda: hard_nce(a, p, torch.arange(4), tau_plus=0.1), "with labels .* tau_plus=0"),
    "hard labels": (lambda: hard_nce(a, p, torch.arange(2)), r"labels must have shape \[4\]"),
    "dexml values": (lambda: decoupled_softmax(a, p, torch.full((4, 4), 0.5)), "only 0 and 1"),
    "dexml shape": (lambda: decoupled_softmax(a, p, torch.eye(3)), r"relevance must have shape \[4, 4\]"),
    "dexml features": (lambda: decoupled_softmax(a, p[:, :2], torch.eye(4)), "items must have 3 features"),
    "mw 1-D": (lambda: mw_auc(randn(3, 3), torch.zeros(3)), "scores must be 2-D"),
    "module temperature": (lambda: InfoNCE(temperature=0), "temperature must be a finite number > 0"),
    "module supcon temperature": (lambda: SupCon(temperature=-1), "temperature"),
    "module dcl sigma": (lambda: DCL(sigma=-1.0), "sigma"),
    "module hard tau": (lambda: HardNCE(tau_plus=2.0), "tau_plus"),
    "module dexml similarity": (lambda: DecoupledSoftmax(similarity="euclid"), "similarity"),
    "module mw reduction": (lambda: MannWhitneyLoss(reduction="max"), "reduction"),
    "unknown loss": (lambda: create_loss("triplet"), "unknown loss 'triplet'; registered:"),
    "device mismatch": (
        lambda: check_compatible("anchor", a, negatives=torch.empty(2, 3, device="meta", dtype=a.dtype)),
        "negatives is on meta but anchor is on cpu",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_a_clear_value_error(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


# Degenerate but legal batches: 0 with a zero, connected gradient by default; DegenerateBatchError in strict mode.
# Each call takes (anchor, positive) requiring gradients; the count is the anchors it skips.
def _scores(x, y):
    return x @ y.T


DEGENERATE = {
    "single pair": (lambda x, y: info_nce(x[:1], y[:1]), r"anchors \[0\] have no negative", 1),
    "labels mask all": (
        lambda x, y: info_nce(x, y, labels=torch.tensor([2, 2, 2, 2])),
        r"anchors \[0, 1, 2, 3\] have no negative left after masking \(labels removed every in-batch candidate\)",
        4,
    ),
    "empty batch": (lambda x, y: info_nce(x[:0], y[:0]), r"anchor is empty \(0 rows\)", 0),
    "supcon no positive": (lambda x, y: sup_con(x, torch.arange(4)), "no anchor has a positive", 4),
    "dcl one sample": (lambda x, y: dcl(x[:1], y[:1]), r"anchors \[0, 1\] have no negative", 2),
    "hard one sample": (lambda x, y: hard_nce(x[:1], y[:1]), "have no negative", 2),
    "dexml no relevant": (
        lambda x, y: decoupled_softmax(x, y, torch.zeros(4, 4)),
        "no query has a relevant item",
        4,
    ),
    "mw all relevant": (
        lambda x, y: mw_auc(_scores(x[:2], y[:3]), torch.tensor([[1, 1, 1], [1, 1, 1]])),
        r"anchors \[0, 1\]",
        2,
    ),
    "mw no relevant": (lambda x, y: mw_auc(_scores(x[:2], y[:3]), torch.zeros(2, 3)), "no query has a relevant", 2),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_batch_is_zero_by_default_and_an_error_in_strict_mode(case):
    call, message, count = DEGENERATE[case]
    x, y = randn(0, 4, 3, requires_grad=True), randn(1, 4, 3, requires_grad=True)
    with count_skipped() as skipped:
        loss = call(x, y)
    assert loss.item() == 0.0 and loss.requires_grad and skipped.anchors == count
    gx, gy = torch.autograd.grad(loss, (x, y), allow_unused=True)
    for g in (gx, gy):
        assert g is None or (g == 0).all()
    assert gx is not None
    with strict(), pytest.raises(DegenerateBatchError, match=message):
        call(x, y)
    set_strict(True)
    try:
        with pytest.raises(ValueError, match=message):
            call(x, y)
        with strict(False):  # a block overrides the process-wide switch
            assert call(x, y).item() == 0.0
    finally:
        set_strict(False)
    assert not is_strict()
