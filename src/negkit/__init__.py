"""negkit: negatives for contrastive learning — how many, which ones, and how much each should count."""

from negkit import losses

__version__ = "0.1.0"
__all__ = ["__version__", "losses"]
