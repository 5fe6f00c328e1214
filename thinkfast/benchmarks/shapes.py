"""Benchmark models at real shapes with random bf16 weights, built straight from ThinkfastConfig.

Model names say the shape: `llama-1b`, `hybrid-1b`, `pure-1b` (Llama-3.2-1B), `llama-3b`, ...,
`qwen-0.5b`, `hybrid-qwen-0.5b`, `qwen-1.5b`, `hybrid-qwen-1.5b` (Qwen2.5, q/k/v biases, tied
embeddings).  Hybrids keep a few attention layers spread over the depth (M1-3B's own list for 3B; a
quarter of the layers for the Qwen shapes, 6/24 and 7/28).
"""

from __future__ import annotations

import torch

from thinkfast.convert.layout import spread_attention_layers
from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

COMMON = dict(vocab_size=128256, tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=500000.0,
              max_position_embeddings=131072)
# per shape: the fields that differ from COMMON; "family" picks the HF class of the peer, "label" names it
TEACHERS = {
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
               intermediate_size=8192, family="llama", label="Llama-3.2-1B"),
    "3b": dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
               intermediate_size=8192, family="llama", label="Llama-3.2-3B"),
    "qwen-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                      intermediate_size=4864, vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0,
                      max_position_embeddings=32768, attention_bias=True, family="qwen2", label="Qwen2.5-0.5B"),
    "qwen-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                      head_dim=128, intermediate_size=8960, vocab_size=151936, rms_norm_eps=1e-6,
                      rope_theta=1000000.0, max_position_embeddings=32768, attention_bias=True, family="qwen2",
                      label="Qwen2.5-1.5B"),
}
HYBRID_ATTENTION = {
    "1b": spread_attention_layers(16, 4),
    "3b": [3, 8, 13, 18, 23, 27],  # M1-3B's layers
    "qwen-0.5b": spread_attention_layers(24, 6),  # [3, 7, 11, 15, 19, 23]
    "qwen-1.5b": spread_attention_layers(28, 7),  # [3, 7, 11, 15, 19, 23, 27]
}
# Llamba-style pure students: 32 heads, d_state 64 (Llamba-3B used 32 x 96)
PURE = {"1b": {"n_v_heads": 32, "n_qk_heads": 32, "head_dim": 64, "d_state": 64},
        "3b": {"n_v_heads": 32, "n_qk_heads": 32, "head_dim": 96, "d_state": 64}}

MODELS = {
    "llama-1b": ("1b", "teacher"), "hybrid-1b": ("1b", "hybrid"), "pure-1b": ("1b", "pure"),
    "llama-3b": ("3b", "teacher"), "hybrid-3b": ("3b", "hybrid"), "pure-3b": ("3b", "pure"),
    "qwen-0.5b": ("qwen-0.5b", "teacher"), "hybrid-qwen-0.5b": ("qwen-0.5b", "hybrid"),
    "qwen-1.5b": ("qwen-1.5b", "teacher"), "hybrid-qwen-1.5b": ("qwen-1.5b", "hybrid"),
}
DESCRIPTIONS = {
    "teacher": "{} shapes, all attention",
    "hybrid": "{} hybrid, attention layers {} , Mamba-1 d_state 16 elsewhere",
    "pure": "Llamba-style pure discrete Mamba-2 student of {}",
}


def teacher_of(name: str) -> str | None:
    """The all-attention model of the same shape (`hybrid-qwen-0.5b` -> `qwen-0.5b`)."""
    size, _ = MODELS[name]
    return next((m for m, (s, k) in MODELS.items() if s == size and k == "teacher"), None)


def model_config(name: str) -> ThinkfastConfig:
    size, kind = MODELS[name]
    base = {**COMMON, **{k: v for k, v in TEACHERS[size].items() if k not in ("family", "label")}}
    layers = base["num_hidden_layers"]
    if kind == "teacher":
        mixers = ["attention"] * layers
    elif kind == "hybrid":
        keep = set(HYBRID_ATTENTION[size])
        mixers = ["attention" if i in keep else "mamba1" for i in range(layers)]
    else:
        mixers = ["discrete_mamba2"] * layers
    extra = {"discrete_mamba2": PURE[size]} if kind == "pure" else {}
    return ThinkfastConfig(**base, layer_mixers=mixers, **extra)


def describe(name: str) -> str:
    size, kind = MODELS[name]
    label = TEACHERS[size]["label"]
    if kind == "hybrid":
        return DESCRIPTIONS[kind].format(label, HYBRID_ATTENTION[size])
    return DESCRIPTIONS[kind].format(label)


def build_model(name: str, device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> ThinkfastForCausalLM:
    config = model_config(name)
    with torch.device(device):
        model = ThinkfastForCausalLM(config)
    return model.to(dtype).cast_ssm_params_fp32().eval()
