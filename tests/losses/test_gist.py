"""gist / GIST (GISTEmbed, Solatorio 2024): float64 loop reference (value and gradient), gradcheck, both margin
strategies, duplicate keys, the blocks sentence-transformers uses, degenerate rows, low precision and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from negkit.losses import GIST, DegenerateBatchError, count_skipped, create_loss, gist, strict
from tests.losses.helpers import grads, randn

B, D, DG, N = 6, 5, 4, 3


def cos(x, y):
    dot = sum(float(a) * float(b) for a, b in zip(x, y, strict=True))
    nx = math.sqrt(sum(float(a) ** 2 for a in x))
    ny = math.sqrt(sum(float(b) ** 2 for b in y))
    return dot / (nx * ny)


def reference(
    anchor,
    positive,
    guide_anchor,
    guide_positive,
    negatives=None,
    guide_negatives=None,
    *,
    temperature,
    margin=0.0,
    margin_strategy="absolute",
    contrast_anchors=True,
    contrast_positives=True,
    keys=None,
):
    """Per-anchor loss written from the paper's rule, one candidate at a time, in float64 tensors (for autograd)."""
    batch = anchor.shape[0]
    a = anchor / anchor.norm(dim=1, keepdim=True)
    p = positive / positive.norm(dim=1, keepdim=True)
    n = None if negatives is None else negatives / negatives.norm(dim=1, keepdim=True)
    losses = []
    for i in range(batch):
        g = cos(guide_anchor[i], guide_positive[i])
        threshold = g - margin if margin_strategy == "absolute" else g - abs(g) * margin
        mine = set() if keys is None else {keys["anchor"][i], keys["positive"][i]}
        terms = [(a[i] * p[i]).sum() / temperature]  # the positive
        candidates = []  # (trained query row, trained candidate, guide query, guide candidate, key, is self)
        for j in range(batch):
            key_p = None if keys is None else keys["positive"][j]
            candidates.append((a[i], p[j], guide_anchor[i], guide_positive[j], key_p, j == i))
            if contrast_anchors:
                key_a = None if keys is None else keys["anchor"][j]
                candidates.append((a[i], a[j], guide_anchor[i], guide_anchor[j], key_a, j == i))
            if contrast_positives:
                candidates.append((p[i], p[j], guide_positive[i], guide_positive[j], key_p, j == i))
        for k in range(0 if n is None else n.shape[0]):
            key_n = None if keys is None else keys["negative"][k]
            candidates.append((a[i], n[k], guide_anchor[i], guide_negatives[k], key_n, False))
        for query, candidate, guide_query, guide_candidate, key, is_self in candidates:
            if is_self or cos(guide_query, guide_candidate) > threshold or key in mine:
                continue
            terms.append((query * candidate).sum() / temperature)
        if len(terms) == 1:
            losses.append(None)  # no negative left: skipped
            continue
        stacked = torch.stack(terms)
        top = stacked.max().detach()
        losses.append(top + torch.log(torch.exp(stacked - top).sum()) - terms[0])
    kept = [x for x in losses if x is not None]
    return torch.stack(kept).mean(), losses


def inputs(seed, requires_grad=True, negatives=False):
    z = [randn(seed + k, B, D, requires_grad=requires_grad) for k in range(2)]
    # the guide: a noisy copy of a projection of the trained embeddings, so its scores correlate with them
    proj = randn(seed + 9, D, DG)
    guide = [(x.detach() @ proj + 0.3 * randn(seed + 5 + k, B, DG)) for k, x in enumerate(z)]
    if not negatives:
        return z, guide, None, None
    neg = randn(seed + 20, N, D, requires_grad=requires_grad)
    guide_neg = neg.detach() @ proj + 0.3 * randn(seed + 21, N, DG)
    return z, guide, neg, guide_neg


