"""Student models: one decoder stack, a mixer per layer (attention, mamba1, mamba2, discrete_mamba2)."""

from transformers import AutoConfig, AutoModelForCausalLM

from thinkfast.models.config import MIXERS, ThinkfastConfig
from thinkfast.models.model import ThinkfastForCausalLM
from thinkfast.models.sequence import SequenceInfo
from thinkfast.models.state import InferenceState

# so that AutoConfig / AutoModelForCausalLM.from_pretrained(dir) find our model type
try:
    AutoConfig.register("thinkfast", ThinkfastConfig)
    AutoModelForCausalLM.register(ThinkfastConfig, ThinkfastForCausalLM)
except ValueError:  # already registered (module re-imported)
    pass

__all__ = ["MIXERS", "InferenceState", "SequenceInfo", "ThinkfastConfig", "ThinkfastForCausalLM"]
