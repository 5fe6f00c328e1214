"""Causal depthwise conv1d (kernel width K, small) with document resets: sequence
forward + backward (torch.autograd.Function) and the one-step rolling-state update.

Same functions as `causal_conv1d_ref` / `causal_conv1d_update_ref`.

Sequence kernels: x (b, l, c) channels-last; grid (b, l / BLOCK_L, c / BLOCK_C); a program
computes a (BLOCK_L, BLOCK_C) tile of outputs from K shifted loads of x (the tile plus
K-1 rows of halo, served from L1/L2), so x is read from DRAM ~once and y written once.
A reset before token t hides every input before t from outputs at >= t: tap s (s steps
back) is masked once any reset lies in (t-s, t], built up tap by tap from K-1 loads of
the (b, l) reset mask.  Positions before 0 read `initial_state` (b, c, K-1).
Backward: a program owns a tile of input positions p and forms
    dx[p] = sum_s w[K-1-s] * dpre[p+s] * [no reset in (p, p+s]],
recomputing the pre-activation pre[p+s] (needed for SiLU') from x instead of saving it
(K*K tile loads, all cache hits: the conv is tiny next to its memory traffic).  The same
program reduces dweight and dbias over its rows into per-tile partials (summed in
PyTorch), and tiles that start before position 0 produce d(initial_state).
The final state (last K-1 inputs of the open document) is a tiny slice computed in
PyTorch, so autograd differentiates it without a kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from thinkfast.ops.triton._common import last_dim_contiguous


@triton.jit
def _load_input(x_base, init_base, src, cmask, L, s_x_l, s_i_j, K: tl.constexpr, HAS_INIT: tl.constexpr):
    """x at positions src (BLOCK_L,) for the tile's channels; initial_state before 0, zeros outside."""
    v = tl.load(x_base + src[:, None] * s_x_l, mask=((src >= 0) & (src < L))[:, None] & cmask[None, :], other=0.0)
    v = v.to(tl.float32)
    if HAS_INIT:
        hmask = (src < 0) & (src >= -(K - 1))
        hv = tl.load(init_base + (src + K - 1)[:, None] * s_i_j, mask=hmask[:, None] & cmask[None, :], other=0.0)
        v += hv.to(tl.float32)
    return v


@triton.jit
def _pre_activation(x_base, init_base, rs_base, w_base, bias, t, cmask, L, s_x_l, s_i_j, s_rs_l, s_w_c,
                    K: tl.constexpr, HAS_INIT: tl.constexpr, HAS_RESET: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_L: tl.constexpr):
    acc = _load_input(x_base, init_base, t, cmask, L, s_x_l, s_i_j, K, HAS_INIT) * \
        tl.load(w_base + (K - 1), mask=cmask, other=0.0).to(tl.float32)[None, :]
    blocked = tl.zeros([BLOCK_L], dtype=tl.int32)
    for s in tl.static_range(1, K):
        if HAS_RESET:
            rp = t - s + 1
            r = tl.load(rs_base + rp * s_rs_l, mask=(rp >= 0) & (rp < L), other=0).to(tl.int32)
            blocked = blocked | r
        v = _load_input(x_base, init_base, t - s, cmask, L, s_x_l, s_i_j, K, HAS_INIT)
        w = tl.load(w_base + (K - 1 - s), mask=cmask, other=0.0).to(tl.float32)
        acc += tl.where((blocked == 0)[:, None], v, 0.0) * w[None, :]
    if HAS_BIAS:
        acc += bias[None, :]
    return acc


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, rs_ptr, init_ptr, y_ptr,
    L, Cc,
    s_x_b, s_x_l, s_w_c, s_rs_b, s_rs_l, s_i_b, s_i_c, s_i_j, s_y_b, s_y_l,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESET: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    cidx = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cidx < Cc
    bias = tl.zeros([BLOCK_C], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cidx, mask=cmask, other=0.0).to(tl.float32)
    pre = _pre_activation(x_ptr + pid_b * s_x_b + cidx[None, :], init_ptr + pid_b * s_i_b + cidx[None, :] * s_i_c,
                          rs_ptr + pid_b * s_rs_b, w_ptr + cidx * s_w_c, bias, t, cmask, L, s_x_l, s_i_j, s_rs_l,
                          s_w_c, K, HAS_INIT, HAS_RESET, HAS_BIAS, BLOCK_L)
    if SILU:
        pre = pre * tl.sigmoid(pre)
    tl.store(y_ptr + pid_b * s_y_b + t[:, None] * s_y_l + cidx[None, :], pre.to(y_ptr.dtype.element_ty),
             mask=(t < L)[:, None] & cmask[None, :])


