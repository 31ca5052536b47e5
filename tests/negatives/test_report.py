import pytest
import torch
import torch.nn.functional as F

from negkit.negatives import MinedSampler, UniformSampler, negative_report


def test_report_matches_explicit_loops():
    generator = torch.Generator().manual_seed(0)
    anchors, pool = torch.randn(6, 5, generator=generator), torch.randn(40, 5, generator=generator)
    positives = anchors + 0.5 * torch.randn(6, 5, generator=generator)
    anchor_labels, pool_labels = torch.arange(6) % 3, torch.arange(40) % 3
    ids = torch.arange(6)
    negatives = UniformSampler(7).sample(anchors, pool, anchor_ids=ids, pool_ids=torch.arange(40), generator=generator)
    report = negative_report(
        anchors,
        pool,
        negatives,
        anchor_labels=anchor_labels,
        pool_labels=pool_labels,
        positives=positives,
        anchor_ids=ids,
        pool_ids=torch.arange(40),
        chunk_size=9,
    )
    s = F.normalize(anchors, dim=1) @ F.normalize(pool, dim=1).T
    s_pos = (F.normalize(anchors, dim=1) * F.normalize(positives, dim=1)).sum(dim=1)
    same, above, percentiles = 0, 0, []
    for i in range(6):
        for j in negatives.indices[i].tolist():
            same += int(pool_labels[j] == anchor_labels[i])
            above += int(s[i, j] >= s_pos[i])
            rank = sum(1 for m in range(40) if m != i and s[i, m] > s[i, j])
            percentiles.append(rank / (39 - 1))
    assert report.false_negative_rate == pytest.approx(same / 42)
    assert report.above_positive == pytest.approx(above / 42)
    assert report.rank_percentile_median == pytest.approx(float(torch.tensor(percentiles).median()))
    assert sum(report.rank_histogram.values()) == pytest.approx(1.0)
    assert report.positive_similarity == pytest.approx(float(s_pos.mean()), abs=1e-6)


def test_mined_negatives_are_the_hardest_and_uniform_ones_are_spread():
    generator = torch.Generator().manual_seed(1)
    anchors, pool = torch.randn(16, 8, generator=generator), torch.randn(400, 8, generator=generator)
    mined = negative_report(anchors, pool, MinedSampler(4, (0, 4)).sample(anchors, pool))
    assert mined.rank_percentile_median < 0.01 and mined.rank_histogram["0-0.01"] == 1.0
    uniform = negative_report(anchors, pool, UniformSampler(50).sample(anchors, pool, generator=generator))
    assert 0.35 < uniform.rank_percentile_median < 0.65 and uniform.false_negative_rate is None
    with pytest.raises(ValueError, match=r"negatives must index the pool with shape \[16, K\]"):
        negative_report(anchors, pool, torch.zeros(3, 2, dtype=torch.long))
