"""References of the decode step's fused glue (see thinkfast/ops/triton/decode_fused.py):
exactly the eager PyTorch of RMSNorm, the residual add and the gated MLP's activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm_ref(h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float):
    if delta is not None:
        h = h + delta
    return h, rms_norm_ref(h, weight, eps)


def silu_mul_ref(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return F.silu(g) * u


def rope_kv_write_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                      inv_freq: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      slots: torch.Tensor) -> torch.Tensor:
    """An attention layer's decode glue, exactly as the eager step computes it: RoPE on q (b, H, hd) and the
    new k (b, Hkv, hd) at `positions` (b,) (cos / sin from fp32 angles, rounded to q's dtype, then
    x * cos + rotate_half(x) * sin in that dtype: `thinkfast.models.rope`), the rotated k and v written into
    the caches (slots, Hkv, max_len, hd) at [slots, :, positions]. Returns the rotated q."""
    from thinkfast.models.rope import apply_rope, rope_cos_sin  # models import the ops: import at call time

    cos, sin = rope_cos_sin(inv_freq, positions[:, None], q.dtype)  # (b, 1, hd)
    q = apply_rope(q[:, :, None], cos, sin)[:, :, 0]  # (b, H, hd)
    k = apply_rope(k[:, :, None], cos, sin)[:, :, 0]  # (b, Hkv, hd)
    k_cache[slots, :, positions] = k.to(k_cache.dtype)
    v_cache[slots, :, positions] = v.to(v_cache.dtype)
    return q
