"""The how-many evidence helpers: the exact class-conditional false-negative rate and the harm calibration."""

import itertools
import math

import torch
from evidence.how_many import Sweep, calibrate_harm, class_conditional_false_negative_rate


def test_class_conditional_false_negative_rate_equals_a_loop_over_pairs():
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(4, (40,), generator=generator)
    noisy = torch.where(torch.rand(40, generator=generator) < 0.3, torch.randint(4, (40,), generator=generator), clean)
    eligible = false = 0
    for i, j in itertools.permutations(range(40), 2):
        if noisy[i] != noisy[j]:  # a class-conditional negative under the noisy labels
            eligible += 1
            false += int(clean[i] == clean[j])
    assert math.isclose(class_conditional_false_negative_rate(clean, noisy), false / eligible, rel_tol=1e-12)
    assert class_conditional_false_negative_rate(clean, clean) == 0.0


def sweep(rho, q, best):
    scores = {k: [1.0 if k == best else 0.0] for k in sorted({1, 2, 4, 8, 16, 32, 64, 128, best})}
    return Sweep("s", rho, q, scores, [0.5], [4.0], {})


def test_calibration_picks_the_harm_whose_predictions_hit_the_measured_best():
    # measured best K equal to what harm = 0.1 predicts: calibration must choose 0.1 with zero error
    targets = [(0.05, 0.9), (0.1, 0.8), (0.02, 0.95)]
    probe = [sweep(rho, q, 1) for rho, q in targets]
    sweeps = [sweep(rho, q, s.predicted(0.1)) for (rho, q), s in zip(targets, probe, strict=True)]
    assert len({s.best_k for s in sweeps}) > 1  # the three settings have different optima
    harm, error = calibrate_harm(sweeps, grid=(0.0, 0.01, 0.1, 1.0))
    assert harm == 0.1 and error == 0.0
    # a measured best larger than any prediction pulls harm to 0 (harm only lowers K*)
    assert calibrate_harm([sweep(0.05, 0.9, 128)], grid=(0.0, 0.1, 1.0))[0] == 0.0