CASES = [
    dict(margin=0.0, margin_strategy="absolute"),
    dict(margin=0.1, margin_strategy="absolute"),
    dict(margin=-0.2, margin_strategy="absolute"),
    dict(margin=0.05, margin_strategy="relative"),
    dict(margin=0.3, margin_strategy="relative"),
    dict(margin=0.1, margin_strategy="absolute", contrast_anchors=False),
    dict(margin=0.1, margin_strategy="absolute", contrast_positives=False),
    dict(margin=0.0, margin_strategy="relative", contrast_anchors=False, contrast_positives=False),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_negatives", [False, True])
def test_value_and_gradient_equal_the_loop_reference(case, with_negatives):
    (anchor, positive), (ga, gp), neg, gneg = inputs(0, negatives=with_negatives)
    ours = gist(anchor, positive, ga, gp, neg, gneg, temperature=0.1, **case)
    ref, rows = reference(anchor, positive, ga, gp, neg, gneg, temperature=0.1, **case)
    assert any(row is not None for row in rows)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    leaves = (anchor, positive) if neg is None else (anchor, positive, neg)
    for g_ours, g_ref in zip(grads(ours, *leaves), grads(ref, *leaves), strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def test_the_filter_removes_something_and_margins_order_the_removal():
    (anchor, positive), (ga, gp), _, _ = inputs(3, requires_grad=False)
    plain = gist(anchor, positive, ga, gp, temperature=0.1, margin=-10.0)  # threshold above every score: no removal
    removed = [gist(anchor, positive, ga, gp, temperature=0.1, margin=m) for m in (0.0, 0.2, 0.5)]
    # the candidates of a larger margin are a subset: the loss can only go down as negatives leave
    assert float(plain) > float(removed[0]) >= float(removed[1]) >= float(removed[2])
    # with nothing removed it is InfoNCE over the three blocks: check against cross-entropy
    a, p = nn.functional.normalize(anchor, dim=1), nn.functional.normalize(positive, dim=1)
    eye = torch.eye(B, dtype=torch.bool)
    logits = torch.cat([a @ p.T, (a @ a.T).masked_fill(eye, -math.inf), (p @ p.T).masked_fill(eye, -math.inf)], 1)
    torch.testing.assert_close(plain, nn.functional.cross_entropy(logits / 0.1, torch.arange(B)))


def test_relative_margin_keeps_the_threshold_below_a_negative_positive_score():
    # guide: positive pair at cosine -0.5; a candidate at -0.49 is more similar than the positive and must leave
    # with margin 0.05 (threshold -0.525), but would stay under the sign-dependent g(1 - m) = -0.475
    def unit(angle):
        return torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)

    base = math.acos(-0.5)
    ga = torch.stack([unit(0.0), unit(math.pi)])
    gp = torch.stack([unit(base), unit(math.pi + base)])
    anchor, positive = randn(1, 2, 3), randn(2, 2, 3)
    assert abs(cos(ga[0], gp[0]) + 0.5) < 1e-12
    candidate = unit(math.acos(-0.49))  # vs anchor 0: -0.49
    keep = gist(anchor, positive, ga, gp, anchor[:1], candidate[None], margin=-1.0, reduction="none")
    drop = gist(anchor, positive, ga, gp, anchor[:1], candidate[None], margin=0.05, margin_strategy="relative")
    ref, _ = reference(
        anchor, positive, ga, gp, anchor[:1], candidate[None], temperature=0.01, margin=0.05, margin_strategy="relative"
    )
    torch.testing.assert_close(drop, ref)
    assert keep.shape == (2,)


def test_duplicate_keys_remove_equal_inputs_even_when_the_guide_misses_them():
    (anchor, positive), (ga, gp), neg, gneg = inputs(4, negatives=True)
    keys = {
        "anchor": ["q0", "q1", "q0", "q3", "q4", "q5"],  # anchors 0 and 2 are the same text
        "positive": ["d0", "d1", "d2", "d0", "q1", "d5"],  # anchor 3 shares anchor 0's positive; p4 is a1's text
        "negative": ["d5", "n1", "n2"],  # a hard negative equal to positive 5
    }
    case = dict(temperature=0.1, margin=-10.0)  # the guide removes nothing: only keys act
    ours = gist(
        anchor,
        positive,
        ga,
        gp,
        neg,
        gneg,
        anchor_keys=keys["anchor"],
        positive_keys=keys["positive"],
        negative_keys=keys["negative"],
        **case,
    )
    ref, _ = reference(anchor, positive, ga, gp, neg, gneg, keys=keys, **case)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for g_ours, g_ref in zip(grads(ours, anchor, positive, neg), grads(ref, anchor, positive, neg), strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    without, _ = reference(anchor, positive, ga, gp, neg, gneg, **case)
    assert abs(without.item() - ours.item()) > 1e-3  # the keys made a difference
    # integer ids in tensors work the same way as texts
    ids = {name: torch.tensor([hash(k) % 1000 for k in values]) for name, values in keys.items()}
    by_id = gist(
        anchor.detach(),
        positive.detach(),
        ga,
        gp,
        neg.detach(),
        gneg,
        anchor_keys=ids["anchor"],
        positive_keys=ids["positive"],
        negative_keys=ids["negative"],
        **case,
    )
    torch.testing.assert_close(by_id, ours.detach())


def test_duplicates_are_not_detected_from_equal_embeddings():
    (anchor, positive), (ga, gp), _, _ = inputs(5, requires_grad=False)
    positive = positive.clone()
    positive[1] = positive[0]  # equal embeddings but different inputs: both stay candidates
    gp = gp.clone()
    gp[1] = gp[0]
    value = gist(anchor, positive, ga, gp, temperature=0.1, margin=-10.0)
    ref, _ = reference(anchor, positive, ga, gp, temperature=0.1, margin=-10.0)
    torch.testing.assert_close(value, ref)


def test_gradcheck():
    (anchor, positive), (ga, gp), neg, gneg = inputs(6, negatives=True)
    torch.autograd.gradcheck(
        lambda a, p, n: gist(a, p, ga, gp, n, gneg, temperature=0.2, margin=0.1),
        (anchor, positive, neg),
    )


def test_the_guide_gets_no_gradient_and_scale_does_not_matter():
    (anchor, positive), (ga, gp), _, _ = inputs(7)
    ga, gp = ga.clone().requires_grad_(True), gp.clone().requires_grad_(True)
    value = gist(anchor, positive, ga, gp, temperature=0.1, margin=0.1)
    value.backward()
    assert ga.grad is None and gp.grad is None
    scaled = gist(anchor * 1e3, positive * 1e-3, ga * 7.0, gp * 0.01, temperature=0.1, margin=0.1)
    torch.testing.assert_close(scaled, value)


def test_an_anchor_with_every_candidate_removed_is_skipped_or_raises_in_strict_mode():
    (anchor, positive), _, _, _ = inputs(8, requires_grad=False)
    ga = torch.ones(B, DG, dtype=torch.float64)  # the guide sees every pair as identical: all removed
    gp = torch.ones(B, DG, dtype=torch.float64)
    with count_skipped() as skipped:
        value = gist(anchor, positive, ga, gp, margin=0.1)
    assert value.item() == 0.0 and skipped.anchors == B
    with strict(), pytest.raises(DegenerateBatchError, match="removed every in-batch candidate"):
        gist(anchor, positive, ga, gp, margin=0.1)
    one = gist(anchor[:1], positive[:1], ga[:1], gp[:1], margin=-10.0)  # a batch of one: nothing to contrast
    assert one.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_a_small_temperature_in_low_precision(dtype):
    (anchor, positive), (ga, gp), _, _ = inputs(9, requires_grad=False)
    a, p = (x.to(dtype).requires_grad_(True) for x in (anchor * 50, positive * 50))
    value = gist(a, p, ga.to(dtype), gp.to(dtype), temperature=0.01, margin=0.1)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(a.grad).all() and torch.isfinite(p.grad).all()
    ref, _ = reference(anchor, positive, ga, gp, temperature=0.01, margin=0.1)
    tolerance = 1e-3 if dtype == torch.float32 else 0.5  # bf16 inputs round the cosines (x 100 by 1/T)
    assert abs(value.item() - ref.item()) < tolerance * max(1.0, ref.item())


def test_module_equals_function_and_keeps_a_learnable_temperature():
    (anchor, positive), (ga, gp), neg, gneg = inputs(10, negatives=True)
    module = GIST(0.05, margin=0.1, margin_strategy="relative", contrast_positives=False)
    expected = gist(anchor, positive, ga, gp, neg, gneg, temperature=0.05, margin=0.1, margin_strategy="relative",
                    contrast_positives=False)  # fmt: skip
    torch.testing.assert_close(module(anchor, positive, ga, gp, neg, gneg), expected, rtol=0, atol=0)
    assert dict(module.state_dict()) == {}
    learnable = GIST(nn.Parameter(torch.tensor(0.05, dtype=torch.float64)))
    assert set(learnable.state_dict()) == {"temperature"}
    learnable(anchor, positive, ga, gp).backward()
    assert learnable.temperature.grad is not None and learnable.temperature.grad.abs() > 0
    assert isinstance(create_loss("gist"), GIST) and create_loss("gist").temperature == 0.01
    assert "margin_strategy='absolute'" in repr(create_loss("gist"))


def test_errors():
    (anchor, positive), (ga, gp), neg, gneg = inputs(11, requires_grad=False, negatives=True)
    with pytest.raises(ValueError, match="margin_strategy must be one of"):
        gist(anchor, positive, ga, gp, margin_strategy="percentage")
    with pytest.raises(ValueError, match="margin must be finite"):
        gist(anchor, positive, ga, gp, margin=math.inf)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        gist(anchor, positive, ga, gp, temperature=0.0)
    with pytest.raises(ValueError, match="guide_anchor must have 6 rows"):
        gist(anchor, positive, ga[:3], gp[:3])
    with pytest.raises(ValueError, match="guide_positive must have the shape of guide_anchor"):
        gist(anchor, positive, ga, gp[:, :2])
    with pytest.raises(ValueError, match="give both or neither"):
        gist(anchor, positive, ga, gp, neg)
    with pytest.raises(ValueError, match=r"guide_negatives must have shape \[3, 4\]"):
        gist(anchor, positive, ga, gp, neg, gneg[:2])
    with pytest.raises(ValueError, match="negatives must have 5 features"):
        gist(anchor, positive, ga, gp, neg[:, :2], gneg)
    with pytest.raises(ValueError, match="given but not positive_keys"):
        gist(anchor, positive, ga, gp, anchor_keys=list(range(B)))
    with pytest.raises(ValueError, match=r"one key per row \(6\), got 5"):
        gist(anchor, positive, ga, gp, anchor_keys=list(range(B)), positive_keys=list(range(5)))
    with pytest.raises(ValueError, match="negative_keys was given but negatives is None"):
        gist(anchor, positive, ga, gp, anchor_keys=list(range(B)), positive_keys=list(range(B)), negative_keys=[1])
    with pytest.raises(ValueError, match="sequence of keys"):
        gist(anchor, positive, ga, gp, anchor_keys="abcdef", positive_keys=list(range(B)))
    with pytest.raises(ValueError, match="hashable"):
        gist(anchor, positive, ga, gp, anchor_keys=[[1]] * B, positive_keys=list(range(B)))
    with pytest.raises(ValueError, match="integer ids"):
        gist(anchor, positive, ga, gp, anchor_keys=torch.zeros(B), positive_keys=list(range(B)))
    with pytest.raises(ValueError, match="non-finite"):
        gist(anchor * math.nan, positive, ga, gp)
    with pytest.raises(ValueError, match="margin_strategy must be one of"):
        GIST(margin_strategy="pct")
