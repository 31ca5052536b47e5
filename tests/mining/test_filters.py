"""The false-negative filters: identity, rank window, absolute / relative margin (right for negative scores), max
score — each removal counted under its reason; end to end on hand-made embeddings."""

import math

import numpy as np
import pytest

from negkit.mining import mine
from negkit.mining.filters import identity_window, score_filters

from .conftest import hand_made, read_ids


def unit(angle_cos: float) -> list[float]:
    """A 2-D unit vector whose cosine with (1, 0) is ``angle_cos``."""
    return [angle_cos, math.sqrt(max(0.0, 1 - angle_cos**2))]


def test_identity_window_drops_positives_and_same_text_then_ranks_the_rest():
    ids = np.array([[3, 0, 5, 1, 2, 4, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, -np.inf]], dtype=np.float32)
    block = identity_window(ids, scores, [(0, 3)], [(5,)], range_min=1, range_max=3, k=2, num_documents=6)
    # eligible in order: 1 (rank 0), 2 (rank 1), 4 (rank 2); window [1, 3) -> 2, 4
    assert block.ids.tolist() == [[2, 4]]
    assert block.removed == {"positive": 2, "same_text": 1, "rank_window": 1}
    # raw window ranks 1..2 hold document 0 (positive) and 5 (same text)
    assert block.collisions.tolist() == [2] and block.collisions_top_k.tolist() == [2]


@pytest.mark.parametrize("p", [0.8, -0.5])
def test_margins_stay_below_the_positive_for_positive_and_negative_scores(p):
    scores = np.array([[p + 0.03, p - 0.02, p - 0.04, p - 0.06, p - 0.3]], dtype=np.float32)
    keep_all = np.ones_like(scores, dtype=bool)
    from negkit.mining.filters import WindowBlock

    block = WindowBlock(np.arange(5)[None], scores, keep_all.copy(), {})
    score_filters(block, np.array([p]), relative_margin=0.1)
    threshold = p - abs(p) * 0.1
    assert block.keep.tolist() == [[bool(s <= threshold) for s in scores[0]]]
    assert not block.keep[0, 0]  # above the positive: always removed
    block = WindowBlock(np.arange(5)[None], scores, keep_all.copy(), {})
    score_filters(block, np.array([p]), margin=0.05, max_score=p - 0.1)
    assert block.keep.tolist() == [[False, False, False, False, True]]
    assert block.removed == {"margin": 3, "max_score": 1}  # counted once, under the first failing filter


def test_end_to_end_relative_margin_with_negative_scores(tmp_path):
    # query 0 = (1, 0); its positive d0 scores -0.5; the others score as listed
    others = [0.2, -0.3, -0.47, -0.52, -0.6, -0.9]
    documents = [unit(-0.5), *[unit(c) for c in others], [0.0, 1.0]]
    queries = [[1.0, 0.0], [0.0, 1.0]]
    files = hand_made(tmp_path, np.array(queries), np.array(documents), [[0], [7]])
    result = mine(
        files.pop("pairs"),
        tmp_path / "out",
        **files,
        k=3,
        range_max=7,
        relative_margin=0.1,
        on_short="keep",
        format="ids",
    )
    table = read_ids(tmp_path / "out")
    row = table[table["query"] == "q0"].iloc[0]
    # threshold −0.5 − 0.05 = −0.55: kept −0.6, −0.9 (and nothing above the positive, e.g. −0.47)
    assert list(row.negative_ids) == ["id5", "id6"]
    np.testing.assert_allclose(row.negative_scores, [-0.6, -0.9], atol=1e-6)
    np.testing.assert_allclose(row.positive_scores, [-0.5], atol=1e-6)
    removed = result.stats["filters"]["removed"]
    assert removed["positive"] == 2 and removed["relative_margin"] >= 4  # q0: 0.2, −0.3, −0.47, −0.52
    assert result.stats["short"]["queries"] >= 1


def test_end_to_end_rank_window_max_score_and_same_text(tmp_path):
    rng = np.random.default_rng(0)
    documents = rng.normal(size=(30, 8))
    queries = documents[:3] + 0.01 * rng.normal(size=(3, 8))
    files = hand_made(tmp_path, queries, documents, [[0], [1], [2]])
    result = mine(
        files.pop("pairs"), tmp_path / "out", **files, k=2, range_min=2, range_max=6, max_score=0.5, format="ids"
    )
    table = read_ids(tmp_path / "out")
    for _, row in table.iterrows():
        assert all(s <= 0.5 for s in row.negative_scores)
        assert all(rank >= 0 for rank in row.negative_ranks)
        assert f"id{row.query_id}" not in list(row.negative_ids)
    removed = result.stats["filters"]["removed"]
    assert removed["rank_window"] == 3 * 2  # two nearest non-positives skipped per query
    assert removed["positive"] == 3
