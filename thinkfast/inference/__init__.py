"""Batched generation: sampling parameters, results, and the engine."""

from thinkfast.inference.params import Completion, SamplingParams

__all__ = ["Completion", "SamplingParams"]
