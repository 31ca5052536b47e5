import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from negkit.losses import TCM, DegenerateBatchError, count_skipped, create_loss, get_loss, strict, tcm
from tests.losses.helpers import grads, randint, randn

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")


def tcm_loop(embeddings, labels, *, pos_margin=0.9, neg_margin=0.5, pos_weight=1.0, neg_weight=1.0):
    """The formula of Zhang et al. (ICLR 2024), one ordered pair at a time."""
    pos_total, pos_count, neg_total, neg_count = 0.0, 0, 0.0, 0
    rows = embeddings.shape[0]
    for i in range(rows):
        for j in range(rows):
            if i == j:
                continue
            s = (embeddings[i] * embeddings[j]).sum() / (embeddings[i].norm() * embeddings[j].norm())
            if int(labels[i]) == int(labels[j]):
                if float(s.detach()) <= pos_margin:
                    pos_total, pos_count = pos_total + (pos_margin - s), pos_count + 1
            elif float(s.detach()) >= neg_margin:
                neg_total, neg_count = neg_total + (s - neg_margin), neg_count + 1
    pos = pos_total / pos_count if pos_count else 0.0
    neg = neg_total / neg_count if neg_count else 0.0
    return pos_weight * pos + neg_weight * neg + 0.0 * embeddings.sum()


def pml_tcm(embeddings, labels, **kw):
    return pml_losses.ThresholdConsistentMarginLoss(
        lambda_plus=kw.get("pos_weight", 1.0),
        lambda_minus=kw.get("neg_weight", 1.0),
        margin_plus=kw.get("pos_margin", 0.9),
        margin_minus=kw.get("neg_margin", 0.5),
    )(embeddings, labels)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 12),
    st.integers(1, 6),
    st.integers(1, 4),
    st.floats(0.0, 0.95),
    st.floats(-0.5, 0.6),
    st.floats(0.0, 2.0),
    st.floats(0.0, 2.0),
    st.integers(0, 2**31 - 1),
)
def test_equals_pytorch_metric_learning_and_the_loop(B, d, classes, m_pos, m_neg, w_pos, w_neg, seed):
    x = randn(seed, B, d, requires_grad=True)
    labels = randint(seed + 1, classes, B)
    kw = {"pos_margin": m_pos, "neg_margin": m_neg, "pos_weight": w_pos, "neg_weight": w_neg}
    got = tcm(x, labels, **kw)
    want = pml_tcm(x, labels, **kw)
    loop = tcm_loop(x, labels, **kw)
    torch.testing.assert_close(got, want.to(got.dtype))
    torch.testing.assert_close(got, loop)
    (g_got,) = grads(got, x)
    (g_loop,) = grads(loop, x)
    torch.testing.assert_close(g_got, g_loop)
    if want.requires_grad:
        (g_pml,) = grads(want, x)
        torch.testing.assert_close(g_got, g_pml)


def test_fixed_input_value_and_gradient_against_pml():
    x = randn(7, 16, 8, requires_grad=True)
    labels = randint(8, 4, 16)
    got, want = tcm(x, labels, neg_margin=0.1), pml_tcm(x, labels, neg_margin=0.1)
    assert got.item() > 0
    assert abs(got.item() - want.item()) < 1e-12
    (g_got,), (g_want,) = grads(got, x), grads(want, x)
    assert float((g_got - g_want).abs().max()) < 1e-12


def test_gradcheck():
    x = randn(3, 6, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda e: tcm(e, labels, pos_margin=0.5, neg_margin=-0.2), (x,))


def test_no_violation_is_zero_connected_and_not_skipped():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, -0.01]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    with count_skipped() as skipped:
        loss = tcm(x, labels)
    assert loss.item() == 0.0 and loss.requires_grad and skipped.anchors == 0
    assert bool((grads(loss, x)[0] == 0).all())
    with strict():
        assert tcm(x, labels).item() == 0.0  # a regulariser with nothing to correct is not degenerate


