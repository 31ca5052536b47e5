"""Two gloo processes on CPU train exactly like one process on the concatenated batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from negkit.distributed import enqueue_global, gather, gather_batch, global_info_nce
from negkit.losses import count_skipped, info_nce, strict
from negkit.negatives import Queue

STEPS, WORLD, LOCAL = 3, 2, 4


def data():
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(STEPS, WORLD * LOCAL, 6, generator=generator)
    x2 = x1 + 0.3 * torch.randn(STEPS, WORLD * LOCAL, 6, generator=generator)
    labels = torch.randint(0, 3, (STEPS, WORLD * LOCAL), generator=generator)
    return x1, x2, labels


def model():
    torch.manual_seed(1)
    return torch.nn.Linear(6, 4)


def train_rank(rank: int, init_file: str, out: str, symmetric: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    queue = Queue(size=2 * WORLD * LOCAL, dim=4)
    x1, x2, labels = data()
    local = slice(rank * LOCAL, (rank + 1) * LOCAL)
    for step in range(STEPS):
        enqueue_global(queue, net(x2[step, local]), labels[step, local], torch.arange(LOCAL) + rank * LOCAL)
        loss = global_info_nce(
            net(x1[step, local]), net(x2[step, local]), labels=labels[step, local], temperature=0.2, symmetric=symmetric
        )
        optimizer.zero_grad()
        loss.backward()
        for p in net.parameters():  # what DDP does: average the gradients over ranks
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        optimizer.step()
    batch = gather_batch(torch.full((LOCAL, 2), float(rank)), torch.full((LOCAL,), rank))
    assert batch.offset == rank * LOCAL and batch.labels.tolist() == [0] * LOCAL + [1] * LOCAL
    assert gather(torch.tensor([rank])).tolist() == [0, 1]
    torch.save({**net.state_dict(), "queue_labels": queue.labels, "queue_ids": queue.ids}, f"{out}.{rank}")
    dist.barrier()  # both ranks finish before gloo tears down: an early exit can abort the peer (SIGABRT)
    dist.destroy_process_group()


@pytest.mark.parametrize("symmetric", [False, True])
def test_two_ranks_match_single_process_training(tmp_path, symmetric):
    out = str(tmp_path / "params")
    mp.spawn(train_rank, args=(str(tmp_path / "init"), out, symmetric), nprocs=WORLD, join=True)

    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    x1, x2, labels = data()
    for step in range(STEPS):
        loss = info_nce(net(x1[step]), net(x2[step]), labels=labels[step], temperature=0.2, symmetric=symmetric)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    saved = [torch.load(f"{out}.{rank}") for rank in range(WORLD)]
    for distributed in saved:
        for name, value in net.state_dict().items():
            torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-6)
    # Both ranks hold the same queue: the last two global batches, in rank order.
    assert torch.equal(saved[0]["queue_labels"], saved[1]["queue_labels"])
    assert torch.equal(saved[0]["queue_labels"], labels[1:].flatten())
    assert saved[0]["queue_ids"].tolist() == list(range(WORLD * LOCAL)) * 2
    assert not os.environ.get("RANK")  # the test process itself stayed single-process


def test_single_process_equals_info_nce_and_skips_anchors_without_negatives():
    a, p = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(global_info_nce(a, p, labels=labels), info_nce(a, p, labels=labels))
    same = torch.zeros(6, dtype=torch.long)
    with count_skipped() as skipped:
        assert global_info_nce(a, p, labels=same, symmetric=True).item() == 0.0
    assert skipped.anchors == 12
    torch.testing.assert_close(global_info_nce(a[:1], p[:1]), info_nce(a[:1], p[:1]))
    with strict(), pytest.raises(ValueError, match=r"anchors \[0, 1, 2, 3, 4, 5\] have no negative"):
        global_info_nce(a, p, labels=same)
    assert gather(a) is a and gather_batch(a).offset == 0
