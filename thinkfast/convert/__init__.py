"""Teacher -> student weight transfer (docs/design.md §2); StudentSpec says which student.

The weight-transfer functions load lazily, so configs that embed a StudentSpec import without torch.
"""

from thinkfast.convert.layout import plan_layer_mixers, spread_attention_layers
from thinkfast.convert.spec import StudentSpec

__all__ = ["StudentSpec", "convert", "plan_layer_mixers", "spread_attention_layers", "student_config_from_teacher",
           "transfer_weights"]


def __getattr__(name: str):
    if name in ("convert", "student_config_from_teacher", "transfer_weights"):
        import importlib

        module = importlib.import_module("thinkfast.convert.transfer")

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
