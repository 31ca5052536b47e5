"""Negatives as a component: pools beyond the batch, samplers, and the quality of what they return."""

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
from negkit.negatives.types import GatheredNegatives, Negatives

__all__ = [
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
    "UniformSampler",
    "negative_report",
]
