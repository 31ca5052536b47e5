"""Cheap validation on the hot path (issue 18): value scans batched into one sum per tensor and one sync, with the
same clear errors; ``fast_checks`` skips them and nothing else."""

import pytest
import torch
from torch import nn

import negkit
import negkit._validation as validation
from negkit.integrations.sentence_transformers import NegkitLoss
from negkit.losses import DegenerateBatchError, fast_checks, info_nce, set_fast_checks, strict, sup_con
from tests.losses.helpers import randn

a, p = randn(0, 5, 3), randn(1, 5, 3)
shared = randn(2, 4, 3)


def _with(tensor: torch.Tensor, row: int, value: float) -> torch.Tensor:
    out = tensor.clone()
    out[row, 0] = value
    return out


@pytest.mark.parametrize(
    "name, call",
    [
        ("anchor", lambda: info_nce(_with(a, 2, float("nan")), p)),
        ("positive", lambda: info_nce(a, _with(p, 0, float("inf")))),
        ("negatives", lambda: info_nce(a, p, _with(shared, 3, float("-inf")))),
        ("negative_log_weights", lambda: info_nce(a, p, shared, negative_log_weights=torch.tensor([0, 0, 0, 1e400]))),
        ("embeddings", lambda: sup_con(_with(a, 1, float("nan")), torch.tensor([0, 0, 1, 1, 2]))),
    ],
)
def test_non_finite_inputs_are_named(name, call):
    with pytest.raises(ValueError, match=f"^{name} contains 1 non-finite value"):
        call()


def test_the_scan_counts_only_when_the_sum_is_not_finite(monkeypatch):
    counted = []
    original = validation.count_non_finite
    monkeypatch.setattr(validation, "count_non_finite", lambda x, *args: counted.append(x) or original(x, *args))
    info_nce(a, p, shared)
    assert counted == []  # finite inputs: one sum per tensor, no count
    huge = torch.full((4, 3), 3e38)  # finite float32 entries whose sum overflows
    value = info_nce(huge, huge.flip(0))
    assert torch.isfinite(value)
    assert len(counted) == 2  # the overflow sent it to the exact count, which found nothing


def test_fast_checks_skip_the_value_scans_only():
    bad = _with(a, 2, float("nan"))
    with fast_checks():
        assert not validation.value_checks()
        assert torch.isnan(info_nce(bad, p))  # not scanned: the NaN reaches the loss
        with pytest.raises(ValueError, match="positive must have the shape of anchor"):
            info_nce(a, p[:3])  # shapes are still checked
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            info_nce(a, p, temperature=-1.0)
        with strict(), pytest.raises(DegenerateBatchError):
            info_nce(a[:1], p[:1])  # the degenerate-batch policy is unchanged
        with fast_checks(False), pytest.raises(ValueError, match="anchor contains 1 non-finite"):
            info_nce(bad, p)
    assert validation.value_checks()
    with pytest.raises(ValueError, match="anchor contains 1 non-finite"):
        info_nce(bad, p)


def test_set_fast_checks_is_process_wide_and_exported_at_the_top_level():
    assert negkit.fast_checks is fast_checks and negkit.set_fast_checks is set_fast_checks
    try:
        set_fast_checks(True)
        assert not validation.value_checks()
        with fast_checks(False):
            assert validation.value_checks()
    finally:
        set_fast_checks(False)
    assert validation.value_checks()


def test_negkit_loss_names_the_column_and_gives_the_same_value():
    loss = NegkitLoss(nn.Identity(), temperature=0.05)
    columns = [randn(3 + c, 6, 4) for c in range(3)]
    with pytest.raises(ValueError, match="column 2 embeddings contains 1 non-finite"):
        loss.compute_loss_from_embeddings([*columns[:2], _with(columns[2], 4, float("nan"))])
    expected = info_nce(columns[0], columns[1], torch.stack([columns[2]], dim=1).reshape(-1, 4), temperature=0.05)
    torch.testing.assert_close(loss.compute_loss_from_embeddings(columns), expected)
