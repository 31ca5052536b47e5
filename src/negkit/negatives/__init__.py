"""Negatives as a component: pools beyond the batch, samplers, and the quality of what they return."""

from negkit.negatives.frequency import StreamingFrequency
from negkit.negatives.how_many import AdaptiveK, collision_rate, effectiveness, optimal_k, ranking_quality
from negkit.negatives.mcmc import MCMCSampler
from negkit.negatives.pools import EmbeddingCache, Queue
from negkit.negatives.report import NegativeReport, negative_report
from negkit.negatives.samplers import (
    ClassConditionalSampler,
    HardnessSampler,
    MinedSampler,
    NegativeSampler,
    UniformSampler,
)
from negkit.negatives.sampling import sample_unobserved
from negkit.negatives.types import GatheredNegatives, Negatives

__all__ = [
    "AdaptiveK",
    "ClassConditionalSampler",
    "EmbeddingCache",
    "GatheredNegatives",
    "HardnessSampler",
    "MCMCSampler",
    "MinedSampler",
    "NegativeReport",
    "NegativeSampler",
    "Negatives",
    "Queue",
    "StreamingFrequency",
    "UniformSampler",
    "collision_rate",
    "effectiveness",
    "negative_report",
    "optimal_k",
    "ranking_quality",
    "sample_unobserved",
]
