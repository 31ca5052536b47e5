import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from negkit.negatives import AdaptiveK, collision_rate, effectiveness, optimal_k, ranking_quality

rho_values = st.floats(0.001, 0.6)
q_values = st.floats(0.05, 0.98)


def brute_force(noise, q, harm=0.0, k_min=1, k_max=4096):
    """The best integer K by evaluating E(K) with plain floats, straight from the model's formula."""
    lam = 1 - noise
    return max(range(k_min, k_max + 1), key=lambda k: (lam**k * (1 - q**k) - harm * (1 - lam**k), -k))


@given(rho_values, q_values)
def test_closed_form_equals_the_integer_search(noise, q):
    got = optimal_k(noise, q)
    best = brute_force(noise, q)
    assert math.isclose(effectiveness(got, noise, q), effectiveness(best, noise, q), rel_tol=1e-12, abs_tol=1e-15)


@given(rho_values, q_values, st.floats(0.01, 2.0))
def test_integer_search_with_harm(noise, q, harm):
    got = optimal_k(noise, q, harm=harm, k_max=512)
    assert got == brute_force(noise, q, harm, k_max=512)


def test_documented_properties():
    assert optimal_k(0.1, 0.7) == 4  # the worked example
    assert optimal_k(0.0, 0.7, k_max=300) == 300  # clean labels: as many as allowed
    ks_by_noise = [optimal_k(rho, 0.8) for rho in (0.01, 0.05, 0.1, 0.2, 0.4)]
    assert ks_by_noise == sorted(ks_by_noise, reverse=True) and ks_by_noise[0] > ks_by_noise[-1]
    ks_by_q = [optimal_k(0.1, q) for q in (0.5, 0.7, 0.9, 0.97)]
    assert ks_by_q == sorted(ks_by_q) and ks_by_q[0] < ks_by_q[-1]
    assert optimal_k(0.1, 0.7, k_min=6) == 6 and optimal_k(0.001, 0.99, k_max=16) == 16
    assert optimal_k(0.1, 0.7, harm=1.0) <= optimal_k(0.1, 0.7)  # charging contamination lowers K*
    torch.testing.assert_close(
        effectiveness(torch.tensor([1.0, 4.0]), 0.1, 0.7),
        torch.tensor([0.9 * 0.3, 0.9**4 * (1 - 0.7**4)], dtype=torch.float64),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(noise_rate=1.0, q=0.5), "noise_rate must be < 1"),
        (dict(noise_rate=-0.1, q=0.5), "noise_rate must be >= 0"),
        (dict(noise_rate=0.1, q=1.0), "q must lie strictly between 0 and 1"),
        (dict(noise_rate=0.1, q=0.5, k_min=5, k_max=4), "k_min <= k_max"),
        (dict(noise_rate=0.1, q=0.5, harm=-1.0), "harm must be >= 0"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimal_k(**kwargs)


def test_estimators():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    assert collision_rate(labels) == pytest.approx(0.5**2 + 0.3**2 + 0.2**2)
    assert collision_rate(labels, label_noise=0.1) == pytest.approx(0.38 + 0.1)
    assert collision_rate(labels, label_noise=0.1, class_conditional=True) == pytest.approx(0.1)
    positives = torch.tensor([1.0, 0.0])
    negatives = torch.tensor([[0.5, 2.0], [-1.0, 1.0]])
    assert ranking_quality(positives, negatives) == pytest.approx(0.5)
    assert ranking_quality(positives, negatives, torch.tensor([[True, False], [True, False]])) == 1.0
    with pytest.raises(ValueError, match="1-D integer"):
        collision_rate(torch.zeros(3))


def test_adaptive_k_moves_towards_the_optimum_and_survives_a_checkpoint():
    schedule = AdaptiveK(0.1, interval=5, smoothing=0.5, k_max=64, initial_k=1)
    ks = [schedule.update(0.9) for _ in range(60)]
    target = optimal_k(0.1, 0.9, k_max=64)
    assert ks[0] == 1 and ks[-1] == target and ks == sorted(ks)
    assert all(a == b for a, b in zip(ks[:4], [1, 1, 1, 1], strict=True))  # K changes only every `interval`
    restored = AdaptiveK(0.1, interval=5, k_max=64)
    restored.load_state_dict(schedule.state_dict())
    assert restored.k == schedule.k and float(restored.q) == pytest.approx(0.9)
    falling = [schedule.update(0.5) for _ in range(200)]
    assert falling[-1] == optimal_k(0.1, 0.5, k_max=64) < target  # a worse-ranking model needs fewer


def brute_force_per_negative(noise, q, harm, k_min=1, k_max=4096):
    """E(K) = 1 − (ρ + λq)^K − harm·ρ·K evaluated at every integer K with plain floats."""
    r = noise + (1 - noise) * q
    return max(range(k_min, k_max + 1), key=lambda k: (1 - r**k - harm * noise * k, -k))


@given(rho_values, q_values, st.floats(0.001, 5.0))
def test_per_negative_closed_form_equals_the_integer_search(noise, q, harm):
    got = optimal_k(noise, q, harm=harm, k_max=2048, model="per_negative")
    best = brute_force_per_negative(noise, q, harm, k_max=2048)
    value = effectiveness(got, noise, q, harm, model="per_negative")
    assert math.isclose(value, effectiveness(best, noise, q, harm, model="per_negative"), rel_tol=1e-12, abs_tol=1e-15)


def test_per_negative_properties_and_its_expectation():
    # without a cost per false negative, more negatives always help
    assert optimal_k(0.3, 0.8, k_max=300, model="per_negative") == 300
    # K* falls as the noise rate grows
    ks = [optimal_k(rho, 0.8, harm=0.1, model="per_negative") for rho in (0.01, 0.03, 0.1, 0.3)]
    assert ks == sorted(ks, reverse=True) and ks[0] > ks[-1]
    # the first term is P(at least one true negative above the positive), averaged over Binomial(K, ρ) false ones
    noise, q, k = 0.2, 0.7, 6
    exact = sum(math.comb(k, m) * noise**m * (1 - noise) ** (k - m) * (1 - q ** (k - m)) for m in range(k + 1))
    assert math.isclose(effectiveness(k, noise, q, model="per_negative"), exact, rel_tol=1e-12)
    with pytest.raises(ValueError, match="unknown model 'linear'"):
        optimal_k(0.1, 0.7, model="linear")
    schedule = AdaptiveK(0.05, interval=1, harm=0.1, k_max=512, model="per_negative")
    schedule.update(0.9)
    assert schedule.model == "per_negative" and schedule.k > 1
