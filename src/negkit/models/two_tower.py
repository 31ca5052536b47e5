"""The two-tower model of the recommendation task: user and item towers into one embedding space."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from negkit.data.interactions import InteractionData


class TwoTower(nn.Module):
    """User and item towers into one ``dim``-dimensional space.

    User tower: id embedding (+ age bucket, gender and occupation embeddings with ``features``); item tower: id
    embedding (+ a linear map of the multi-hot genres). ``users(ids) -> [B, dim]``, ``items(ids) -> [..., dim]``.
    """

    def __init__(self, data: InteractionData, dim: int, *, features: bool = True) -> None:
        super().__init__()
        self.user_id = nn.Embedding(data.num_users, dim)
        self.item_id = nn.Embedding(data.num_items, dim)
        for table in (self.user_id, self.item_id):
            nn.init.normal_(table.weight, std=0.1)
        self.features = features
        if features:
            self.user_attributes = nn.ModuleList(nn.Embedding(size, dim) for size in data.user_feature_sizes)
            self.genres = nn.Linear(data.item_features.shape[1], dim, bias=False)
            self.register_buffer("user_features", data.user_features.clone(), persistent=False)
            self.register_buffer("item_features", data.item_features.clone(), persistent=False)

    def users(self, ids: Tensor) -> Tensor:
        vectors = self.user_id(ids)
        if self.features:
            attributes = self.user_features[ids]
            for column, table in enumerate(self.user_attributes):
                vectors = vectors + table(attributes[..., column])
        return vectors

    def items(self, ids: Tensor | None = None) -> Tensor:
        ids = torch.arange(self.item_id.num_embeddings) if ids is None else ids
        vectors = self.item_id(ids)
        if self.features:
            vectors = vectors + self.genres(self.item_features[ids])
        return vectors
