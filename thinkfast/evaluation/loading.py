"""`load_model_for_eval(spec)`: the single place that turns a model spec into something that samples.

Today: a hook ("module:function") or a local HF directory via `transformers`. When the thinkfast
student/teacher loaders land (thinkfast.teachers / thinkfast.models), rewire this function only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from thinkfast.errors import ThinkfastError
from thinkfast.evaluation.config import ModelSpec
from thinkfast.evaluation.sampler import HFGenerateSampler, Sampler


@dataclass
class LoadedModel:
    name: str
    sampler: Sampler
    tokenizer: Any = None  # renders prompts through its chat template; None only with use_chat_template=False


def _import_hook(hook: str):
    module_name, _, attr = hook.partition(":")
    if not attr:
        raise ThinkfastError(f"model hook {hook!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ThinkfastError(f"cannot import model hook {hook!r}: {err}") from err


def load_model_for_eval(spec: ModelSpec) -> LoadedModel:
    if spec.hook:
        made = _import_hook(spec.hook)(spec)
        if isinstance(made, LoadedModel):
            return made
        if isinstance(made, Sampler):
            return LoadedModel(spec.name, made, getattr(made, "tokenizer", None))
        raise ThinkfastError(f"model hook {spec.hook!r} returned {type(made).__name__}, not a LoadedModel or Sampler")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, spec.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ThinkfastError(f"model {spec.name!r}: unknown dtype {spec.dtype!r} (use float32, bfloat16, float16)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.path)
        model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=dtype)
    except OSError as err:
        raise ThinkfastError(f"cannot load model {spec.name!r} from {spec.path!r}: {err}") from err
    return LoadedModel(spec.name, HFGenerateSampler(model, tokenizer, spec.batch_size, spec.device), tokenizer)
