"""``indexed_info_nce``: InfoNCE against one candidate table (a gathered global batch), against a float64 loop."""

from __future__ import annotations

import pytest
import torch

from negkit.distributed import global_info_nce
from negkit.losses import DegenerateBatchError, count_skipped, indexed_info_nce, info_nce, strict
from tests.losses import reference as ref
from tests.losses.helpers import grads, randint, randn


def loop_indexed(anchor, candidates, positive_index, anchor_labels=None, candidate_labels=None, *, temperature):
    """Anchor i: positive = candidate c_i; denominator = positive + every other candidate of another label."""
    out = []
    for i in range(anchor.shape[0]):
        c = int(positive_index[i])
        positive = torch.exp(ref.sim(anchor[i], candidates[c]) / temperature)
        denominator = positive
        for j in range(candidates.shape[0]):
            if j == c or (anchor_labels is not None and int(candidate_labels[j]) == int(anchor_labels[i])):
                continue
            denominator = denominator + torch.exp(ref.sim(anchor[i], candidates[j]) / temperature)
        out.append(ref.neg_log_ratio(positive, denominator))
    return torch.stack(out)


@pytest.mark.parametrize("labelled", [False, True])
def test_value_and_gradient_equal_the_loop(labelled):
    # A rank's 3 anchors against a global batch of 9 candidates (3 ranks), its positives at offset 3.
    anchor, candidates = randn(0, 3, 4, requires_grad=True), randn(1, 9, 4, requires_grad=True)
    index = torch.tensor([3, 4, 5])
    labels = (randint(2, 3, 3), randint(3, 3, 9)) if labelled else (None, None)
    expected = loop_indexed(anchor, candidates, index, *labels, temperature=0.2)
    options = {"anchor_labels": labels[0], "candidate_labels": labels[1], "temperature": 0.2}
    got = indexed_info_nce(anchor, candidates, index, reduction="none", **options)
    torch.testing.assert_close(got, expected)
    ours, theirs = grads(got.sum(), anchor, candidates), grads(expected.sum(), anchor, candidates)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference)
    torch.testing.assert_close(indexed_info_nce(anchor, candidates, index, **options), expected.mean())


def test_its_own_positives_as_candidates_is_info_nce_and_one_process_is_global_info_nce():
    a, p, labels = randn(4, 6, 4), randn(5, 6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    rows = torch.arange(6)
    for kwargs in ({}, {"anchor_labels": labels, "candidate_labels": labels}):
        lab = kwargs.get("anchor_labels")
        torch.testing.assert_close(indexed_info_nce(a, p, rows, **kwargs), info_nce(a, p, labels=lab))
        torch.testing.assert_close(indexed_info_nce(a, p, rows, **kwargs), global_info_nce(a, p, labels=lab))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"positive_index": torch.tensor([0, 1, 9])}, r"positive_index must lie in \[0, 5\)"),
        ({"positive_index": torch.tensor([0.0, 1.0, 2.0])}, "positive_index must hold integer ids"),
        ({"positive_index": torch.tensor([0, 1])}, r"positive_index must have shape \[3\]"),
        ({"anchor_labels": torch.tensor([0, 1, 2])}, "give both anchor_labels and candidate_labels"),
        ({"candidates": randn(6, 5, 2)}, "candidates must have 4 features"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
    ],
)
def test_errors(kwargs, message):
    args = {"anchor": randn(0, 3, 4), "candidates": randn(1, 5, 4), "positive_index": torch.tensor([0, 1, 2])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        indexed_info_nce(
            args.pop("anchor"), args.pop("candidates"), args.pop("positive_index"), context="in a test", **args
        )


def test_anchors_without_negatives_are_skipped_or_an_error_in_strict_mode():
    a, c = randn(0, 3, 4, requires_grad=True), randn(1, 5, 4)
    labels = {"anchor_labels": torch.zeros(3, dtype=torch.long), "candidate_labels": torch.zeros(5, dtype=torch.long)}
    with count_skipped() as skipped:
        loss = indexed_info_nce(a, c, torch.tensor([0, 1, 2]), **labels)
    assert loss.item() == 0.0 and skipped.anchors == 3
    with (
        strict(),
        pytest.raises(
            DegenerateBatchError, match=r"anchors \[0, 1, 2\] have no negative left after masking \(in a test\)"
        ),
    ):
        indexed_info_nce(a, c, torch.tensor([0, 1, 2]), context="in a test", **labels)
