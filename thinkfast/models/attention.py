"""Attention mixer: the teacher's own GQA attention with its exact RoPE (kept layers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thinkfast.models.config import ThinkfastConfig
from thinkfast.models.compiled_glue import compiled, rope_glue
from thinkfast.models.layers import Stacked, stack_linears, stacked_bytes
from thinkfast.models.rope import rope_inv_freq
from thinkfast.models.sequence import SequenceInfo
from thinkfast.ops import dispatch


class AttentionMixer(nn.Module):
    def __init__(self, config: ThinkfastConfig):
        super().__init__()
        self.config = config
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)
        self._inv_freq: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        if device not in self._inv_freq:  # computed, not a buffer: nothing to save or re-init
            cfg = self.config
            self._inv_freq[device] = rope_inv_freq(self.head_dim, cfg.rope_theta, cfg.rope_scaling_config, device=device)
        return self._inv_freq[device]

    def allocate_state(self, num_slots: int, max_len: int, dtype: torch.dtype, device,
                       ssm_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        shape = (num_slots, self.n_kv, max_len, self.head_dim)
        return {"k": torch.zeros(shape, dtype=dtype, device=device), "v": torch.zeros(shape, dtype=dtype, device=device)}

    def _project(self, x: torch.Tensor):
        b, l, _ = x.shape
        q = self.q_proj(x).view(b, l, self.n_heads, self.head_dim).transpose(1, 2)  # (b, H, l, hd)
        k = self.k_proj(x).view(b, l, self.n_kv, self.head_dim).transpose(1, 2)  # (b, Hkv, l, hd)
        v = self.v_proj(x).view(b, l, self.n_kv, self.head_dim).transpose(1, 2)
        return q, k, v

    compiled_glue = False  # set by ThinkfastForCausalLM.compile_glue (training's `compile: true`)
    # decode's stacked [q; k; v] weight (and bias): one GEMM instead of three; set by stack_decode_projections
    decode_stacked: Stacked | None = None

    def decode_projection_bytes(self) -> int:
        """Memory the stacked q/k/v copy takes."""
        return stacked_bytes((self.q_proj, self.k_proj, self.v_proj))

    def stack_decode_projections(self, out: Stacked | None = None) -> Stacked:
        """Fill (in place where `out` is given) and use decode's stacked copy of the q, k and v weights.

        At decode batch sizes the k and v GEMMs (2 x Hkv x hd outputs: 128 at Qwen-0.5B) cost a launch each and
        run far below bandwidth; one GEMM over the stacked rows does all three. The Engine keeps its copy and
        refills it at every `generate`, after any training step has changed the weights; the full pass never
        reads it."""
        self.decode_stacked = stack_linears((self.q_proj, self.k_proj, self.v_proj), out)
        return self.decode_stacked

    def _qkv(self, x: torch.Tensor, position_ids: torch.Tensor, compiled_rope: bool = False):
        q, k, v = self._project(x)
        rope = compiled("rope") if compiled_rope else rope_glue
        q, k = rope(q, k, position_ids, self.inv_freq(x.device))
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,  # (b, l, d)
        seq: SequenceInfo,
        state: dict[str, torch.Tensor] | None = None,
        slots: torch.Tensor | None = None,  # (b,) with state: prefill writes these slots
    ) -> torch.Tensor:
        b, l, _ = x.shape
        q, k, v = self._qkv(x, seq.position_ids, compiled_rope=self.compiled_glue and state is None)
        if state is not None:  # prefill: each row's real (right-aligned) tokens go to cache [0, n)
            self._write_prefill(state, k, v, slots, seq.valid_lengths)
        out = dispatch.attention(q, k, v, doc_ids=seq.doc_ids, block_masks=seq.block_masks)  # (b, H, l, hd)
        return self.o_proj(out.transpose(1, 2).reshape(b, l, self.n_heads * self.head_dim))

    @staticmethod
    def _write_prefill(state: dict[str, torch.Tensor], k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor,
                       valid_lengths: torch.Tensor | None) -> None:
        """One scatter per cache, no host sync: a left-padded row of n real tokens is rotated so that its tokens
        land at [0, n) and its padding at [n, l), positions past the row's length that decode never reads and
        overwrites as it goes."""
        b, _, l, _ = k.shape  # (b, Hkv, l, hd)
        pos = torch.arange(l, device=k.device)  # (l,)
        if valid_lengths is not None:
            pos = (pos[None, :] - (l - valid_lengths)[:, None]) % l  # (b, l): source column -> cache position
        else:
            pos = pos[None, :].expand(b, l)
        rows = slots[:, None].expand(b, l)  # (b, l)
        state["k"][rows, :, pos] = k.transpose(1, 2).to(state["k"].dtype)  # (b, l, Hkv, hd)
        state["v"][rows, :, pos] = v.transpose(1, 2).to(state["v"].dtype)

    def step(
        self,
        x: torch.Tensor,  # (b, d): one new token per sequence
        positions: torch.Tensor,  # (b,) its position = tokens already cached
        state: dict[str, torch.Tensor],
        slots: torch.Tensor,  # (b,)
    ) -> torch.Tensor:
        b, hd = x.shape[0], self.head_dim
        if self.decode_stacked is not None:  # one GEMM; q, k and v are column views of its output
            qkv = F.linear(x, *self.decode_stacked)  # (b, (H + 2 Hkv) hd)
            nq, nk = self.n_heads * hd, self.n_kv * hd
            q = qkv[:, :nq].view(b, self.n_heads, hd)  # (b, H, hd), row stride (H + 2 Hkv) hd
            k = qkv[:, nq:nq + nk].view(b, self.n_kv, hd)  # (b, Hkv, hd)
            v = qkv[:, nq + nk:].view(b, self.n_kv, hd)
        else:
            q, k, v = (t[:, :, 0] for t in self._project(x[:, None]))  # (b, H|Hkv, hd)
        # RoPE on q and k, k and v into the caches: one launch (the eager glue was ~18 small kernels)
        q = dispatch.rope_kv_write(q, k, v, positions, self.inv_freq(x.device),
                                   state["k"], state["v"], slots)  # (b, H, hd)
        # the context is positions + 1 tokens (the new one included): the kernel adds the 1
        out = dispatch.decode_attention(q, state["k"], state["v"], slots, positions, length_offset=1)  # (b, H, hd)
        return self.o_proj(out.reshape(b, self.n_heads * hd))
