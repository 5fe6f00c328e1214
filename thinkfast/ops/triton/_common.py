"""Small helpers shared by the Triton kernel modules."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_pow2(v: int) -> bool:
    return v > 0 and (v & (v - 1)) == 0


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Kernels index the last dim with unit stride; other strides are passed explicitly."""
    return t if t.stride(-1) == 1 else t.contiguous()


# Compiled kernels use libdevice's SFU approximations for log2 and division; the interpreter has no libdevice and
# uses tl.log2 and `/` in the same formulas.  triton.jit itself picks interpreter or compiler when a kernel is
# decorated, i.e. at import, so this is fixed at import too.
SFU_MATH = tl.constexpr(not interpreting())


@triton.jit
def _log2(x):
    if SFU_MATH:
        return libdevice.fast_log2f(x)  # one MUFU.LG2, ~2^-22 relative error
    else:
        return tl.log2(x)


@triton.jit
def _reciprocal(x):
    if SFU_MATH:
        return libdevice.fast_dividef(1.0, x)  # one MUFU.RCP
    else:
        return 1.0 / x


@triton.jit
def softplus(v):
    """log(1 + exp(v)) = max(v, 0) + log1p(e), e = exp(-|v|) in (0, 1], fp32: within 4e-6 relative of the exact value
    (tests/ops/test_fast_math.py), plus the rounding of exp's argument that any fp32 exp carries.

    log1p(e) by its series below e = 1/16 (where 1 + e rounds) and by log2(1 + e) above: two SFU ops (exp2,
    log2) and a few FMAs.  The Kahan form it replaced (an accurate log polynomial and a division, ~30
    instructions) was most of the scan's per-step instructions."""
    e = tl.exp2(tl.abs(v) * -1.4426950408889634)
    series = e * (1.0 + e * (-0.5 + e * (0.3333333333333333 + e * (-0.25 + e * 0.2))))
    lp = tl.where(e < 0.0625, series, _log2(1.0 + e) * 0.6931471805599453)
    return tl.maximum(v, 0.0) + lp


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)) with an exp2 and an approximate reciprocal (tl.sigmoid divides to full precision,
    ~13 instructions)."""
    return _reciprocal(1.0 + tl.exp2(x * -1.4426950408889634))


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
