"""`load_model_for_eval(spec)`: the single place that turns a model spec into something that samples.

A hook ("module:function"), or a model path sampled by our engine (default) or by plain
`transformers` generate (`backend: hf`).  Paths: a thinkfast student directory, or any teacher
spec `thinkfast.teachers.load_teacher` accepts (hub id, local dir, .gguf, "smollm2-135m"); the engine
backend loads them through `thinkfast.loading.load_model`.
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
    from thinkfast.device import resolve_dtype

    try:
        dtype = resolve_dtype(spec.dtype, spec.device)
    except ThinkfastError as err:
        raise ThinkfastError(f"model {spec.name!r}: {err}") from None
    if spec.backend == "engine":
        from thinkfast.inference.api import EngineSampler, load_for_generation
        from thinkfast.inference.engine import Engine

        model, tokenizer = load_for_generation(spec.path, dtype=dtype, device=spec.device)
        engine = Engine(model, tokenizer, max_batch=spec.batch_size, max_len=spec.max_len, progress=False,
                        ssm_state_dtype=spec.ssm_state_dtype)
        return LoadedModel(spec.name, EngineSampler(engine), tokenizer)
    from thinkfast.loading import is_student_dir
    from thinkfast.teachers.loading import load_teacher

    try:  # a thinkfast student dir loads through AutoModel too (the model type is registered)
        import thinkfast.models  # noqa: F401

        model, tokenizer = _load_hf_dir(spec.path, dtype) if is_student_dir(spec.path) else load_teacher(spec.path, dtype=dtype)
    except OSError as err:
        raise ThinkfastError(f"cannot load model {spec.name!r} from {spec.path!r}: {err}") from err
    return LoadedModel(spec.name, HFGenerateSampler(model, tokenizer, spec.batch_size, spec.device), tokenizer)


def _load_hf_dir(path: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval(), AutoTokenizer.from_pretrained(path)
