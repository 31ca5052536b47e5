import itertools

import pytest
import torch

from negkit.models import build_model
from negkit.train.schedule import warmup_cosine


@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_shapes(encoder, shape):
    model = build_model(encoder, shape, feature_dim=32, hidden_dim=64, projection_dim=16)
    x = torch.rand(5, *shape)
    assert model(x).shape == (5, 16) and model.features(x).shape == (5, 32)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder 'vit'; choose one of mlp, cnn"):
        build_model("vit", (1, 8, 8))


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:])) and lrs[-1] < 0.05  # decays after warm-up
