"""Training: configs, encoders, the experiment runner, and cached (GradCache-style) steps."""

from negkit.train.cached import cached_step

__all__ = ["cached_step"]
