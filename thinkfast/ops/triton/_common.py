"""Small helpers shared by the Triton kernel modules."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_pow2(v: int) -> bool:
    return v > 0 and (v & (v - 1)) == 0


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Kernels index the last dim with unit stride; other strides are passed explicitly."""
    return t if t.stride(-1) == 1 else t.contiguous()


@triton.jit
def softplus(v):
    # max(v, 0) + log1p(exp(-|v|)), with log1p done the Kahan way (no tl.log1p in older triton)
    e = tl.exp(-tl.abs(v))
    u = 1.0 + e
    lp = tl.where(u == 1.0, e, tl.log(u) * e / (u - 1.0))
    return tl.maximum(v, 0.0) + lp


@triton.jit
def first_order_combine(a1, b1, a2, b2):
    # composition of h -> a1 h + b1 then h -> a2 h + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def load_channel_params(A_ptr, bias_ptr, D_ptr, d0, offs_c, offs_n, N: tl.constexpr, HAS_BIAS: tl.constexpr,
                        HAS_D: tl.constexpr):
    """A scan program's per-channel parameters, channels d0 + offs_c: the (CPG, N) offsets into A (d, N), A and
    A * log2(e) (for exp2) in fp32, dt bias and D (CPG,) in fp32 (zeros when absent)."""
    dn_off = (d0 + offs_c)[:, None] * N + offs_n[None, :]
    A = tl.load(A_ptr + dn_off).to(tl.float32)
    bias = tl.zeros(offs_c.shape, dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d0 + offs_c).to(tl.float32)
    Dv = tl.zeros(offs_c.shape, dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d0 + offs_c).to(tl.float32)
    return dn_off, A, A * 1.4426950408889634, bias, Dv