@triton.jit
def _conv_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, rs_ptr, init_ptr, dy_ptr,
    dx_ptr, dinit_ptr, dw_ptr, db_ptr,
    L, Cc, n_lblocks, t_off,
    s_x_b, s_x_l, s_w_c, s_rs_b, s_rs_l, s_i_b, s_i_c, s_i_j, s_dy_b, s_dy_l,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESET: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
):
    # dx: contiguous (b, l, c); dinit: contiguous (b, c, K-1); dw partials (b, n_lblocks, K, c) fp32;
    # db partials (b, n_lblocks, c) fp32
    pid_b = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(1)
    p = pid_l * BLOCK_L + tl.arange(0, BLOCK_L) - t_off  # input positions owned (may start at -(K-1))
    cidx = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cidx < Cc
    bias = tl.zeros([BLOCK_C], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cidx, mask=cmask, other=0.0).to(tl.float32)
    x_base = x_ptr + pid_b * s_x_b + cidx[None, :]
    init_base = init_ptr + pid_b * s_i_b + cidx[None, :] * s_i_c
    rs_base = rs_ptr + pid_b * s_rs_b
    w_base = w_ptr + cidx * s_w_c
    dy_base = dy_ptr + pid_b * s_dy_b + cidx[None, :]
    dxv = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
    blocked = tl.zeros([BLOCK_L], dtype=tl.int32)
    dpre_self = tl.zeros([BLOCK_L, BLOCK_C], dtype=tl.float32)
    for s in tl.static_range(0, K):
        q = p + s  # output positions that read input p through tap K-1-s
        if HAS_RESET:
            if s > 0:
                r = tl.load(rs_base + q * s_rs_l, mask=(q >= 0) & (q < L), other=0).to(tl.int32)
                blocked = blocked | r
        qmask = (q >= 0) & (q < L)
        dq = tl.load(dy_base + q[:, None] * s_dy_l, mask=qmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        if SILU:
            pre = _pre_activation(x_base, init_base, rs_base, w_base, bias, q, cmask, L, s_x_l, s_i_j, s_rs_l,
                                  s_w_c, K, HAS_INIT, HAS_RESET, HAS_BIAS, BLOCK_L)
            sg = tl.sigmoid(pre)
            dq = dq * sg * (1.0 + pre * (1.0 - sg))
        w = tl.load(w_base + (K - 1 - s), mask=cmask, other=0.0).to(tl.float32)
        dxv += tl.where((blocked == 0)[:, None], dq, 0.0) * w[None, :]
        if s == 0:
            dpre_self = dq  # dL/dpre at the tile's own positions (0 outside [0, L))
    pmask = (p >= 0) & (p < L)
    tl.store(dx_ptr + pid_b * L * Cc + p[:, None] * Cc + cidx[None, :], dxv.to(dx_ptr.dtype.element_ty),
             mask=pmask[:, None] & cmask[None, :])
    if HAS_INIT:
        hmask = (p < 0) & (p >= -(K - 1))
        tl.store(dinit_ptr + pid_b * Cc * (K - 1) + cidx[None, :] * (K - 1) + (p + K - 1)[:, None], dxv,
                 mask=hmask[:, None] & cmask[None, :])
    # weight / bias partials: tap K-1-s pairs output p with input p-s
    part = (pid_b * n_lblocks + pid_l)
    tl.store(db_ptr + part * Cc + cidx, tl.sum(dpre_self, axis=0), mask=cmask)
    blocked = tl.zeros([BLOCK_L], dtype=tl.int32)
    for s in tl.static_range(0, K):
        if HAS_RESET:
            if s > 0:
                rp = p - s + 1
                r = tl.load(rs_base + rp * s_rs_l, mask=(rp >= 0) & (rp < L), other=0).to(tl.int32)
                blocked = blocked | r
        v = _load_input(x_base, init_base, p - s, cmask, L, s_x_l, s_i_j, K, HAS_INIT)
        contrib = tl.sum(tl.where((blocked == 0)[:, None], v, 0.0) * dpre_self, axis=0)
        tl.store(dw_ptr + (part * K + (K - 1 - s)) * Cc + cidx, contrib, mask=cmask)


def _blocks(c: int) -> tuple[int, int]:
    block_c = min(128, triton.next_power_of_2(c))
    return 32, block_c


def _final_state(x, reset, initial_state, k):
    """Last k-1 inputs (oldest first) of the open document, zeros before its start; (b, c, k-1) fp32."""
    b, L, c = x.shape
    hist = initial_state.float().transpose(1, 2) if initial_state is not None else x.new_zeros(b, k - 1, c, dtype=torch.float32)
    tail = torch.cat([hist, x[:, max(0, L - (k - 1)):].float()], dim=1)[:, -(k - 1):]  # (b, k-1, c)
    if reset is not None:
        pos = torch.arange(L - (k - 1), L, device=x.device)  # positions of the tail entries
        last = torch.where(reset, torch.arange(L, device=x.device), -1).amax(dim=1)  # last document start
        tail = tail * (pos[None, :] >= last[:, None]).unsqueeze(-1)
    return tail.transpose(1, 2).contiguous()


class CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, reset, initial_state, activation):
        b, L, c = x.shape
        k = weight.shape[1]
        x = last_dim_contiguous(x)
        w = weight.contiguous()
        rs = reset.to(torch.uint8).contiguous() if reset is not None else None
        init = initial_state.contiguous() if initial_state is not None else None
        y = torch.empty(b, L, c, device=x.device, dtype=x.dtype)
        BL, BC = _blocks(c)
        grid = (b, triton.cdiv(L, BL), triton.cdiv(c, BC))
        _conv_fwd_kernel[grid](
            x, w, bias if bias is not None else w, rs if rs is not None else x, init if init is not None else x, y,
            L, c,
            x.stride(0), x.stride(1), w.stride(0),
            rs.stride(0) if rs is not None else 0, rs.stride(1) if rs is not None else 0,
            init.stride(0) if init is not None else 0, init.stride(1) if init is not None else 0,
            init.stride(2) if init is not None else 0,
            y.stride(0), y.stride(1),
            K=k, BLOCK_L=BL, BLOCK_C=BC,
            HAS_BIAS=bias is not None, HAS_RESET=rs is not None, HAS_INIT=init is not None,
            SILU=activation == "silu",
            num_warps=4,
        )
        ctx.save_for_backward(x, w, bias, rs, init)
        ctx.activation = activation
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None,
                      initial_state.dtype if initial_state is not None else None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, bias, rs, init = ctx.saved_tensors
        w_dtype, b_dtype, i_dtype = ctx.dtypes
        b, L, c = x.shape
        k = w.shape[1]
        dy = last_dim_contiguous(dy)
        BL, BC = _blocks(c)
        t_off = (k - 1) if init is not None else 0
        n_lblocks = triton.cdiv(L + t_off, BL)
        dx = torch.empty(b, L, c, device=x.device, dtype=x.dtype)
        dinit = torch.zeros(b, c, k - 1, device=x.device, dtype=torch.float32) if init is not None else None
        dw = torch.empty(b, n_lblocks, k, c, device=x.device, dtype=torch.float32)
        db = torch.empty(b, n_lblocks, c, device=x.device, dtype=torch.float32)
        _conv_bwd_kernel[(b, n_lblocks, triton.cdiv(c, BC))](
            x, w, bias if bias is not None else w, rs if rs is not None else x, init if init is not None else x, dy,
            dx, dinit if dinit is not None else dw, dw, db,
            L, c, n_lblocks, t_off,
            x.stride(0), x.stride(1), w.stride(0),
            rs.stride(0) if rs is not None else 0, rs.stride(1) if rs is not None else 0,
            init.stride(0) if init is not None else 0, init.stride(1) if init is not None else 0,
            init.stride(2) if init is not None else 0,
            dy.stride(0), dy.stride(1),
            K=k, BLOCK_L=BL, BLOCK_C=BC,
            HAS_BIAS=bias is not None, HAS_RESET=rs is not None, HAS_INIT=init is not None,
            SILU=ctx.activation == "silu",
            num_warps=4,
        )
        gw = dw.sum(dim=(0, 1)).t().to(w_dtype)  # (c, k)
        gb = db.sum(dim=(0, 1)).to(b_dtype) if b_dtype is not None else None
        gi = dinit.to(i_dtype) if dinit is not None else None
        return dx, gw, gb, None, gi, None


