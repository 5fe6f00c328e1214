"""Tiny random teachers and students shared by the tests."""

from __future__ import annotations

import torch

from thinkfast.models import ThinkfastConfig, ThinkfastForCausalLM

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,  # small so the scaling matters at test lengths
}


def tiny_llama(layers: int = 4, heads: int = 4, kv: int = 2, hidden: int = 64, rope_scaling=LLAMA3_SCALING, tie=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=96, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, rope_theta=500000.0, rope_scaling=rope_scaling,
        max_position_embeddings=512, tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_qwen2(layers: int = 3):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, rope_theta=10000.0,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random init leaves biases at zero: make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


def tiny_student(mixers: list[str], **overrides) -> ThinkfastForCausalLM:
    kwargs = dict(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=len(mixers), num_attention_heads=4,
        num_key_value_heads=2, layer_mixers=mixers, rope_scaling_config=LLAMA3_SCALING, rope_theta=500000.0,
        discrete_mamba2={"chunk_size": 8}, mamba2={"chunk_size": 8},
    )
    kwargs.update(overrides)
    model = ThinkfastForCausalLM(ThinkfastConfig(**kwargs)).eval()
    with torch.no_grad():  # make the SSM parts non-trivial so a wrong state would show
        for module in model.modules():
            for name in ("D", "z_bias"):
                p = getattr(module, name, None)
                if isinstance(p, torch.nn.Parameter):
                    p.normal_(0, 0.5)
            conv = getattr(module, "conv1d", None)
            if conv is not None:
                conv.weight.normal_(0, 0.5)
                conv.bias.normal_(0, 0.1)
    return model
