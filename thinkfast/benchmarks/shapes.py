"""Benchmark models at real shapes with random bf16 weights, built straight from ThinkfastConfig."""

from __future__ import annotations

import torch

from thinkfast.convert.layout import spread_attention_layers
from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

TEACHERS = {
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
               intermediate_size=8192),
    "3b": dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
               intermediate_size=8192),
}
COMMON = dict(vocab_size=128256, tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=500000.0,
              max_position_embeddings=131072)
HYBRID_ATTENTION = {"1b": spread_attention_layers(16, 4), "3b": [3, 8, 13, 18, 23, 27]}  # M1-3B's layers
# Llamba-style pure students: 32 heads, d_state 64 (Llamba-3B used 32 x 96)
PURE = {"1b": {"n_v_heads": 32, "n_qk_heads": 32, "head_dim": 64, "d_state": 64},
        "3b": {"n_v_heads": 32, "n_qk_heads": 32, "head_dim": 96, "d_state": 64}}

MODELS = {
    "llama-1b": ("1b", "teacher"), "hybrid-1b": ("1b", "hybrid"), "pure-1b": ("1b", "pure"),
    "llama-3b": ("3b", "teacher"), "hybrid-3b": ("3b", "hybrid"), "pure-3b": ("3b", "pure"),
}
DESCRIPTIONS = {
    "teacher": "Llama-3.2-{} shapes, all attention",
    "hybrid": "Llama-3.2-{} hybrid, attention layers {} , Mamba-1 d_state 16 elsewhere",
    "pure": "Llamba-style pure discrete Mamba-2 student of Llama-3.2-{}",
}


def model_config(name: str) -> ThinkfastConfig:
    size, kind = MODELS[name]
    base = {**COMMON, **TEACHERS[size]}
    layers = base["num_hidden_layers"]
    if kind == "teacher":
        mixers = ["attention"] * layers
    elif kind == "hybrid":
        keep = set(HYBRID_ATTENTION[size])
        mixers = ["attention" if i in keep else "mamba1" for i in range(layers)]
    else:
        mixers = ["discrete_mamba2"] * layers
    return ThinkfastConfig(**base, layer_mixers=mixers, discrete_mamba2=PURE[size])


def describe(name: str) -> str:
    size, kind = MODELS[name]
    label = size.upper()
    if kind == "hybrid":
        return DESCRIPTIONS[kind].format(label, HYBRID_ATTENTION[size])
    return DESCRIPTIONS[kind].format(label)


def build_model(name: str, device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> ThinkfastForCausalLM:
    config = model_config(name)
    with torch.device(device):
        model = ThinkfastForCausalLM(config)
    return model.to(dtype).cast_ssm_params_fp32().eval()
