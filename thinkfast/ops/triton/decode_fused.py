"""Small fusions for the decode step's per-layer glue (one token per sequence, rows of d_model).

At decode batch 256 every elementwise op is a ~1.5 MB tensor: its launch and its round trip
through memory cost more than its arithmetic.  The eager RMSNorm is six kernels
(float, pow, mean, rsqrt, mul, cast, weight mul) and the MLP's silu(gate) * up two; with
28 layers that is ~400 launches per step.  These kernels do each in one launch with the
same rounding points as the PyTorch code they replace:
  * `add_rms_norm(h, delta, w, eps)` -> (h + delta rounded to h's dtype,
    w * (r * rsqrt(mean(r^2) + eps)).to(dtype)) with r the fp32 sum (delta optional);
  * `silu_mul(g, u)` -> silu(g) rounded to g's dtype, times u, rounded.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(h_ptr, d_ptr, w_ptr, hout_ptr, y_ptr, D, eps, s_h, s_d, s_ho, s_y,
                         HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    m = offs < D
    h = tl.load(h_ptr + row * s_h + offs, mask=m, other=0.0)
    # loaded before the store below: a load written after a store waits for it (the store may alias it)
    w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_DELTA:
        h = (h.to(tl.float32) + tl.load(d_ptr + row * s_d + offs, mask=m, other=0.0).to(tl.float32))
        h = h.to(hout_ptr.dtype.element_ty)
        tl.store(hout_ptr + row * s_ho + offs, h, mask=m)
    hf = h.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(hf * hf, axis=0) / D + eps)
    normed = (hf * rstd).to(y_ptr.dtype.element_ty).to(tl.float32)
    tl.store(y_ptr + row * s_y + offs, (w * normed).to(y_ptr.dtype.element_ty), mask=m)


def add_rms_norm(h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float):
    """(b, D) rows.  Returns (h + delta, rms_norm(h + delta)); with delta None: (h, rms_norm(h))."""
    if h.stride(-1) != 1 or (delta is not None and delta.stride(-1) != 1):
        raise ValueError("add_rms_norm needs unit last-dim strides")
    b, D = h.shape
    out_dtype = torch.promote_types(weight.dtype, h.dtype)
    y = torch.empty(b, D, device=h.device, dtype=out_dtype)
    hout = torch.empty_like(h) if delta is not None else h
    block = triton.next_power_of_2(D)
    _add_rms_norm_kernel[(b,)](
        h, delta if delta is not None else h, weight, hout, y, D, eps,
        h.stride(0), delta.stride(0) if delta is not None else 0, hout.stride(0), y.stride(0),
        HAS_DELTA=delta is not None, BLOCK=block, num_warps=8 if block >= 2048 else 4,
    )
    return hout, y


@triton.jit
def _silu_mul_kernel(g_ptr, u_ptr, y_ptr, n_cols, s_g, s_u, s_y, BLOCK: tl.constexpr):
    """Grid (rows, column blocks): g and u may be column halves of one (b, 2 I) GEMM output (row strides)."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n_cols
    g = tl.load(g_ptr + row * s_g + offs, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + row * s_u + offs, mask=m, other=0.0).to(tl.float32)
    s = (g * tl.sigmoid(g)).to(y_ptr.dtype.element_ty).to(tl.float32)
    tl.store(y_ptr + row * s_y + offs, (s * u).to(y_ptr.dtype.element_ty), mask=m)


