"""Which teacher architectures we convert, and how their configs map onto ThinkfastConfig."""

from __future__ import annotations

from typing import Any

from thinkfast.errors import ThinkfastError
from thinkfast.models.config import SUPPORTED_ROPE_TYPES

SUPPORTED_FAMILIES = ("llama", "qwen2", "mistral")


def _rope(config) -> tuple[float, dict | None]:
    """(theta, scaling dict or None), from either transformers 5 `rope_parameters` or 4.x fields."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        theta = float(params["rope_theta"])
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = float(getattr(config, "rope_theta", 10000.0))
        scaling = dict(getattr(config, "rope_scaling", None) or {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, None
    scaling["rope_type"] = rope_type
    scaling.pop("type", None)
    return theta, scaling


def check_family(config) -> str:
    family = getattr(config, "model_type", None)
    if family not in SUPPORTED_FAMILIES:
        raise ThinkfastError(
            f"teacher architecture {family!r} is not supported; supported families are {list(SUPPORTED_FAMILIES)} "
            "(Llama incl. Llama-3 rope scaling, Qwen2 with q/k/v biases, Mistral-style GQA)"
        )
    _, scaling = _rope(config)  # before any weights load: a RoPE we do not compute would give wrong logits
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ThinkfastError(
            f"teacher uses RoPE type {rope_type!r}, which the attention code does not implement; supported RoPE "
            f"types are {list(SUPPORTED_ROPE_TYPES)}"
        )
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise ThinkfastError(f"teacher uses hidden_act={act!r}; only SiLU-gated MLPs are supported")
    if family == "llama" and getattr(config, "attention_bias", False):
        raise ThinkfastError("Llama teachers with attention_bias=True (a biased o_proj) are not supported")
    sliding = getattr(config, "sliding_window", None)
    uses_sliding = getattr(config, "use_sliding_window", family == "mistral")
    if sliding and uses_sliding and sliding < getattr(config, "max_position_embeddings", 0):
        raise ThinkfastError(
            f"teacher uses sliding-window attention (window {sliding}); only full attention is supported"
        )
    return family


def student_config_kwargs(config) -> dict[str, Any]:
    """Teacher HF config -> keyword arguments of ThinkfastConfig (all layers attention)."""
    family = check_family(config)
    theta, scaling = _rope(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": head_dim,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": theta,
        "rope_scaling_config": scaling,
        "max_position_embeddings": config.max_position_embeddings,
        "attention_bias": family == "qwen2" or bool(getattr(config, "attention_bias", False)),
        "mlp_bias": bool(getattr(config, "mlp_bias", False)),
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "teacher_model_type": family,
        "bos_token_id": getattr(config, "bos_token_id", None),
        "eos_token_id": getattr(config, "eos_token_id", None),
        "pad_token_id": getattr(config, "pad_token_id", None),
    }
