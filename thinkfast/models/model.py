"""The one decoder stack every student (and the all-attention copy of a teacher) uses.

    h = h + mixer(input_layernorm(h));  h = h + mlp(post_attention_layernorm(h))

Three ways to run it:
  * `forward(input_ids, attention_mask=None, position_ids=None, labels=None)`: HF-style
    full pass (training, packed documents via position resets, `transformers.generate`);
  * `prefill(input_ids, state, slots, attention_mask)`: full pass over (left-padded)
    prompts that also fills each prompt's decode state into its slot;
  * `step(input_ids, state, slots)`: one token per sequence from the stored state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from thinkfast.models.attention import AttentionMixer
from thinkfast.models.compiled_glue import compiled
from thinkfast.models.config import ThinkfastConfig
from thinkfast.models.layers import GatedMLP, RMSNorm
from thinkfast.models.mamba1 import Mamba1Mixer
from thinkfast.models.mamba2 import DiscreteMamba2Mixer, Mamba2Mixer
from thinkfast.models.sequence import SequenceInfo
from thinkfast.models.state import InferenceState
from thinkfast.ops import dispatch

MIXER_CLASSES = {
    "attention": AttentionMixer,
    "mamba1": Mamba1Mixer,
    "mamba2": Mamba2Mixer,
    "discrete_mamba2": DiscreteMamba2Mixer,
}


class DecoderLayer(nn.Module):
    def __init__(self, config: ThinkfastConfig, index: int):
        super().__init__()
        self.mixer_type = config.layer_mixers[index]
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mixer = MIXER_CLASSES[self.mixer_type](config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)

    compiled_glue = False  # set by ThinkfastForCausalLM.compile_glue (training's `compile: true`)

    def forward(self, h: torch.Tensor, seq: SequenceInfo, state=None, slots=None) -> torch.Tensor:
        if self.compiled_glue and state is None:
            return self._forward_compiled_glue(h, seq)
        h = h + self.mixer(self.input_layernorm(h), seq, state, slots)
        return h + self.mlp(self.post_attention_layernorm(h))

    def _forward_compiled_glue(self, h: torch.Tensor, seq: SequenceInfo) -> torch.Tensor:
        """The same arithmetic with the glue in two torch.compile'd regions (the mixer stays eager: its Triton
        kernels are already fused): the first norm, then residual add + second norm + MLP + residual add."""
        n1, n2, mlp = self.input_layernorm, self.post_attention_layernorm, self.mlp
        x = compiled("norm")(h, n1.weight, n1.eps)
        m = self.mixer(x, seq)
        return compiled("residual_mlp")(h, m, n2.weight, n2.eps, mlp.gate_proj.weight, mlp.gate_proj.bias,
                                          mlp.up_proj.weight, mlp.up_proj.bias, mlp.down_proj.weight, mlp.down_proj.bias)

    def step(self, h: torch.Tensor, delta: torch.Tensor | None, positions: torch.Tensor, state,
             slots) -> tuple[torch.Tensor, torch.Tensor]:
        """Same arithmetic as forward, for decode rows (b, d). The residual stream arrives as (h, delta) with the
        previous layer's MLP output not yet added, and leaves the same way: each residual add is done by the norm
        kernel after it (decode_fused.py: one launch for add + norm instead of ~7 eager kernels)."""
        norm1, norm2 = self.input_layernorm, self.post_attention_layernorm
        h, x = dispatch.add_rms_norm(h, delta, norm1.weight, norm1.eps)
        h, x = dispatch.add_rms_norm(h, self.mixer.step(x, positions, state, slots), norm2.weight, norm2.eps)
        return h, self.mlp.step(x)


class DecoderStack(nn.Module):
    def __init__(self, config: ThinkfastConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class ThinkfastForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ThinkfastConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderLayer"]
    _keep_in_fp32_modules = []  # fp32 SSM params are kept by `cast_ssm_params_fp32`

    def __init__(self, config: ThinkfastConfig):
        super().__init__(config)
        self.model = DecoderStack(config)
        # a tied head reads the embedding matrix directly: no second tensor to keep in sync
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.activation_checkpointing = False
        self.post_init()

    # transformers calls this for weights missing from a checkpoint; ours are all saved, and
    # construction already initialised every parameter as docs/design.md §2 says.
    def _init_weights(self, module):
        return

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.head_weight())

    # --------------------------------------------------------------- full pass
    def hidden_states(
        self,
        input_ids: torch.Tensor,  # (b, l)
        seq: SequenceInfo,
        state: InferenceState | None = None,
        slots: torch.Tensor | None = None,
        output_layer_inputs: bool = False,
    ):
        h = self.model.embed_tokens(input_ids)
        layer_inputs = []
        for i, layer in enumerate(self.model.layers):
            if output_layer_inputs:
                layer_inputs.append(h)
            layer_state = state.layers[i] if state is not None else None
            if self.activation_checkpointing and self.training and state is None:
                h = checkpoint(layer, h, seq, use_reentrant=False)
            else:
                h = layer(h, seq, layer_state, slots)
        h = self.model.norm(h)
        return (h, layer_inputs) if output_layer_inputs else h

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **unused,
    ) -> CausalLMOutput:
        b, l = input_ids.shape
        seq = SequenceInfo.build(b, l, input_ids.device, position_ids=position_ids, attention_mask=attention_mask)
        logits = self.logits(self.hidden_states(input_ids, seq))
        loss = None
        if labels is not None:  # logits at t predict token t+1
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # no KV cache through transformers' generate: every step re-reads the whole sequence
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # --------------------------------------------------------------- decoding
    def allocate_state(
        self, num_slots: int, max_len: int, dtype: torch.dtype | None = None, device=None,
        ssm_dtype: torch.dtype = torch.float32,
    ) -> InferenceState:
        """KV and conv state in `dtype` (default: the weights'), the Mamba layers' recurrent state in `ssm_dtype`."""
        dtype = dtype or self.model.embed_tokens.weight.dtype
        device = device or self.model.embed_tokens.weight.device
        layers = [layer.mixer.allocate_state(num_slots, max_len, dtype, device, ssm_dtype) for layer in self.model.layers]
        return InferenceState(layers=layers, lengths=torch.zeros(num_slots, dtype=torch.long, device=device), max_len=max_len)

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor,  # (b, l) prompts, left-padded when ragged
        state: InferenceState,
        slots: torch.Tensor,  # (b,) slot of each prompt
        attention_mask: torch.Tensor | None = None,  # (b, l) 0 on left padding
    ) -> torch.Tensor:
        """Fill each prompt's decode state into its slot; return next-token logits (b, vocab)."""
        b, l = input_ids.shape
        seq = SequenceInfo.build(b, l, input_ids.device, attention_mask=attention_mask)
        lengths = seq.valid_lengths if seq.valid_lengths is not None else torch.full((b,), l, device=input_ids.device)
        if int(lengths.max()) > state.max_len:
            raise ValueError(f"prompt of {int(lengths.max())} tokens exceeds the state's max_len {state.max_len}")
        hidden = self.hidden_states(input_ids, seq, state, slots)
        state.lengths[slots] = lengths
        return self.logits(hidden[:, -1])

    @torch.no_grad()
    def step(
        self,
        input_ids: torch.Tensor,  # (b,) one token per sequence
        state: InferenceState,
        slots: torch.Tensor,  # (b,)
    ) -> torch.Tensor:
        """Append one token to each slot's context; return next-token logits (b, vocab)."""
        positions = state.lengths[slots]  # (b,)
        h, delta = self.model.embed_tokens(input_ids), None  # (b, d); delta: the last MLP output, not yet added
        for layer, layer_state in zip(self.model.layers, state.layers):
            h, delta = layer.step(h, delta, positions, layer_state, slots)
        state.lengths[slots] = positions + 1
        norm = self.model.norm
        return self.logits(dispatch.add_rms_norm(h, delta, norm.weight, norm.eps)[1])

    # --------------------------------------------------------------- helpers
    def compile_glue(self, enabled: bool = True) -> "ThinkfastForCausalLM":
        """torch.compile each decoder block's norms, residual adds and MLP, and the attention mixers' RoPE, in
        the full pass (training; `thinkfast.models.compiled_glue`); the mixers' kernels, prefill and decode steps
        are unchanged."""
        for layer in self.model.layers:
            layer.compiled_glue = enabled
            if isinstance(layer.mixer, AttentionMixer):
                layer.mixer.compiled_glue = enabled  # its RoPE (cos / sin and the rotation of q and k)
        return self

    def _decode_stackers(self) -> list[nn.Module]:
        """Modules whose decode step can run one GEMM over stacked weights: attention (q/k/v) and MLPs (gate/up)."""
        mixers = [layer.mixer for layer in self.model.layers if isinstance(layer.mixer, AttentionMixer)]
        return mixers + [layer.mlp for layer in self.model.layers]

    def decode_projection_bytes(self) -> int:
        """Memory of the stacked copies `stack_decode_projections` makes."""
        return sum(m.decode_projection_bytes() for m in self._decode_stackers())

    def stack_decode_projections(self, buffers: list | None = None) -> list:
        """Fill (in place where `buffers`, an earlier result, are given) and use the decode step's stacked
        copies: each attention layer's q/k/v and each MLP's gate/up (`thinkfast.models.layers.stack_linears`)."""
        stackers = self._decode_stackers()
        return [m.stack_decode_projections(b) for m, b in zip(stackers, buffers or [None] * len(stackers))]

    def use_decode_projections(self, buffers: list | None) -> None:
        """Point the decode step at these stacked copies, or at the separate weights (None)."""
        for i, m in enumerate(self._decode_stackers()):
            m.decode_stacked = buffers[i] if buffers is not None else None

    def cast_ssm_params_fp32(self) -> "ThinkfastForCausalLM":
        """After `.to(bfloat16)`: put A_log, D, dt/a/z biases and conv state params back to fp32."""
        for module in self.modules():
            for name in ("A_log", "D", "dt_bias", "a_bias"):
                param = getattr(module, name, None)
                if isinstance(param, nn.Parameter):
                    param.data = param.data.float()
        return self

    def summary(self) -> dict:
        cfg = self.config
        return {
            "parameters": sum(p.numel() for p in self.parameters()),
            "layers": {m: cfg.count(m) for m in dict.fromkeys(cfg.layer_mixers)},
            "attention_layers": [i for i, m in enumerate(cfg.layer_mixers) if m == "attention"],
        }