def silu_mul(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u for (b, I) rows with unit column strides (any row stride: no copy of a stacked GEMM's halves)."""
    shape = g.shape
    if g.dim() != 2 or g.stride(-1) != 1 or u.stride(-1) != 1:
        g, u = g.reshape(-1, shape[-1]).contiguous(), u.reshape(-1, shape[-1]).contiguous()
    rows, n = g.shape
    y = torch.empty(rows, n, device=g.device, dtype=g.dtype)
    block = min(2048, triton.next_power_of_2(n))
    _silu_mul_kernel[(rows, triton.cdiv(n, block))](g, u, y, n, g.stride(0), u.stride(0), y.stride(0), BLOCK=block,
                                                     num_warps=4)
    return y.view(shape)


_INV_TWO_PI = tl.constexpr(0.15915494309189535)
_TWO_PI_HEAD = tl.constexpr(6.28125)  # 8 significant bits: turns * head is exact for turns < 2**16
_TWO_PI_TAIL = tl.constexpr(0.0019353071795864769)  # 2 pi - head


@triton.jit
def _rounded(x, dtype: tl.constexpr):
    """fp32 x rounded to `dtype` (nearest, ties to even) and back to fp32.  For bf16 this is done on the bits:
    on an H200 (Triton 3.6) the compiler folds `x.to(bf16).to(fp32)` into x, which dropped the eager
    rounding points (one bf16 ulp apart from eager PyTorch in ~19% of the rotated values)."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(dtype).to(tl.float32)


@triton.jit
def _rope_kv_write_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, slot_ptr, inv_freq_ptr, qout_ptr, kc_ptr, vc_ptr,
                          s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_ob, s_oh,
                          s_cs, s_ch, s_cl, s_vs, s_vch, s_vl,
                          H: tl.constexpr, HALF: tl.constexpr):
    """One program per (row, head) of q and of the new k / v: rotate, then store (q) or write to the cache."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    offs = tl.arange(0, HALF)
    pos = tl.load(pos_ptr + row)
    angle = pos.to(tl.float32) * tl.load(inv_freq_ptr + offs).to(tl.float32)  # (HALF,) as rope_cos_sin: fp32
    # reduced to [-pi, pi] first (Cody-Waite, 2 pi split in an exact head and a tail): positions reach 1e4-1e5
    # radians, where a fast cos / sin would lose the digits that the eager (fully reduced) ones keep
    turns = tl.floor(angle * _INV_TWO_PI + 0.5)
    angle = (angle - turns * _TWO_PI_HEAD) - turns * _TWO_PI_TAIL
    dtype = qout_ptr.dtype.element_ty
    cos = _rounded(tl.cos(angle), dtype)  # rounded to the model dtype, as the eager cos/sin are
    sin = _rounded(tl.sin(angle), dtype)
    if head < H:
        src = q_ptr + row * s_qb + head * s_qh
    else:
        src = k_ptr + row * s_kb + (head - H) * s_kh
    x1 = tl.load(src + offs).to(tl.float32)
    x2 = tl.load(src + HALF + offs).to(tl.float32)
    # x * cos + rotate_half(x) * sin, each product and the sum rounded to the model dtype as in eager PyTorch
    lo = (_rounded(x1 * cos, dtype) + _rounded(-x2 * sin, dtype)).to(dtype)
    hi = (_rounded(x2 * cos, dtype) + _rounded(x1 * sin, dtype)).to(dtype)
    if head < H:
        dst = qout_ptr + row * s_ob + head * s_oh
        tl.store(dst + offs, lo)
        tl.store(dst + HALF + offs, hi)
    else:
        kh = head - H
        slot = tl.load(slot_ptr + row).to(tl.int64)
        vsrc = v_ptr + row * s_vb + kh * s_vh
        v1 = tl.load(vsrc + offs)  # v is loaded before the k stores: a load after a store waits for it
        v2 = tl.load(vsrc + HALF + offs)
        kdst = kc_ptr + slot * s_cs + kh * s_ch + pos.to(tl.int64) * s_cl
        tl.store(kdst + offs, lo.to(kc_ptr.dtype.element_ty))
        tl.store(kdst + HALF + offs, hi.to(kc_ptr.dtype.element_ty))
        vdst = vc_ptr + slot * s_vs + kh * s_vch + pos.to(tl.int64) * s_vl
        tl.store(vdst + offs, v1.to(vc_ptr.dtype.element_ty))
        tl.store(vdst + HALF + offs, v2.to(vc_ptr.dtype.element_ty))


def rope_kv_write(q, k, v, positions, inv_freq, k_cache, v_cache, slots):
    """q (b, H, hd), k / v (b, Hkv, hd) with unit last-dim strides, positions / slots (b,), inv_freq (hd/2,),
    caches (slots, Hkv, max_len, hd). Writes the rotated k and v into the caches; returns the rotated q."""
    b, n_heads, hd = q.shape
    n_kv = k.shape[1]
    if hd % 2 or (hd // 2) & (hd // 2 - 1) or min(q.stride(-1), k.stride(-1), v.stride(-1)) != 1:
        raise ValueError("rope_kv_write needs a head dim of twice a power of two and unit last-dim strides")
    out = torch.empty(b, n_heads, hd, device=q.device, dtype=q.dtype)
    _rope_kv_write_kernel[(b, n_heads + n_kv)](
        q, k, v, positions, slots, inv_freq, out, k_cache, v_cache,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
        v_cache.stride(2), H=n_heads, HALF=hd // 2, num_warps=1,
    )
    return out