def causal_conv1d(x, weight, bias=None, activation=None, reset=None, initial_state=None, return_final_state=False):
    """Triton causal depthwise conv; arguments and results as `causal_conv1d_ref`."""
    if activation not in (None, "silu"):
        raise ValueError(f"unknown activation {activation!r}; expected None or 'silu'")
    y = CausalConv1dFn.apply(x, weight, bias, reset, initial_state, activation)
    if not return_final_state:
        return y
    return y, _final_state(x, reset, initial_state, weight.shape[1])


@triton.jit
def _conv_update_kernel(
    x_ptr, st_ptr, w_ptr, bias_ptr, idx_ptr, y_ptr,
    Cc, s_x_b, s_st_p, s_st_c, s_st_j, s_w_c, s_y_b,
    K: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, HAS_IDX: tl.constexpr,
):
    pid_b = tl.program_id(0)
    cidx = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cidx < Cc
    if HAS_IDX:
        row = tl.load(idx_ptr + pid_b).to(tl.int64)
    else:
        row = pid_b.to(tl.int64)
    st = st_ptr + row * s_st_p + cidx * s_st_c
    xv = tl.load(x_ptr + pid_b * s_x_b + cidx, mask=cmask, other=0.0)
    acc = xv.to(tl.float32) * tl.load(w_ptr + cidx * s_w_c + (K - 1), mask=cmask, other=0.0).to(tl.float32)
    for j in tl.static_range(0, K - 1):
        v = tl.load(st + j * s_st_j, mask=cmask, other=0.0).to(tl.float32)
        acc += v * tl.load(w_ptr + cidx * s_w_c + j, mask=cmask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cidx, mask=cmask, other=0.0).to(tl.float32)
    # roll the window: slot j takes slot j+1 (read before it is overwritten), the last slot takes x
    for j in tl.static_range(0, K - 2):
        tl.store(st + j * s_st_j, tl.load(st + (j + 1) * s_st_j, mask=cmask, other=0.0), mask=cmask)
    tl.store(st + (K - 2) * s_st_j, xv.to(st_ptr.dtype.element_ty), mask=cmask)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y_ptr + pid_b * s_y_b + cidx, acc.to(y_ptr.dtype.element_ty), mask=cmask)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, state_indices=None):
    """Triton one-step conv; arguments and result as `causal_conv1d_update_ref` (state rolled in place)."""
    if activation not in (None, "silu"):
        raise ValueError(f"unknown activation {activation!r}; expected None or 'silu'")
    b, c = x.shape
    k = weight.shape[1]
    x = last_dim_contiguous(x)
    w = weight.contiguous()
    y = torch.empty(b, c, device=x.device, dtype=x.dtype)
    idx = state_indices.contiguous() if state_indices is not None else None
    BC = min(256, triton.next_power_of_2(c))
    _conv_update_kernel[(b, triton.cdiv(c, BC))](
        x, conv_state, w, bias if bias is not None else w, idx if idx is not None else x, y,
        c, x.stride(0), conv_state.stride(0), conv_state.stride(1), conv_state.stride(2), w.stride(0), y.stride(0),
        K=k, BLOCK_C=BC, HAS_BIAS=bias is not None, SILU=activation == "silu", HAS_IDX=idx is not None,
        num_warps=4,
    )
    return y
