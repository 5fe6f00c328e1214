"""The decoder stack's elementwise glue as functions of tensors, and their torch.compile'd versions.

Training's `compile: true` (`ThinkfastForCausalLM.compile_glue`) runs these compiled in the full pass: each
is one or two fused kernels instead of a chain of eager ones.  The mixers' own kernels stay eager.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thinkfast.models.rope import apply_rope, rope_cos_sin


def norm_glue(h, weight, eps: float):
    """RMSNorm.forward's arithmetic, as a function of tensors (compiled once for every layer)."""
    dtype = h.dtype
    xf = h.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


def residual_mlp_glue(h, m, norm_weight, eps: float, w_gate, b_gate, w_up, b_up, w_down, b_down):
    """h + m, then + GatedMLP(RMSNorm(h + m)): DecoderLayer.forward after the mixer."""
    h = h + m
    x = norm_glue(h, norm_weight, eps)
    return h + F.linear(F.silu(F.linear(x, w_gate, b_gate)) * F.linear(x, w_up, b_up), w_down, b_down)


def rope_glue(q, k, position_ids, inv_freq):
    """q (b, H, l, hd), k (b, Hkv, l, hd) rotated at position_ids (b, l): AttentionMixer._qkv's RoPE."""
    cos, sin = rope_cos_sin(inv_freq, position_ids, q.dtype)  # (b, l, hd)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


GLUE = {"norm": norm_glue, "residual_mlp": residual_mlp_glue, "rope": rope_glue}
_COMPILED: dict = {}
COMPILE_OPTIONS: dict = {"dynamic": False}  # tests may pick another backend


def compiled(name: str):
    """GLUE[name] through torch.compile (built once, shared by every layer)."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(GLUE[name], **COMPILE_OPTIONS)
    return _COMPILED[name]
