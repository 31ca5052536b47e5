"""negkit: negatives for contrastive learning — how many, which ones, and how much each should count."""

from negkit import losses
from negkit.losses import count_skipped, fast_checks, set_fast_checks, set_strict, strict

__version__ = "0.1.0"
__all__ = ["__version__", "count_skipped", "fast_checks", "losses", "set_fast_checks", "set_strict", "strict"]
