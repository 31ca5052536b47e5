"""Sampling within the window: top is the best k, random and hardness are seeded, their importance log-weights
give unbiased estimates of the window's sum; a cross-encoder's scores replace the embedding scores."""

import numpy as np
import pytest
import torch

from negkit.mining import mine
from negkit.mining.sample import block_generator, choose_negatives

from .conftest import EXAMPLE, PAIRS, read_ids


def window(seed=0, b=6, width=30):
    rng = np.random.default_rng(seed)
    scores = -np.sort(-rng.uniform(-0.5, 0.9, size=(b, width)), axis=1).astype(np.float32)
    keep = rng.uniform(size=(b, width)) > 0.3
    keep[0, :] = False
    keep[0, [4, 9, 11]] = True  # row 0: 3 candidates only
    return scores, keep


def test_top_takes_the_best_kept_and_short_rows_keep_what_they_have():
    scores, keep = window()
    positions, weights = choose_negatives(scores, keep, 4, "top")
    assert weights is None
    assert positions[0].tolist() == [4, 9, 11, -1]
    for row in range(1, len(scores)):
        assert positions[row].tolist() == np.nonzero(keep[row])[0][:4].tolist()


@pytest.mark.parametrize("sampling", ["random", "hardness"])
def test_random_and_hardness_are_seeded_and_choose_kept_rows(sampling):
    scores, keep = window()
    first = choose_negatives(scores, keep, 4, sampling, generator=block_generator(3, 0))
    again = choose_negatives(scores, keep, 4, sampling, generator=block_generator(3, 0))
    other = choose_negatives(scores, keep, 4, sampling, generator=block_generator(3, 1))
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    positions, weights = first
    for row in range(1, len(scores)):
        assert keep[row, positions[row]].all() and len(set(positions[row])) == 4
        assert positions[row].tolist() == sorted(positions[row])  # best first
    assert positions[0].tolist() == [4, 9, 11, -1] and weights[0, :3].tolist() == [0, 0, 0]


@pytest.mark.parametrize("sampling", ["random", "hardness"])
def test_importance_log_weights_are_unbiased(sampling):
    scores, keep = window(seed=4, b=3, width=25)
    keep[0] = True
    values = np.exp(3 * scores)  # any per-candidate value: estimate its sum over the kept window
    truth = (values * keep).sum(axis=1)
    generator = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(3000):
        positions, weights = choose_negatives(scores, keep, 5, sampling, beta=4.0, generator=generator)
        picked = np.take_along_axis(values, positions, axis=1)
        estimates.append((picked * np.exp(weights)).sum(axis=1))
    np.testing.assert_allclose(np.mean(estimates, axis=0)[1:], truth[1:], rtol=0.03)
    np.testing.assert_allclose(np.mean(estimates, axis=0)[0], truth[0], rtol=0.03)


def test_hardness_prefers_high_scores():
    scores, keep = window(seed=5, b=1, width=40)
    keep[:] = True
    counts = np.zeros(40)
    generator = torch.Generator().manual_seed(1)
    for _ in range(400):
        counts[choose_negatives(scores, keep, 3, "hardness", beta=10.0, generator=generator)[0][0]] += 1
    assert counts[:10].sum() > 4 * counts[-10:].sum()


def test_cross_encoder_rescoring(tmp_path, tiny_model, tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    options = {**EXAMPLE, "model": tiny_model, "max_seq_length": 64, "k": 2, "range_max": 6, "format": "ids"}
    result = mine(PAIRS, tmp_path / "ce", cross_encoder=tiny_cross_encoder, **options)
    table = read_ids(tmp_path / "ce").iloc[:5]
    documents = dict(zip(*_documents(tmp_path / "ce"), strict=True))
    model = CrossEncoder(tiny_cross_encoder, device="cpu", local_files_only=True)
    for row in table.itertuples(index=False):
        expected = model.predict([(row.query, documents[i]) for i in row.negative_ids])
        np.testing.assert_allclose(row.negative_scores, expected, atol=1e-5)
        assert list(row.negative_scores) == sorted(row.negative_scores, reverse=True)
        expected = model.predict([(row.query, documents[i]) for i in row.positive_ids])
        np.testing.assert_allclose(row.positive_scores, expected, atol=1e-5)
    assert "cross-encoder" in (tmp_path / "ce" / "report.md").read_text()
    assert result.stats["written"]["queries"] > 0


def _documents(out):
    import pandas as pd

    table = pd.read_parquet(out / "documents.parquet")
    return table["id"].tolist(), table["text"].tolist()
