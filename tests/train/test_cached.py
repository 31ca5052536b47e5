import pytest
import torch
from torch import nn

from negkit.losses import info_nce
from negkit.train.cached import cached_step


def tower(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 8))


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_gradients_equal_one_full_batch_backward_with_dropout(chunk_size):
    queries, documents = torch.randn(24, 12), torch.randn(24, 12)
    reference_q, reference_d = tower(0), tower(1)
    cached_q, cached_d = tower(0), tower(1)

    torch.manual_seed(7)
    full = info_nce(reference_q(queries), reference_d(documents), temperature=0.2, symmetric=True)
    full.backward()

    torch.manual_seed(7)
    # Same random stream: chunks draw their dropout masks in the order the full batch did.
    loss = cached_step(
        [cached_q, cached_d],
        [queries, documents],
        lambda q, d: info_nce(q, d, temperature=0.2, symmetric=True),
        chunk_size=chunk_size,
    )
    torch.testing.assert_close(loss, full.detach())
    for reference, cached in ((reference_q, cached_q), (reference_d, cached_d)):
        for p_ref, p_cached in zip(reference.parameters(), cached.parameters(), strict=True):
            torch.testing.assert_close(p_cached.grad, p_ref.grad, rtol=1e-5, atol=1e-6)


def test_one_shared_encoder_and_errors():
    encoder = tower(2)
    views = torch.randn(10, 12), torch.randn(10, 12)
    loss = cached_step(encoder.eval(), views, lambda a, b: info_nce(a, b), chunk_size=3)
    assert torch.isfinite(loss) and all(p.grad is not None for p in encoder.parameters())
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        cached_step(encoder, views, lambda a, b: info_nce(a, b), chunk_size=0)
    with pytest.raises(ValueError, match="got 2 encoders for 1 inputs"):
        cached_step([encoder, encoder], views[0], lambda a: a.sum(), chunk_size=3)
