"""SigLIP across two gloo processes: the ring exchange gives the loss and the gradients of one process on the combined
batch (embeddings, learnable scale and bias), untiled and tiled, with labels; and trains the same parameters."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from negkit.losses import SigLIP, siglip, siglip_distributed

WORLD, LOCAL, DIM, STEPS = 2, 4, 5, 2
#: (labels, chunk_size) of each compared configuration
CONFIGS = [(False, None), (True, 3), (True, None)]


def data():
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(WORLD * LOCAL, DIM, generator=generator, dtype=torch.float64)
    x2 = x1 + 0.5 * torch.randn(WORLD * LOCAL, DIM, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])  # duplicates within a rank and across the two ranks
    return x1, x2, labels


def model():
    torch.manual_seed(1)
    return torch.nn.Linear(DIM, 3).double()


def scale_and_bias():
    return torch.tensor(5.0, dtype=torch.float64, requires_grad=True), torch.tensor(
        -2.0, dtype=torch.float64
    ).requires_grad_()


def run_rank(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    x1, x2, labels = data()
    local = slice(rank * LOCAL, (rank + 1) * LOCAL)
    results = {}
    for index, (with_labels, chunk_size) in enumerate(CONFIGS):
        a = x1[local].clone().requires_grad_(True)
        p = x2[local].clone().requires_grad_(True)
        t, b = scale_and_bias()
        loss = siglip_distributed(
            a, p, logit_scale=t, logit_bias=b, labels=labels[local] if with_labels else None, chunk_size=chunk_size
        )
        loss.backward()
        value = loss.detach().clone()
        dist.all_reduce(value)
        for g in (t.grad, b.grad):  # what DDP does with shared parameters: average over ranks
            dist.all_reduce(g)
        results[index] = {
            "loss": value / WORLD,
            "grad_anchor": a.grad / WORLD,  # the combined loss is the mean of the ranks' losses
            "grad_positive": p.grad / WORLD,
            "grad_scale": t.grad / WORLD,
            "grad_bias": b.grad / WORLD,
            "none": siglip_distributed(
                a, p, logit_scale=t, logit_bias=b, labels=labels[local] if with_labels else None, reduction="none"
            ).detach(),
        }
    # training: an encoder and the SigLIP module (learnable scale and bias), gradients averaged as DDP does
    net, criterion = model(), SigLIP(logit_scale=5.0, logit_bias=-2.0, chunk_size=2, distributed=True).double()
    optimizer = torch.optim.SGD([*net.parameters(), *criterion.parameters()], lr=0.1)
    for _ in range(STEPS):
        loss = criterion(net(x1[local]), net(x2[local]), labels[local])
        optimizer.zero_grad()
        loss.backward()
        for param in [*net.parameters(), *criterion.parameters()]:
            dist.all_reduce(param.grad)
            param.grad /= WORLD
        optimizer.step()
    results["state"] = {**net.state_dict(), **{f"loss.{k}": v for k, v in criterion.state_dict().items()}}
    # unequal local batches are refused on every rank
    try:
        rows = 2 if rank == 0 else 3
        siglip_distributed(x1[:rows], x2[:rows], logit_scale=1.0, logit_bias=0.0)
        results["unequal"] = "accepted"
    except ValueError as error:
        results["unequal"] = str(error)
    torch.save(results, f"{out}.{rank}")
    dist.barrier()  # both ranks finish before gloo tears down: an early exit can abort the peer (SIGABRT)
    dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_combined_batch(tmp_path):
    out = str(tmp_path / "results")
    mp.spawn(run_rank, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    saved = [torch.load(f"{out}.{rank}") for rank in range(WORLD)]
    x1, x2, labels = data()

    for index, (with_labels, chunk_size) in enumerate(CONFIGS):
        a, p = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
        t, b = scale_and_bias()
        used = labels if with_labels else None
        loss = siglip(a, p, logit_scale=t, logit_bias=b, labels=used, chunk_size=chunk_size)
        loss.backward()
        rows = siglip(a, p, logit_scale=t, logit_bias=b, labels=used, reduction="none").detach()
        for rank, result in enumerate(saved):
            part = result[index]
            local = slice(rank * LOCAL, (rank + 1) * LOCAL)
            torch.testing.assert_close(part["loss"], loss.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(part["none"], rows[local], rtol=1e-12, atol=1e-12)
            # the gradient of every rank's loss reached the rank that owns the rows
            torch.testing.assert_close(part["grad_anchor"], a.grad[local], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(part["grad_positive"], p.grad[local], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(part["grad_scale"], t.grad, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(part["grad_bias"], b.grad, rtol=1e-10, atol=1e-12)

    net, criterion = model(), SigLIP(logit_scale=5.0, logit_bias=-2.0).double()
    optimizer = torch.optim.SGD([*net.parameters(), *criterion.parameters()], lr=0.1)
    for _ in range(STEPS):
        loss = criterion(net(x1), net(x2), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    expected = {**net.state_dict(), **{f"loss.{k}": v for k, v in criterion.state_dict().items()}}
    assert expected["loss.logit_bias"].item() != -2.0  # the bias did train
    for result in saved:
        assert set(result["state"]) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(result["state"][name], value, rtol=1e-10, atol=1e-12)
        assert "same number of rows on every rank, got [2, 3]" in result["unequal"]


def test_one_process_is_siglip():
    x1, x2, labels = data()
    assert not (dist.is_available() and dist.is_initialized())
    torch.testing.assert_close(
        siglip_distributed(x1, x2, logit_scale=3.0, logit_bias=-1.0, labels=labels, chunk_size=3),
        siglip(x1, x2, logit_scale=3.0, logit_bias=-1.0, labels=labels),
    )
    with pytest.raises(ValueError, match="logit_scale must be a finite number > 0"):
        siglip_distributed(x1, x2, logit_scale=0.0, logit_bias=0.0)
