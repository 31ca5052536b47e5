import pytest

from negkit.train.config import build_config


@pytest.fixture
def tiny_config():
    """Two strategies, 3 epochs of a small MLP on scikit-learn digits: a full run in a few seconds."""
    return build_config(
        {
            "dataset": "digits",
            "strategies": ["simclr", "hscl"],
            "train": {"epochs": 3, "batch_size": 128, "hidden_dim": 64, "feature_dim": 32, "projection_dim": 16},
            "views": {"shift": 1},
            "eval": {"knn_k": 5},
        }
    )
