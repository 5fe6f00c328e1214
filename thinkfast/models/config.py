"""Student configuration: the teacher's dimensions plus, per layer, which token mixer it has."""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

from thinkfast.errors import ThinkfastError

MIXERS = ("attention", "mamba1", "mamba2", "discrete_mamba2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def default_mamba1(hidden_size: int) -> dict[str, Any]:
    return {
        "d_state": 16,
        "d_conv": 4,
        "dt_rank": math.ceil(hidden_size / 16),
        "learnable_gqa_expansion": False,  # M1's learnable d_xb -> d_inner maps, initialised to the repeat
    }


def default_discrete_mamba2(num_heads: int, head_dim: int) -> dict[str, Any]:
    return {
        "n_v_heads": num_heads,  # value heads (x), each of dim head_dim
        "n_qk_heads": num_heads,  # B / C heads; repeated onto value heads when fewer
        "head_dim": head_dim,
        "d_state": head_dim,
        "d_conv": 4,
        "chunk_size": 64,
        # bias on in_proj (all rows; conversion fills x/B/C from a biased teacher's v/k/q, z and a rows stay 0)
        "in_proj_bias": False,
    }


def default_mamba2(num_heads: int, head_dim: int) -> dict[str, Any]:
    return {"d_state": head_dim, "d_conv": 4, "chunk_size": 64}


class ThinkfastConfig(PretrainedConfig):
    """A Llama-family decoder whose layers may swap attention for a Mamba mixer.

    `layer_mixers[i]` is one of MIXERS.  All other fields mirror the teacher's
    (Llama / Qwen2 / Mistral) config so that kept attention layers reproduce it.
    """

    model_type = "thinkfast"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 256,
        intermediate_size: int = 512,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        rope_scaling_config: dict | None = None,
        max_position_embeddings: int = 4096,
        attention_bias: bool = False,  # q/k/v biases (Qwen2); o_proj never has one
        mlp_bias: bool = False,
        tie_word_embeddings: bool = False,
        layer_mixers: list[str] | None = None,
        mamba1: dict | None = None,
        mamba2: dict | None = None,
        discrete_mamba2: dict | None = None,
        teacher_model_type: str = "llama",
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_scaling_config = rope_scaling_config
        self.max_position_embeddings = max_position_embeddings
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.layer_mixers = list(layer_mixers) if layer_mixers is not None else ["attention"] * num_hidden_layers
        self.mamba1 = {**default_mamba1(hidden_size), **(mamba1 or {})}
        self.mamba2 = {**default_mamba2(self.num_attention_heads, self.head_dim), **(mamba2 or {})}
        self.discrete_mamba2 = {
            **default_discrete_mamba2(self.num_attention_heads, self.head_dim),
            **(discrete_mamba2 or {}),
        }
        self.teacher_model_type = teacher_model_type
        self.initializer_range = initializer_range
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        if len(self.layer_mixers) != self.num_hidden_layers:
            raise ThinkfastError(
                f"layer_mixers has {len(self.layer_mixers)} entries but num_hidden_layers is {self.num_hidden_layers}"
            )
        bad = sorted({m for m in self.layer_mixers if m not in MIXERS})
        if bad:
            raise ThinkfastError(f"unknown mixer(s) {bad}; supported mixers are {list(MIXERS)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ThinkfastError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.rope_scaling_config is not None:
            rope_type = self.rope_scaling_config.get("rope_type", self.rope_scaling_config.get("type", "default"))
            if rope_type not in SUPPORTED_ROPE_TYPES:
                raise ThinkfastError(
                    f"rope scaling type {rope_type!r} is not supported; supported: {list(SUPPORTED_ROPE_TYPES)}"
                )
        if "mamba1" in self.layer_mixers:
            n = self.mamba1["d_state"]
            if self.head_dim % n:
                raise ThinkfastError(
                    f"mamba1 groups B/C in blocks of d_state={n} channels, which must divide head_dim={self.head_dim}"
                )
        if "discrete_mamba2" in self.layer_mixers:
            cfg = self.discrete_mamba2
            if cfg["n_v_heads"] % cfg["n_qk_heads"]:
                raise ThinkfastError(
                    f"discrete_mamba2 n_v_heads={cfg['n_v_heads']} must be a multiple of n_qk_heads={cfg['n_qk_heads']}"
                )

    # ------------------------------------------------------------------ views
    @property
    def d_inner(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def d_xb(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def count(self, mixer: str) -> int:
        return sum(m == mixer for m in self.layer_mixers)
