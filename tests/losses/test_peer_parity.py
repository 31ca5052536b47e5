"""Cross-checks against pytorch-metric-learning (a test-only dependency) where the definitions coincide.

* PML ``SupConLoss`` is Khosla et al.'s L_out averaged over anchors with a positive: our ``sup_con``.
* PML ``NTXentLoss`` with labels: every same-label pair (i, p) is a positive pair whose denominator holds the
  positive and all different-label rows, averaged over pairs: our H-SCL at beta = 0, and with one label per
  sample (two views) NT-Xent, i.e. our ``hard_nce(beta=0)``.
"""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from negkit.losses import hard_nce, sup_con
from tests.losses.helpers import randint, randn

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")


@given(st.integers(2, 16), st.integers(2, 8), st.integers(1, 6), st.floats(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_sup_con_equals_pml_sup_con_loss(N, d, classes, temperature, seed):
    x, labels = randn(seed, N, d), randint(seed + 1, classes, N)
    assume(bool((torch.bincount(labels) > 1).any()) and int(labels.unique().numel()) > 1)
    ours = sup_con(x, labels, temperature=temperature)
    theirs = pml_losses.SupConLoss(temperature=temperature)(x, labels)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


@given(st.integers(2, 12), st.integers(2, 8), st.floats(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_nt_xent_equals_pml_nt_xent_loss(B, d, temperature, seed):
    z1, z2 = randn(seed, B, d), randn(seed + 1, B, d)
    ours = hard_nce(z1, z2, beta=0.0, temperature=temperature)
    theirs = pml_losses.NTXentLoss(temperature=temperature)(torch.cat([z1, z2]), torch.arange(B).repeat(2))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    ours_supcon = sup_con(torch.cat([z1, z2]), torch.arange(B).repeat(2), temperature=temperature)
    torch.testing.assert_close(ours_supcon, theirs, rtol=1e-6, atol=1e-6)


@given(st.integers(2, 10), st.integers(2, 4), st.floats(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_hscl_at_beta_zero_equals_pml_nt_xent_with_labels(B, classes, temperature, seed):
    z1, z2, labels = randn(seed, B, 5), randn(seed + 1, B, 5), randint(seed + 2, classes, B)
    assume(int(labels.unique().numel()) > 1)
    ours = hard_nce(z1, z2, labels, beta=0.0, temperature=temperature)
    theirs = pml_losses.NTXentLoss(temperature=temperature)(torch.cat([z1, z2]), labels.repeat(2))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_known_divergence_single_class_batch():
    # PML returns a silent 0 when the batch has no negative pair at all (PML#744-style); negkit computes
    # L_out as defined, whose denominator is the other (positive) rows: log(N − 1) for identical rows.
    x = torch.ones(4, 3, dtype=torch.float64)
    labels = torch.zeros(4, dtype=torch.long)
    assert pml_losses.SupConLoss(temperature=0.1)(x, labels).item() == 0.0
    torch.testing.assert_close(sup_con(x, labels), torch.log(torch.tensor(3.0, dtype=torch.float64)))
