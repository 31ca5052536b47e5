"""Encoders for small images: an MLP and a small CNN, each with a projection head, behind a registry."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn


class ContrastiveModel(nn.Module):
    """``backbone`` → features ``h [B, feature_dim]`` (used for evaluation); ``head`` → ``z`` (used by the loss).

    SimCLR (Chen et al., 2020) trains through a projection head and evaluates the representation before it.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, projection_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)


def mlp_backbone(input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int) -> nn.Module:
    """Flatten → Linear(in, hidden) → BN → ReLU → Linear(hidden, feature_dim)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, feature_dim),
    )


def cnn_backbone(input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int) -> nn.Module:
    """Two 3×3 conv blocks (``hidden_dim/8`` and ``hidden_dim/4`` channels, BN, ReLU, pooling) → 4×4 → Linear.

    With the default ``hidden_dim=256``: 32 and 64 channels. The adaptive pool makes it fit 8×8 and 28×28 inputs.
    """
    if len(input_shape) != 3:
        raise ValueError(f"the cnn encoder needs [C, H, W] inputs, got {input_shape}")
    width1, width2 = max(1, hidden_dim // 8), max(1, hidden_dim // 4)
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width1, 3, padding=1),
        nn.BatchNorm2d(width1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(width1, width2, 3, padding=1),
        nn.BatchNorm2d(width2),
        nn.ReLU(inplace=True),
        nn.AdaptiveMaxPool2d(4),
        nn.Flatten(),
        nn.Linear(width2 * 16, feature_dim),
    )


_ENCODERS: dict[str, Callable[[tuple[int, ...], int, int], nn.Module]] = {"mlp": mlp_backbone, "cnn": cnn_backbone}
ENCODERS = tuple(_ENCODERS)


def build_model(
    encoder: str,
    input_shape: tuple[int, ...],
    *,
    feature_dim: int = 128,
    hidden_dim: int = 256,
    projection_dim: int = 64,
) -> ContrastiveModel:
    """Build ``encoder`` (``"mlp"`` or ``"cnn"``) with a projection head."""
    try:
        make_backbone = _ENCODERS[encoder]
    except KeyError:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}") from None
    return ContrastiveModel(make_backbone(input_shape, feature_dim, hidden_dim), feature_dim, projection_dim)
