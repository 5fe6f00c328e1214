"""Conveniences over the Engine: a one-call `generate`, model loading, and the evaluation Sampler."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from thinkfast.inference.engine import Engine
from thinkfast.inference.params import Completion, SamplingParams


def load_for_generation(spec: str, dtype: torch.dtype = torch.bfloat16, device: str | None = None):
    """A saved thinkfast student directory, or any teacher spec (converted to our stack,
    all attention, identical logits) -> (ThinkfastForCausalLM, tokenizer or None)."""
    from transformers import AutoTokenizer

    from thinkfast.models import ThinkfastForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = Path(spec).expanduser()
    config_file = path / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == "thinkfast":
        model = ThinkfastForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError):
            tokenizer = None
    else:
        from thinkfast.convert import convert
        from thinkfast.teachers import load_teacher

        teacher, tokenizer = load_teacher(spec, dtype=torch.float32)
        model = convert(teacher, target="attention")
        del teacher
    model = model.to(device=device, dtype=dtype).cast_ssm_params_fp32().eval()
    return model, tokenizer


def generate(
    model,
    tokenizer,
    prompts,
    params: SamplingParams | None = None,
    n: int = 1,
    **engine_kwargs,
) -> list[list[Completion]]:
    """One call: build an Engine (see its arguments) and sample `n` completions per prompt."""
    if "max_len" not in engine_kwargs:
        params = params or SamplingParams()
        longest = max(len(p) if not isinstance(p, str) else len(tokenizer(p).input_ids) for p in prompts)
        engine_kwargs["max_len"] = longest + params.max_new_tokens
    engine = Engine(model, tokenizer, **engine_kwargs)
    return engine.generate(prompts, params, n=n)


class EngineSampler:
    """The evaluation module's Sampler protocol over an Engine.

    Prompts are strings used as-is (the caller has applied the chat template).
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_spec(cls, spec: str, max_len: int = 4096, **engine_kwargs) -> "EngineSampler":
        model, tokenizer = load_for_generation(spec)
        return cls(Engine(model, tokenizer, max_len=max_len, **engine_kwargs))

    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        return self.engine.generate(prompts, params, n=n)
