import pytest
import torch

from negkit.negatives import EmbeddingCache, Queue


def test_queue_is_fifo_with_labels_ids_and_partial_enqueue():
    queue = Queue(4, 2)
    assert len(queue) == 0 and queue.embeddings.shape == (0, 2)
    queue.enqueue(torch.tensor([[1.0, 1], [2, 2]]), labels=torch.tensor([10, 20]), ids=torch.tensor([1, 2]))
    queue.enqueue(
        torch.tensor([[3.0, 3], [4, 4], [5, 5]]),
        labels=torch.tensor([30, 40, 50]),
        mask=torch.tensor([True, False, True]),
    )
    assert queue.embeddings[:, 0].tolist() == [1.0, 2.0, 3.0, 5.0]
    assert queue.labels.tolist() == [10, 20, 30, 50] and queue.ids.tolist() == [1, 2, -1, -1]
    queue.enqueue(torch.tensor([[6.0, 6]]))
    assert queue.embeddings[:, 0].tolist() == [2.0, 3.0, 5.0, 6.0] and len(queue) == 4  # the oldest left
    queue.enqueue(torch.arange(12.0).view(6, 2))  # more rows than the queue holds: the newest 4 stay
    assert queue.embeddings[:, 0].tolist() == [4.0, 6.0, 8.0, 10.0]


def test_queue_enqueues_detached_rows_and_survives_state_dict():
    queue = Queue(5, 3)
    rows = torch.randn(3, 3, requires_grad=True)
    queue.enqueue(rows * 2, labels=torch.tensor([1, 2, 3]))
    assert not queue.embeddings.requires_grad
    restored = Queue(5, 3)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.embeddings, queue.embeddings) and torch.equal(restored.labels, queue.labels)
    restored.enqueue(torch.ones(3, 3))
    queue.enqueue(torch.ones(3, 3))
    assert torch.equal(restored.embeddings, queue.embeddings)  # the pointer was restored too
    assert set(queue.state_dict()) == {"queue_embeddings", "queue_labels", "queue_ids", "pointer", "count"}


def test_embedding_cache_updates_by_index_and_tracks_age():
    cache = EmbeddingCache(6, 2)
    assert cache.age().tolist() == [-1] * 6 and not bool(cache.filled.any())
    cache.update(torch.tensor([0, 3]), torch.ones(2, 2), labels=torch.tensor([7, 8]))
    cache.tick()
    cache.tick()
    cache.update(torch.tensor([3]), torch.full((1, 2), 2.0))
    cache.tick()
    assert cache.age().tolist() == [3, -1, -1, 1, -1, -1]
    assert cache.table[3].tolist() == [2.0, 2.0] and cache.labels[[0, 3]].tolist() == [7, 8]
    restored = EmbeddingCache(6, 2)
    restored.load_state_dict(cache.state_dict())
    assert torch.equal(restored.age(), cache.age()) and torch.equal(restored.table, cache.table)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Queue(0, 3), "size must be >= 1"),
        (lambda: Queue(3, 2).enqueue(torch.ones(2, 3)), "embeddings must have 2 features"),
        (lambda: Queue(3, 2).enqueue(torch.ones(2, 2), labels=torch.ones(3)), r"labels must have shape \[2\]"),
        (lambda: EmbeddingCache(4, 2).update(torch.tensor([4]), torch.ones(1, 2)), r"index must lie in \[0, 4\)"),
        (lambda: EmbeddingCache(4, 2).update(torch.tensor([0]), torch.full((1, 2), float("nan"))), "non-finite"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
