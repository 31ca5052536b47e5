"""Models the tasks train: image/vector encoders with a projection head, the two-tower recommender and the
text towers of the retrieval task. Imports of optional packages (sentence-transformers) happen on use."""

from negkit.models.encoders import ENCODERS, ContrastiveModel, build_model

__all__ = ["ENCODERS", "ContrastiveModel", "build_model"]
