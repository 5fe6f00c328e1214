"""`load_model(spec, dtype, device)`: the one way to turn a model spec into a runnable ThinkfastForCausalLM.

    a student directory (config.json with model_type "thinkfast")
        -> ThinkfastForCausalLM.from_pretrained (tokenizer from the same folder, if one is saved there)
    any teacher spec `thinkfast.teachers.load_teacher` accepts (hub id, local dir, .gguf, embedded name)
        -> the teacher converted to an all-attention stack (identical logits), with its tokenizer

Either way the weights load in fp32, then move to `device` / `dtype`, with the SSM parameters kept
in fp32 (`cast_ssm_params_fp32`), in eval mode.  Generation, evaluation, GRPO and training (a
`student.path`) all load through here.

This module sits above `thinkfast.models`, `thinkfast.teachers` and `thinkfast.convert` (it imports
them; none of them imports it), so the import graph stays acyclic.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from thinkfast.device import resolve_device

STUDENT_MODEL_TYPE = "thinkfast"


def is_student_dir(spec: str) -> bool:
    """True when `spec` is a local folder holding a saved thinkfast student (not a teacher to convert)."""
    config_file = Path(spec).expanduser() / "config.json"
    return config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == STUDENT_MODEL_TYPE


def load_model(spec: str, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None, *,
               tokenizer: bool = True):
    """A student directory or any teacher spec -> (ThinkfastForCausalLM, tokenizer or None).

    `device`: anything `thinkfast.device.resolve_device` takes (None / "auto": CUDA when present).  `tokenizer=False` skips loading one
    (returns None in its place)."""
    from thinkfast.models import ThinkfastForCausalLM

    device = resolve_device(device)
    if is_student_dir(spec):
        path = str(Path(spec).expanduser())
        model = ThinkfastForCausalLM.from_pretrained(path, dtype=torch.float32)
        tok = _student_tokenizer(path) if tokenizer else None
    else:
        from thinkfast.convert import convert
        from thinkfast.teachers import load_teacher

        teacher, tok = load_teacher(spec, dtype=torch.float32, tokenizer=tokenizer)
        model = convert(teacher, target="attention")
        del teacher
    model = model.to(device=device, dtype=dtype).cast_ssm_params_fp32().eval()
    return model, tok


def _student_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None