def test_only_negative_pairs_or_only_positive_pairs():
    x = randn(0, 5, 3)
    all_distinct, all_same = torch.arange(5), torch.zeros(5, dtype=torch.long)
    torch.testing.assert_close(tcm(x, all_distinct), tcm_loop(x, all_distinct))
    torch.testing.assert_close(tcm(x, all_same), tcm_loop(x, all_same))
    torch.testing.assert_close(tcm(x, all_distinct, pos_weight=7.0), tcm(x, all_distinct))


@pytest.mark.parametrize("rows", [0, 1])
def test_fewer_than_two_rows_is_zero_skipped_or_strict_error(rows):
    x = randn(0, rows, 4, requires_grad=True)
    labels = torch.zeros(rows, dtype=torch.long)
    with count_skipped() as skipped:
        loss = tcm(x, labels)
    assert loss.item() == 0.0 and loss.requires_grad and skipped.anchors == rows
    assert bool((grads(loss, x)[0] == 0).all())
    with strict(), pytest.raises(DegenerateBatchError, match="at least one pair"):
        tcm(x, labels)


def test_scale_invariant_and_low_precision():
    x, labels = randn(1, 8, 4), randint(2, 3, 8)
    want = tcm(x, labels, neg_margin=0.0)
    torch.testing.assert_close(tcm(x * 1e30, labels, neg_margin=0.0), want)
    torch.testing.assert_close(tcm(x * 1e-30, labels, neg_margin=0.0), want)
    for dtype in (torch.float32, torch.bfloat16):
        low = x.to(dtype).requires_grad_(True)
        value = tcm(low, labels, neg_margin=0.0)
        assert torch.isfinite(value) and bool(torch.isfinite(grads(value, low)[0]).all())
        assert abs(value.item() - want.item()) < 0.05


def test_module_registry_and_defaults():
    spec = get_loss("tcm")
    module = create_loss("tcm")
    assert isinstance(module, TCM) and spec.function is tcm
    for key, value in spec.defaults.items():
        assert getattr(module, key) == value
    x, labels = randn(4, 6, 3), randint(5, 2, 6)
    torch.testing.assert_close(module(x, labels), tcm(x, labels), rtol=0, atol=0)
    torch.testing.assert_close(spec.bind()(x, labels), tcm(x, labels), rtol=0, atol=0)
    assert dict(module.state_dict()) == {}
    assert create_loss("tcm", neg_margin=0.2).neg_margin == 0.2
    module(x[:1], labels[:1])
    assert module.skipped_anchors == 1


def test_adds_to_a_base_loss():
    from negkit.losses import sup_con

    x, labels = randn(6, 8, 4, requires_grad=True), randint(7, 3, 8)
    total = sup_con(x, labels) + tcm(x, labels)
    torch.testing.assert_close(total, sup_con(x, labels) + tcm_loop(x, labels))
    assert bool(torch.isfinite(grads(total, x)[0]).all())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"pos_margin": 1.5}, "pos_margin"),
        ({"pos_margin": math.nan}, "pos_margin"),
        ({"neg_margin": -2.0}, "neg_margin"),
        ({"neg_margin": "0.5"}, "neg_margin"),
        ({"pos_weight": -1.0}, "pos_weight"),
        ({"neg_weight": math.inf}, "neg_weight"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(kwargs, name):
    x, labels = randn(0, 4, 3), randint(1, 2, 4)
    with pytest.raises(ValueError, match=name):
        tcm(x, labels, **kwargs)
    with pytest.raises(ValueError, match=name):
        TCM(**kwargs)


def test_bad_inputs_name_the_argument():
    x, labels = randn(0, 4, 3), randint(1, 2, 4)
    with pytest.raises(ValueError, match="embeddings"):
        tcm(x[0], labels)
    with pytest.raises(ValueError, match="embeddings"):
        tcm(x.long(), labels)
    with pytest.raises(ValueError, match="labels"):
        tcm(x, labels[:3])
    with pytest.raises(ValueError, match="labels"):
        tcm(x, labels.double())
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="embeddings"):
        tcm(bad, labels)
