"""Batched generation: sampling parameters, results, the engine and its conveniences."""

from thinkfast.inference.params import Completion, SamplingParams

__all__ = ["Completion", "Engine", "EngineSampler", "SamplingParams", "generate", "load_for_generation"]


def __getattr__(name):  # the engine pulls in torch/transformers: import it on first use only
    if name == "Engine":
        from thinkfast.inference.engine import Engine

        return Engine
    if name in ("EngineSampler", "generate", "load_for_generation"):
        from thinkfast.inference import api

        return getattr(api, name)
    raise AttributeError(name)
