"""load_teacher(spec): an HF hub name or local directory, a .gguf file, or an embedded name."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from thinkfast.config import check_local_model_path
from thinkfast.errors import ThinkfastError
from thinkfast.teachers.embedded import EMBEDDED_TEACHERS, embedded_teacher_dir
from thinkfast.teachers.families import check_family


def _resolve(spec: str) -> tuple[str, dict]:
    """spec -> (path or hub id for from_pretrained, extra kwargs)."""
    if spec in EMBEDDED_TEACHERS:
        return str(embedded_teacher_dir(spec)), {}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ThinkfastError(f"GGUF file {path} does not exist")
        return str(path.parent), {"gguf_file": path.name}
    check_local_model_path(spec)  # not tried as a hub id ("Repo id must be in the form ...")
    if path.exists() and not (path / "config.json").is_file():
        raise ThinkfastError(f"{path} is not a model directory (no config.json in it)")
    return spec, {}  # local directory or hub name


def load_config(spec: str):
    from transformers import AutoConfig

    source, extra = _resolve(spec)
    try:
        config = AutoConfig.from_pretrained(source, **extra)
    except OSError as err:
        raise ThinkfastError(
            f"could not load a model config from {spec!r}: {err}. Give a hub name, a local directory with "
            f"config.json, a .gguf file, or one of the embedded teachers {sorted(EMBEDDED_TEACHERS)}"
        ) from err
    return config


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    source, extra = _resolve(spec)
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_teacher(spec: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", tokenizer: bool = True):
    """Load a supported teacher in eval mode.  The family is checked before any weights load.

    Returns (model, tokenizer) — tokenizer None when `tokenizer=False`.
    """
    from transformers import AutoModelForCausalLM

    check_family(load_config(spec))
    source, extra = _resolve(spec)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    model = model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, (load_tokenizer(spec) if tokenizer else None)


def is_embedded(spec: str) -> bool:
    return spec in EMBEDDED_TEACHERS and not os.path.exists(spec)
