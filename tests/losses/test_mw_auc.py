import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import negkit.losses.functional.auc as auc
from negkit.losses import MannWhitneyLoss, mw_auc
from tests.losses import reference as ref
from tests.losses.helpers import grads, randn


@given(st.integers(1, 6), st.integers(2, 10), st.integers(0, 2**31 - 1))
def test_matches_reference_loops(B, N, seed):
    scores = randn(seed, B, N, requires_grad=True) * 3
    generator = torch.Generator().manual_seed(seed)
    relevance = (torch.rand(B, N, generator=generator) < 0.4).float()
    relevance[:, -1] = 0
    want, keep = ref.mw_auc(scores, relevance)
    assume(bool(keep.any()))
    got = mw_auc(scores, relevance, reduction="none")
    torch.testing.assert_close(got, torch.where(keep, want, torch.zeros_like(want)))
    mean = mw_auc(scores, relevance)
    torch.testing.assert_close(grads(mean, scores)[0], grads(ref.masked_mean(want, keep), scores)[0])


@given(st.integers(1, 5), st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_bounds_one_minus_auc(B, N, seed):
    scores = randn(seed, B, N)
    relevance = torch.zeros(B, N)
    relevance[:, : N // 2] = 1
    relevance[:, 0] = 1
    losses = mw_auc(scores, relevance, reduction="none")
    for i in range(B):
        pos, neg = scores[i][relevance[i] == 1], scores[i][relevance[i] == 0]
        one_minus_auc = (pos.unsqueeze(1) <= neg.unsqueeze(0)).double().mean()
        assert one_minus_auc <= losses[i] / math.log(2) + 1e-12


def test_analytic_values():
    relevance = torch.tensor([[1.0, 1, 0, 0]])
    assert mw_auc(torch.zeros(1, 4), relevance).item() == pytest.approx(math.log(2))
    separated = torch.tensor([[50.0, 40.0, -40.0, -50.0]])
    assert mw_auc(separated, relevance).item() < 1e-30
    inverted = -separated
    assert mw_auc(inverted, relevance).item() == pytest.approx(90.0)  # mean of s_n − s_p: 90, 100, 80, 90


def test_chunked_path_equals_one_shot_in_value_and_gradient(monkeypatch):
    scores = randn(3, 7, 9, requires_grad=True)
    relevance = (randn(4, 7, 9) > 0.3).float()
    relevance[:, 0], relevance[:, -1] = 1, 0
    whole = mw_auc(scores, relevance)
    monkeypatch.setattr(auc, "_PAIR_BUDGET", 2 * 81)  # two rows per chunk, recomputed in backward
    chunked = mw_auc(scores, relevance)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grads(chunked, scores)[0], grads(whole, scores)[0])


def test_gradcheck_and_module():
    scores = randn(0, 3, 5, requires_grad=True)
    relevance = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert torch.autograd.gradcheck(lambda s: mw_auc(s, relevance), (scores,))
    torch.testing.assert_close(MannWhitneyLoss()(scores, relevance), mw_auc(scores, relevance))
    assert "reduction='mean'" in repr(MannWhitneyLoss())
