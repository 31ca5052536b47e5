"""global_info_nce with hard-negative columns, a tensor temperature and tiles: float64 loop reference, one process
against info_nce, and two gloo processes against one process on the concatenated batch (value and gradients)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from negkit.distributed import global_info_nce
from negkit.losses import info_nce
from tests.losses import reference as ref
from tests.losses.helpers import randint, randn

WORLD, LOCAL, M, DIM = 2, 3, 2, 5
#: (share_negatives, labels, symmetric, chunk_size, tensor temperature)
CONFIGS = [
    (True, True, False, None, True),
    (True, True, True, 4, True),
    (True, False, False, 1, False),
    (False, False, True, 5, True),
    (False, True, False, None, False),
]


def loop_reference(a, p, n, *, temperature, labels, symmetric, share):
    """Per-anchor loss ``[B]`` by explicit loops (tests/losses/reference.py), hard negatives shared ``[B·m, d]`` or
    per anchor ``[B, m, d]``; symmetric: the reverse direction without hard negatives, averaged."""
    negatives = n.flatten(0, 1) if share else n
    forward = ref.info_nce(a, p, negatives, temperature=temperature, labels=labels)
    if not symmetric:
        return forward
    return 0.5 * (forward + ref.info_nce(p, a, temperature=temperature, labels=labels))


def inputs(seed, rows=WORLD * LOCAL):
    a, p, n = randn(seed, rows, DIM), randn(seed + 1, rows, DIM), randn(seed + 2, rows, M, DIM)
    return a, p, n, randint(seed + 3, 3, rows)


@pytest.mark.parametrize("config", CONFIGS)
def test_one_process_matches_the_float64_loop_reference_value_and_gradient(config):
    share, use_labels, symmetric, chunk, tensor_t = config
    a, p, n, labels = inputs(0)
    labels = labels if use_labels else None
    leaves = [x.clone().requires_grad_() for x in (a, p, n)]
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True) if tensor_t else 0.3
    loss = global_info_nce(
        *leaves, temperature=t, labels=labels, symmetric=symmetric, share_negatives=share, chunk_size=chunk
    )
    expected_leaves = [x.clone().requires_grad_() for x in (a, p, n)]
    t_ref = torch.tensor(0.3, dtype=torch.float64, requires_grad=True) if tensor_t else 0.3
    expected = loop_reference(
        *expected_leaves, temperature=t_ref, labels=labels, symmetric=symmetric, share=share
    ).mean()
    torch.testing.assert_close(loss, expected)
    wrt = leaves + ([t] if tensor_t else [])
    expected_wrt = expected_leaves + ([t_ref] if tensor_t else [])
    for got, want in zip(torch.autograd.grad(loss, wrt), torch.autograd.grad(expected, expected_wrt), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("config", CONFIGS)
def test_one_process_equals_info_nce_with_the_same_negatives(config):
    share, use_labels, symmetric, chunk, tensor_t = config
    a, p, n, labels = inputs(10)
    labels = labels if use_labels else None
    t = torch.tensor(0.2, dtype=torch.float64) if tensor_t else 0.2
    negatives = n.flatten(0, 1) if share else n
    expected = info_nce(a, p, negatives, temperature=t, labels=labels, symmetric=symmetric, reduction="none")
    got = global_info_nce(
        a,
        p,
        n,
        temperature=t,
        labels=labels,
        symmetric=symmetric,
        share_negatives=share,
        chunk_size=chunk,
        reduction="none",
    )
    torch.testing.assert_close(got, expected)


def test_tiles_and_the_learnable_temperature_pass_gradcheck():
    a, p, n, labels = inputs(20, rows=4)
    t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    for share in (True, False):

        def loss(a, p, n, t, share=share):
            return global_info_nce(
                a, p, n, temperature=t, labels=labels, symmetric=True, share_negatives=share, chunk_size=3
            )

        assert torch.autograd.gradcheck(loss, [x.clone().requires_grad_() for x in (a, p, n)] + [t])


def test_own_negatives_follow_their_anchor_and_shared_ones_are_a_set():
    a, p, n, _ = inputs(30)
    swapped = n.roll(1, dims=0)  # anchor i gets anchor i-1's negatives
    own = global_info_nce(a, p, n, share_negatives=False)
    assert not torch.allclose(own, global_info_nce(a, p, swapped, share_negatives=False))
    shared = global_info_nce(a, p, n)
    torch.testing.assert_close(shared, global_info_nce(a, p, swapped))  # every anchor sees all of them anyway
    assert not torch.allclose(shared, own)  # and more negatives than its own


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_at_a_small_temperature(dtype):
    a, p, n, labels = (x.to(dtype) if x.is_floating_point() else x for x in inputs(40))
    t = torch.tensor(0.01, requires_grad=True)
    for chunk in (None, 2):
        leaves = [x.clone().requires_grad_() for x in (a, p, n)]
        loss = global_info_nce(*leaves, temperature=t, labels=labels, symmetric=True, chunk_size=chunk)
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(x.grad).all() for x in leaves)
        assert torch.isfinite(t.grad)
        t.grad = None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"negatives": torch.randn(5, 2, 4)}, r"negatives must have shape \[6, m, 4\]"),
        ({"negatives": torch.randn(6, 2, 3)}, r"negatives must have shape \[6, m, 4\]"),
        ({"negatives": torch.randn(6, 4)}, "negatives"),
        ({"negatives": torch.randn(6, 2, 4, dtype=torch.float64)}, "dtype"),
        ({"negatives": torch.full((6, 2, 4), float("nan"))}, "negatives"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"temperature": torch.tensor(-0.1)}, "temperature"),
        ({"temperature": torch.tensor([0.1, 0.2])}, "scalar"),
        ({"labels": torch.zeros(5, dtype=torch.long)}, r"labels must have shape \[6\]"),
        ({"similarity": "l2"}, "similarity"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        global_info_nce(torch.randn(6, 4), torch.randn(6, 4), **kwargs)


def test_no_hard_negative_column_is_the_plain_loss():
    a, p, n, _ = inputs(50)
    torch.testing.assert_close(global_info_nce(a, p, n[:, :0]), global_info_nce(a, p))
    # an anchor whose only in-batch candidates share its label keeps its hard negatives: not skipped
    same = torch.zeros(WORLD * LOCAL, dtype=torch.long)
    torch.testing.assert_close(
        global_info_nce(a, p, n, labels=same, share_negatives=False),
        info_nce(a, p, n, labels=same),
    )


# ------------------------------------------------------------------------------------------- two processes


def rank_losses(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    a, p, n, labels = inputs(60)
    local = slice(rank * LOCAL, (rank + 1) * LOCAL)
    results = []
    for share, use_labels, symmetric, chunk, tensor_t in CONFIGS:
        leaves = [x[local].clone().requires_grad_() for x in (a, p, n)]
        t = torch.tensor(0.25, dtype=torch.float64, requires_grad=True) if tensor_t else 0.25
        loss = global_info_nce(
            *leaves,
            temperature=t,
            labels=labels[local] if use_labels else None,
            symmetric=symmetric,
            share_negatives=share,
            chunk_size=chunk,
        )
        loss.backward()
        grads = [x.grad for x in leaves] + ([t.grad] if tensor_t else [])
        results.append((loss.detach(), grads))
    # unequal local batches: the same clear error on every rank, not a hang
    rows = LOCAL - rank
    try:
        global_info_nce(a[:rows], p[:rows])
        error = ""
    except ValueError as caught:
        error = str(caught)
    try:  # labels on one rank only
        global_info_nce(a[:LOCAL], p[:LOCAL], labels=labels[:LOCAL] if rank == 0 else None)
        labels_error = ""
    except ValueError as caught:
        labels_error = str(caught)
    torch.save({"results": results, "error": error, "labels_error": labels_error}, f"{out}.{rank}")
    dist.barrier()  # both ranks finish before gloo tears down: an early exit can abort the peer (SIGABRT)
    dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_combined_batch_with_its_hard_negatives(tmp_path):
    out = str(tmp_path / "losses")
    mp.spawn(rank_losses, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    saved = [torch.load(f"{out}.{rank}") for rank in range(WORLD)]
    a, p, n, labels = inputs(60)
    for index, (share, use_labels, symmetric, _chunk, tensor_t) in enumerate(CONFIGS):
        leaves = [x.clone().requires_grad_() for x in (a, p, n)]
        t = torch.tensor(0.25, dtype=torch.float64, requires_grad=True) if tensor_t else 0.25
        negatives = leaves[2].flatten(0, 1) if share else leaves[2]
        loss = info_nce(
            leaves[0], leaves[1], negatives, temperature=t, labels=labels if use_labels else None, symmetric=symmetric
        )
        expected = torch.autograd.grad(loss, leaves + ([t] if tensor_t else []))
        losses = [saved[rank]["results"][index][0] for rank in range(WORLD)]
        grads = [saved[rank]["results"][index][1] for rank in range(WORLD)]
        torch.testing.assert_close(sum(losses) / WORLD, loss.detach())
        # rank r's gradient is d(sum of the ranks' losses)/d(its rows): DDP's average divides by the world size
        for position in range(3):
            distributed = torch.cat([grads[rank][position] for rank in range(WORLD)]) / WORLD
            torch.testing.assert_close(distributed, expected[position])
        if tensor_t:  # the temperature is not exchanged: its gradient is averaged over ranks like a parameter
            torch.testing.assert_close(sum(grads[rank][3] for rank in range(WORLD)) / WORLD, expected[3])
        if not share:  # the test sees misalignment: rank blocks of negatives swapped give another loss
            swapped = n.roll(LOCAL, dims=0)
            wrong = info_nce(
                a, p, swapped, temperature=0.25, labels=labels if use_labels else None, symmetric=symmetric
            )
            assert not torch.allclose(sum(losses) / WORLD, wrong)
    for rank in range(WORLD):
        assert "anchor must have the same shape on every rank" in saved[rank]["error"]
        assert "rank 0: [3, 5], rank 1: [2, 5]" in saved[rank]["error"]
        assert "labels must have the same shape on every rank" in saved[rank]["labels_error"]
        assert "rank 0: [3], rank 1: None" in saved[rank]["labels_error"]
