"""alignment and uniformity against direct formulas (torch.pdist), analytic values; tolerance against loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from negkit.metrics import alignment, tolerance, uniformity
from tests.metrics.helpers import clustered, randint, randn


def pdist_uniformity(z: torch.Tensor, t: float) -> float:
    """Wang & Isola's reference code: ``torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()`` on unit rows."""
    return float(torch.pdist(F.normalize(z, dim=1), p=2).pow(2).mul(-t).exp().mean().log())


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.5])
def test_alignment_matches_the_direct_formula(alpha):
    z1, z2 = randn(0, 40, 5), randn(1, 40, 5)
    expected = (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).norm(dim=1).pow(alpha).mean()
    assert alignment(z1, z2, alpha=alpha) == pytest.approx(float(expected), rel=1e-12)


def test_alignment_at_alpha_two_is_two_minus_twice_the_mean_cosine():
    z1, z2 = randn(2, 30, 4), randn(3, 30, 4)
    expected = 2.0 - 2.0 * F.cosine_similarity(z1, z2, dim=1).mean()
    assert alignment(z1, z2) == pytest.approx(float(expected), rel=1e-12)


def test_alignment_extremes_and_scale_invariance():
    z = randn(4, 10, 3)
    assert alignment(z, 5.0 * z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, -z) == pytest.approx(4.0, rel=1e-12)  # antipodal: ‖f − (−f)‖² = 4
    assert alignment(z, -z, alpha=1.0) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("t", [0.5, 2.0, 10.0])
@pytest.mark.parametrize("n", [2, 3, 37])
def test_uniformity_matches_pdist_for_every_chunk_size(n, t):
    z = randn(n, n, 6)
    expected = pdist_uniformity(z, t)
    for chunk_size in (1, 3, 1024):
        assert uniformity(z, t=t, chunk_size=chunk_size) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_uniformity_of_identical_points_is_zero():
    z = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64).repeat(6, 1) * torch.arange(1, 7).double()[:, None]
    assert uniformity(z, chunk_size=2) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("t", [0.5, 2.0, 7.0])
def test_uniformity_of_an_antipodal_pair(t):
    # One pair at squared distance 4: log exp(−4t) = −4t.
    z = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    assert uniformity(z, t=t) == pytest.approx(-4.0 * t, rel=1e-12)


def test_uniformity_of_a_regular_simplex():
    # n unit vectors with pairwise cosine −1/(n−1) (centred one-hot vectors): ‖f_i − f_j‖² = 2 + 2/(n−1).
    n, t = 5, 2.0
    z = torch.eye(n, dtype=torch.float64) - 1.0 / n
    assert uniformity(z, t=t) == pytest.approx(-t * (2.0 + 2.0 / (n - 1)), rel=1e-12)


def test_uniformity_does_not_underflow_in_float32():
    # exp(−t‖·‖²) underflows float32 for large t; the log-sum-exp form stays finite and accurate.
    # Well-spread points (a perturbed regular simplex, squared distances near 2.4), so every term underflows.
    z = (torch.eye(6, dtype=torch.float64) - 1.0 / 6 + 0.01 * randn(5, 6, 6)).float()
    t = 60.0
    naive = torch.pdist(F.normalize(z, dim=1), p=2).pow(2).mul(-t).exp().mean().log()
    assert float(naive) == -math.inf  # the failure mode being guarded against
    expected = pdist_uniformity(z.double(), t)
    assert math.isfinite(expected)
    assert uniformity(z, t=t, chunk_size=8) == pytest.approx(expected, rel=1e-4)


def test_uniformity_lies_between_its_bounds():
    t = 2.0
    for seed in range(3):
        value = uniformity(randn(seed, 25, 4), t=t)
        assert -4.0 * t <= value <= 0.0


def tolerance_loop(z: torch.Tensor, labels: torch.Tensor) -> float:
    f = F.normalize(z.double(), dim=1)
    total, pairs = 0.0, 0
    for i in range(len(f)):
        for j in range(len(f)):
            if i != j and int(labels[i]) == int(labels[j]):
                total += float(f[i] @ f[j])
                pairs += 1
    return total / pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tolerance_matches_the_explicit_loop(seed):
    z, labels = clustered(seed, 45, 5, 4, noise=1.0)
    labels[0] = 99  # a singleton class contributes no pair
    expected = tolerance_loop(z, labels)
    for chunk_size in (1, 4, 1024):
        assert tolerance(z, labels, chunk_size=chunk_size) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_tolerance_weighs_pairs_not_classes():
    # Class 0: three identical rows (6 ordered pairs at cos 1); class 1: two opposite rows (2 pairs at cos −1).
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert tolerance(z, labels) == pytest.approx((6 * 1.0 + 2 * -1.0) / 8, rel=1e-12)


def test_tolerance_float32_input():
    z, labels = randn(7, 30, 6).float(), randint(8, 3, 30)
    assert tolerance(z, labels) == pytest.approx(tolerance_loop(z, labels), rel=1e-5, abs=1e-6)
