"""Teacher -> student weight transfer (SPEC 1.2-1.4)."""

from thinkfast.convert.layout import plan_layer_mixers, spread_attention_layers
from thinkfast.convert.transfer import convert, student_config_from_teacher

__all__ = ["convert", "plan_layer_mixers", "spread_attention_layers", "student_config_from_teacher"]
