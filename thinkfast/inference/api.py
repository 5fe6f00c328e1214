"""Conveniences over the Engine: a one-call `generate`, model loading, and the evaluation Sampler."""

from __future__ import annotations

from collections import Counter

import torch

from thinkfast.inference.engine import Engine
from thinkfast.inference.params import Completion, SamplingParams, engine_max_len


def load_for_generation(spec: str, dtype: torch.dtype = torch.bfloat16, device: str | None = None):
    """`thinkfast.loading.load_model` with generation's default dtype (bf16): a student directory, or any
    teacher spec (converted to our stack, all attention, identical logits) -> (model, tokenizer or None)."""
    from thinkfast.loading import load_model

    return load_model(spec, dtype=dtype, device=device)


def generate(
    model,
    tokenizer,
    prompts,
    params: SamplingParams | None = None,
    n: int = 1,
    **engine_kwargs,
) -> list[list[Completion]]:
    """One call: build an Engine (see its arguments) and sample `n` completions per prompt."""
    params = params or SamplingParams()
    if "max_len" not in engine_kwargs:
        lengths = (len(p) if not isinstance(p, str) else len(tokenizer(p).input_ids) for p in prompts)
        engine_kwargs["max_len"] = engine_max_len(params.max_new_tokens, lengths)
    needed = len(prompts) * n  # no more decode slots than the request can fill
    engine_kwargs["max_batch"] = min(engine_kwargs.get("max_batch") or needed, needed)
    engine = Engine(model, tokenizer, **engine_kwargs)
    return engine.generate(prompts, params, n=n)


class EngineSampler:
    """The evaluation module's Sampler protocol over an Engine.

    Prompts are strings used as-is (the caller has applied the chat template).
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.totals: Counter = Counter()  # Engine.last_stats summed over every sample() call

    @classmethod
    def from_spec(cls, spec: str, max_len: int = 4096, **engine_kwargs) -> "EngineSampler":
        model, tokenizer = load_for_generation(spec)
        return cls(Engine(model, tokenizer, max_len=max_len, **engine_kwargs))

    def sample(self, prompts: list[str], n: int, params: SamplingParams, keys: list[int] | None = None,
               sample_ids: list[int] | None = None) -> list[list[Completion]]:
        """`keys`: a stable integer identity per prompt (e.g. a hash of the problem id); `sample_ids`: the
        identity of each of the n samples (e.g. which of a problem's samples these are).  Sample j of
        prompt i is then seeded by (params.seed, keys[i], sample_ids[j]), whatever else is in the batch."""
        out = self.engine.generate(prompts, params, n=n, keys=keys, sample_ids=sample_ids)
        summed = ("prefill_s", "decode_s", "decode_steps", "decode_tokens", "windows", "graph_capture_s")
        self.totals.update({k: self.engine.last_stats[k] for k in summed if k in self.engine.last_stats})
        return out

    def check(self, prompts: list[str], params: SamplingParams, labels: list[str] | None = None) -> None:
        """Refuse, before any sampling, prompts the engine would cut short or run past the model's positions."""
        self.engine.check_prompts(self.engine.encode(prompts), params, labels, strict=True)
