"""negkit on a CUDA GPU: the tiled losses, bf16, the samplers, and the NCCL gather.

Every expected value is computed independently, on the CPU in float64 (plain ``F.cross_entropy`` / explicit
formulas), never taken from negkit's own output on another device. Deselected unless ``-m cuda`` (conftest.py).
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from negkit.distributed import _Gather, global_info_nce
from negkit.losses import info_nce, siglip
from negkit.negatives import HardnessSampler, MCMCSampler, MinedSampler

pytestmark = pytest.mark.cuda


def pairs(device, size=300, dim=32, dtype=torch.float32, seed=0, noise=0.5):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(size, dim, generator=generator)
    k = q + noise * torch.randn(size, dim, generator=generator)
    return q.to(device, dtype).requires_grad_(True), k.to(device, dtype).requires_grad_(True)


def reference_info_nce(q, k, temperature, symmetric=False):
    """Float64 CPU InfoNCE by ``F.cross_entropy`` on the full logits: value and gradients of both inputs."""
    q64 = q.detach().double().cpu().requires_grad_(True)
    k64 = k.detach().double().cpu().requires_grad_(True)
    logits = F.normalize(q64, dim=1) @ F.normalize(k64, dim=1).T / temperature
    target = torch.arange(len(q64))
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target)) / 2
    loss.backward()
    return loss.detach(), q64.grad, k64.grad


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 64, 1000])
def test_info_nce_plain_and_tiled_equal_the_float64_reference(device, symmetric, chunk_size):
    q, k = pairs(device)
    loss = info_nce(q, k, temperature=0.1, symmetric=symmetric, chunk_size=chunk_size)
    loss.backward()
    value, grad_q, grad_k = reference_info_nce(q, k, 0.1, symmetric)
    assert loss.device.type == device.type
    torch.testing.assert_close(loss.detach().double().cpu(), value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.grad.double().cpu(), grad_q, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(k.grad.double().cpu(), grad_k, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 64])
def test_bf16_at_temperature_0_01_is_finite_and_close(device, chunk_size):
    q, k = pairs(device, dtype=torch.bfloat16, seed=1, noise=4.0)  # hard enough that T = 0.01 leaves a gradient
    loss = info_nce(q, k, temperature=0.01, chunk_size=chunk_size)
    loss.backward()
    value, grad_q, _ = reference_info_nce(q, k, 0.01)
    assert torch.isfinite(loss) and bool(torch.isfinite(q.grad).all()) and bool(torch.isfinite(k.grad).all())
    # bf16 keeps 8 bits of mantissa: the logits' rounding at T = 0.01 moves the loss by a few percent at most
    assert abs(float(loss.detach()) - float(value)) < 0.05 * float(value) + 0.05
    cosine = F.cosine_similarity(q.grad.double().cpu().flatten(), grad_q.flatten(), dim=0)
    assert float(cosine) > 0.95


def test_siglip_tiled_equals_plain_and_the_explicit_sum(device):
    q, k = pairs(device, size=200, seed=2)
    scale, bias = 10.0, -10.0
    tiled = siglip(q, k, logit_scale=scale, logit_bias=bias, chunk_size=48)
    plain = siglip(q, k, logit_scale=scale, logit_bias=bias)
    qn, kn = F.normalize(q.detach().double().cpu(), dim=1), F.normalize(k.detach().double().cpu(), dim=1)
    signs = 2 * torch.eye(200, dtype=torch.float64) - 1
    explicit = -F.logsigmoid(signs * (scale * qn @ kn.T + bias)).sum() / 200
    torch.testing.assert_close(tiled.detach().double().cpu(), explicit, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.detach().double().cpu(), explicit, rtol=1e-5, atol=1e-5)


def test_samplers_run_on_the_device_and_keep_their_rules(device):
    generator = torch.Generator().manual_seed(3)
    pool = torch.randn(20_000, 32, generator=generator).to(device)
    ids = torch.arange(20_000, device=device)
    anchors = pool[:64]
    hard = HardnessSampler(16, 5.0, chunk_size=2048).sample(anchors, pool, anchor_ids=ids[:64], pool_ids=ids)
    assert hard.indices.device.type == device.type and bool((hard.indices != ids[:64, None]).all())
    rows = hard.indices.sort(dim=1).values
    assert bool((rows[:, 1:] != rows[:, :-1]).all()) and bool(torch.isfinite(hard.log_weights).all())
    mined = MinedSampler(16, rank_window=(1, 17), backend="exact").sample(anchors, pool)
    scores = F.normalize(anchors, dim=1) @ F.normalize(pool, dim=1).T
    expected = scores.double().cpu().topk(17, dim=1).indices[:, 1:]
    assert torch.equal(mined.indices.cpu().sort(dim=1).values, expected.sort(dim=1).values)
    chains = MCMCSampler(20_000, k=8, beta=5.0)
    negatives = chains.sample(anchors, pool, anchor_ids=torch.arange(64))
    assert bool((negatives.indices >= 0).all()) and 0 < chains.last_acceptance_rate <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gather_through_nccl_keeps_values_and_gradients(device):
    """One rank (one GPU): the all-gather and the all-reduce of its backward run through NCCL (gloo on CPU), and
    the global loss equals the local one; with more GPUs the two-process gloo test covers the exchange itself."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        x = torch.randn(8, 5, device=device, requires_grad=True)
        gathered = _Gather.apply(x)
        assert torch.equal(gathered.detach(), x.detach())
        (gathered * torch.arange(5.0, device=device)).sum().backward()
        torch.testing.assert_close(x.grad, torch.arange(5.0, device=device).expand(8, 5))
        q, k = pairs(device, size=64, seed=4)
        value = global_info_nce(q, k, temperature=0.2)
        expected, _, _ = reference_info_nce(q, k, 0.2)
        torch.testing.assert_close(value.detach().double().cpu(), expected, rtol=1e-5, atol=1e-5)
    finally:
        dist.destroy_process_group()
