"""Fused temperature sampling: argmax(logits / T + Gumbel noise) per row in one pass over the logits.

Same counter-based noise as `ops/reference/sampling.py` (the hash is computed in int64 with the same
masks, so every noise value is the same float32 up to the last bit of `log`): each program owns one row,
walks the vocabulary in blocks, and keeps the running best (score, index); ties go to the lower index,
as `torch.argmax` does.  Reads each logit once and writes one int64 per row; the reference writes ~20
(b, V) temporaries.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from thinkfast.ops.reference.sampling import WEYL


@triton.jit
def _fmix32(h):
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


@triton.jit
def _gumbel_argmax_kernel(logits_ptr, temp_ptr, keys_ptr, out_ptr, V, stride_row, WEYL_C: tl.constexpr,
                          BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    t = tl.load(temp_ptr + row).to(tl.float32)
    key = tl.load(keys_ptr + row).to(tl.int64)
    sampled = t > 0
    inv_t = tl.where(sampled, 1.0 / tl.where(sampled, t, 1.0), 1.0)
    best_val = -float("inf")
    best_idx = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < V
        x = tl.load(logits_ptr + row * stride_row + offs, mask=m, other=-float("inf")).to(tl.float32)
        ids = offs.to(tl.int64)
        h = _fmix32(key ^ ((ids * WEYL_C) & 0xFFFFFFFF))
        h = _fmix32((h + key) & 0xFFFFFFFF)
        u = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
        g = -tl.log(-tl.log(u))
        score = tl.where(sampled, x * inv_t + g, x)
        score = tl.where(m, score, -float("inf"))
        blk_max = tl.max(score, axis=0)
        blk_idx = tl.argmax(score, axis=0)
        better = blk_max > best_val
        best_idx = tl.where(better, start + blk_idx, best_idx)
        best_val = tl.where(better, blk_max, best_val)
    tl.store(out_ptr + row, best_idx.to(tl.int64))


def supported(logits: torch.Tensor) -> bool:
    return logits.dim() == 2 and logits.dtype in (torch.float32, torch.bfloat16, torch.float16)


def gumbel_argmax(logits: torch.Tensor, temperature: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(b, V) logits, (b,) temperatures, (b,) int64 keys -> (b,) int64 tokens."""
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    b, V = logits.shape
    out = torch.empty(b, dtype=torch.int64, device=logits.device)
    if b == 0:
        return out
    _gumbel_argmax_kernel[(b,)](logits, temperature.contiguous(), keys.to(torch.int64).contiguous(), out, V,
                                logits.stride(0), WEYL_C=WEYL, BLOCK=4096, num_warps=8)
    return out
