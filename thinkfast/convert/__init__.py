"""Teacher -> student weight transfer (docs/design.md §2)."""

from thinkfast.convert.layout import plan_layer_mixers, spread_attention_layers
from thinkfast.convert.transfer import convert, student_config_from_teacher

__all__ = ["convert", "plan_layer_mixers", "spread_attention_layers", "student_config_from_teacher"]
