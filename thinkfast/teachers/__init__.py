"""Teachers: load any supported HF causal LM (hub name, local dir, GGUF file, embedded default)."""

from thinkfast.teachers.families import SUPPORTED_FAMILIES, student_config_kwargs
from thinkfast.teachers.loading import load_teacher, load_tokenizer

__all__ = ["SUPPORTED_FAMILIES", "load_teacher", "load_tokenizer", "student_config_kwargs"]
