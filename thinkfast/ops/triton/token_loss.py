"""Fused token-loss terms of a chunk of positions: one program per position streams its vocabulary row.

The reference (`reference/token_loss.py`) runs ~30 elementwise passes over the (chunk, vocab) fp32 logits
per chunk (two log-softmaxes, exp, differences, products, the gradient's terms, zero-fill, accumulation);
at a 152k vocabulary each pass is 0.6 GB per 1024 positions.  Here each row is read twice and the
gradient written once:
  pass 1: online (max, sum-exp) of s/T, t/T (and of s at T = 1 for CE when T != 1), with the running
          sums A_r = sum e^{s'-m_s} (s' - t') and A_f = sum e^{t'-m_t} (t' - s'), rescaled as the maxima
          move; then reverse_kl = A_r / Z_s - lse_s + lse_t, forward_kl = A_f / Z_t - lse_t + lse_s,
          ce = lse(s) - s[y];
  pass 2: the closed-form gradient w.r.t. s (the reference's formulas), written in the dtype the
          LM-head matmuls run in (bf16 there, so no separate cast pass).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _token_loss_kernel(s_ptr, t_ptr, y_ptr, out_ptr, g_ptr, V, s_stride, t_stride, g_stride,
                       inv_temp, w_rkl, w_fkl, w_ce,
                       HAS_RKL: tl.constexpr, HAS_FKL: tl.constexpr, HAS_CE: tl.constexpr, SAME_T: tl.constexpr,
                       NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    HAS_T: tl.constexpr = HAS_RKL or HAS_FKL
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    zero = tl.zeros([], dtype=tl.float32)
    m_s = zero - float("inf")
    z_s = zero
    m_t = zero - float("inf")
    z_t = zero
    a_r = zero
    a_f = zero
    m_1 = zero - float("inf")
    z_1 = zero
    for off in range(0, V, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < V
        s = tl.load(s_row + cols, mask=mask, other=0.0).to(tl.float32)
        sp = tl.where(mask, s * inv_temp, float("-inf"))
        m_new = tl.maximum(m_s, tl.max(sp, axis=0))
        alpha = tl.exp(m_s - m_new)
        e_s = tl.exp(sp - m_new)
        z_s = z_s * alpha + tl.sum(e_s, axis=0)
        if HAS_T:
            t = tl.load(t_row + cols, mask=mask, other=0.0).to(tl.float32)
            tp = tl.where(mask, t * inv_temp, float("-inf"))
            d = tl.where(mask, s * inv_temp - t * inv_temp, 0.0)  # (other=0 lanes: no inf - inf)
            a_r = a_r * alpha + tl.sum(e_s * d, axis=0)
            mt_new = tl.maximum(m_t, tl.max(tp, axis=0))
            beta = tl.exp(m_t - mt_new)
            e_t = tl.exp(tp - mt_new)
            z_t = z_t * beta + tl.sum(e_t, axis=0)
            a_f = a_f * beta - tl.sum(e_t * d, axis=0)
            m_t = mt_new
        m_s = m_new
        if HAS_CE and not SAME_T:
            s1 = tl.where(mask, s, float("-inf"))
            m1_new = tl.maximum(m_1, tl.max(s1, axis=0))
            z_1 = z_1 * tl.exp(m_1 - m1_new) + tl.sum(tl.exp(s1 - m1_new), axis=0)
            m_1 = m1_new
    lse_s = m_s + tl.log(z_s)
    if HAS_T:
        lse_t = m_t + tl.log(z_t)
        rkl = a_r / z_s - lse_s + lse_t
        fkl = a_f / z_t - lse_t + lse_s
    else:
        lse_t = zero
        rkl = zero
        fkl = zero
    if SAME_T:
        lse_1 = lse_s
    else:
        lse_1 = m_1 + tl.log(z_1)
    if HAS_RKL:
        tl.store(out_ptr + row * 3 + 0, rkl)
    else:
        tl.store(out_ptr + row * 3 + 0, zero)
    if HAS_FKL:
        tl.store(out_ptr + row * 3 + 1, fkl)
    else:
        tl.store(out_ptr + row * 3 + 1, zero)
    y = tl.load(y_ptr + row)
    if HAS_CE:
        s_y = tl.load(s_row + y).to(tl.float32)
        tl.store(out_ptr + row * 3 + 2, lse_1 - s_y)
    else:
        tl.store(out_ptr + row * 3 + 2, zero)
    if NEED_GRAD:
        g_row = g_ptr + row * g_stride
        for off in range(0, V, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            mask = cols < V
            s = tl.load(s_row + cols, mask=mask, other=0.0).to(tl.float32)
            logp = s * inv_temp - lse_s
            p = tl.exp(logp)
            g = tl.zeros([BLOCK], dtype=tl.float32)
            if HAS_T:
                t = tl.load(t_row + cols, mask=mask, other=0.0).to(tl.float32)
                logq = t * inv_temp - lse_t
                if HAS_RKL:
                    g += (w_rkl * inv_temp) * p * (logp - logq - rkl)
                if HAS_FKL:
                    g += (w_fkl * inv_temp) * (p - tl.exp(logq))
            if HAS_CE:
                if SAME_T:
                    p1 = p
                else:
                    p1 = tl.exp(s - lse_1)
                g += w_ce * (p1 - tl.where(cols == y, 1.0, 0.0))
            tl.store(g_row + cols, g.to(g_ptr.dtype.element_ty), mask=mask)


def supported(s: torch.Tensor, t: torch.Tensor | None) -> bool:
    ok = s.dim() == 2 and s.dtype == torch.float32 and s.stride(-1) == 1
    return ok and (t is None or (t.shape == s.shape and t.dtype == torch.float32 and t.stride(-1) == 1))


def token_loss_chunk(s: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor, weights, temperature: float,
                     need_grad: bool, grad_dtype: torch.dtype = torch.float32, block: int | None = None,
                     num_warps: int | None = None):
    """As `token_loss_chunk_ref`, the gradient in `grad_dtype`.  s, t: (c, V) fp32; y: (c,) long."""
    w_rkl, w_fkl, w_ce = (float(w) for w in weights)
    if (w_rkl or w_fkl) and t is None:
        raise ValueError("KL terms need the teacher logits")
    c, V = s.shape
    out = torch.empty(c, 3, dtype=torch.float32, device=s.device)
    grad = torch.empty(c, V, dtype=grad_dtype, device=s.device) if need_grad else out
    if c:
        block = block or min(4096, triton.next_power_of_2(V))
        _token_loss_kernel[(c,)](
            s, t if t is not None else s, y.contiguous(), out, grad, V, s.stride(0),
            t.stride(0) if t is not None else 0, grad.stride(0) if need_grad else 0,
            1.0 / float(temperature), w_rkl, w_fkl, w_ce,
            HAS_RKL=bool(w_rkl), HAS_FKL=bool(w_fkl), HAS_CE=bool(w_ce), SAME_T=float(temperature) == 1.0,
            NEED_GRAD=need_grad, BLOCK=block, num_warps=num_warps or (8 if block >= 2048 else 4),
        )
    return out.sum(0), (grad if need_grad else None)
