"""Mamba-1 selective scan (grouped B/C), forward and backward, as a torch.autograd.Function.

Same function as `thinkfast.ops.reference.selective_scan_ref`.

Work split: one program per (B/C group, sequence).  A program owns the CPG channels of
its group (CPG = d_inner / G, 16 for the SPEC shapes) and keeps their (CPG, N) fp32
state in registers while it walks the sequence in chunks of T time steps.  Inside a
chunk the linear recurrence h_t = a_t h_{t-1} + u_t is solved for the whole
(T, CPG, N) tile at once with `tl.associative_scan` over time, then the state
entering the chunk is folded in: h_t = (prod_{s<=t} a_s) h_in + h~_t.

Memory traffic: forward reads x, dt, z (b,l,d), B, C (b,l,G,N) once, writes y once,
and (only when a gradient is needed) writes the (CPG, N) state entering every chunk,
(b, ceil(l/T), d, N) fp32 = 4 N / T bytes per (token, channel): 2 B/elem at T=32.
Backward walks the chunks in reverse, recomputes the chunk's forward states from the
saved chunk-entry state, and runs the adjoint recurrence
    g_t = a_{t+1} g_{t+1} + dy_t C_t      (g = dL/dh_t, carried across chunks)
as a reverse associative scan.  It reads x, dt, z, B, C, dy and the chunk states once
and writes dx, ddt, dz, dB, dC once; dA, dD and d(dt_bias) are reduced in registers
over time and written as per-sequence partials (summed over the batch in PyTorch).
dB and dC need no atomics because one program owns a whole group.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from thinkfast.ops.triton._common import (
    LOG2E,
    first_order_combine,
    interpreting,
    is_pow2,
    last_dim_contiguous,
    softplus,
)


@triton.jit
def _delta_and_decay(dt_ptr, rs_ptr, t, tmask, bias, A2, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     HAS_RESET: tl.constexpr, stride_dt_l, stride_rs_l, offs_c):
    """delta (T, CPG) (0 on padded rows), the raw dt+bias (for softplus'), decay a (T, CPG, N)."""
    dtv = tl.load(dt_ptr + t[:, None] * stride_dt_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
    if HAS_BIAS:
        dtv = dtv + bias[None, :]
    if SOFTPLUS:
        delta = softplus(dtv)
    else:
        delta = dtv
    delta = tl.where(tmask[:, None], delta, 0.0)
    a = tl.exp2(delta[:, :, None] * A2[None, :, :])  # (T, CPG, N); exactly 1 on padded rows
    if HAS_RESET:
        r = tl.load(rs_ptr + t * stride_rs_l, mask=tmask, other=0)
        a = tl.where((r == 0)[:, None, None], a, 0.0)
    return delta, dtv, a


@triton.jit
def _ss_fwd_kernel(
    x_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, h0_ptr, rs_ptr,
    y_ptr, hT_ptr, hc_ptr,
    L, n_chunks, d_inner,
    s_x_b, s_x_l, s_dt_b, s_dt_l, s_z_b, s_z_l,
    s_B_b, s_B_l, s_B_g, s_C_b, s_C_l, s_C_g,
    s_rs_b, s_rs_l, s_y_b, s_y_l,
    T: tl.constexpr, CPG: tl.constexpr, N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_RESET: tl.constexpr, STORE_CHUNK_STATES: tl.constexpr,
):
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_t = tl.arange(0, T)
    offs_c = tl.arange(0, CPG)
    offs_n = tl.arange(0, N)
    d0 = pid_g * CPG
    A2 = tl.load(A_ptr + (d0 + offs_c)[:, None] * N + offs_n[None, :]).to(tl.float32) * 1.4426950408889634
    bias = tl.zeros([CPG], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d0 + offs_c).to(tl.float32)
    Dv = tl.zeros([CPG], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d0 + offs_c).to(tl.float32)
    state_off = pid_b * d_inner * N + (d0 + offs_c)[:, None] * N + offs_n[None, :]  # (CPG, N) in a (b, d, N) tensor
    if HAS_H0:
        h = tl.load(h0_ptr + state_off).to(tl.float32)
    else:
        h = tl.zeros([CPG, N], dtype=tl.float32)
    x_base = x_ptr + pid_b * s_x_b + d0
    dt_base = dt_ptr + pid_b * s_dt_b + d0
    z_base = z_ptr + pid_b * s_z_b + d0
    B_base = B_ptr + pid_b * s_B_b + pid_g * s_B_g
    C_base = C_ptr + pid_b * s_C_b + pid_g * s_C_g
    rs_base = rs_ptr + pid_b * s_rs_b
    y_base = y_ptr + pid_b * s_y_b + d0
    for c in range(n_chunks):
        t = c * T + offs_t
        tmask = t < L
        if STORE_CHUNK_STATES:
            # hc: (b, n_chunks, d, N); the state entering chunk c
            tl.store(hc_ptr + (pid_b * n_chunks + c) * d_inner * N + (d0 + offs_c)[:, None] * N + offs_n[None, :], h)
        delta, dtv, a = _delta_and_decay(dt_base, rs_base, t, tmask, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                         s_dt_l, s_rs_l, offs_c)
        xv = tl.load(x_base + t[:, None] * s_x_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        Bv = tl.load(B_base + t[:, None] * s_B_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        Cv = tl.load(C_base + t[:, None] * s_C_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        u = (delta * xv)[:, :, None] * Bv[:, None, :]  # (T, CPG, N)
        P, hl = tl.associative_scan((a, u), 0, first_order_combine)
        hs = P * h[None, :, :] + hl  # states after each step of the chunk
        yv = tl.sum(hs * Cv[:, None, :], axis=2)  # (T, CPG)
        if HAS_D:
            yv += Dv[None, :] * xv
        if HAS_Z:
            zv = tl.load(z_base + t[:, None] * s_z_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
            yv = yv * zv * tl.sigmoid(zv)
        tl.store(y_base + t[:, None] * s_y_l + offs_c[None, :], yv.to(y_ptr.dtype.element_ty), mask=tmask[:, None])
        # padded rows have a = 1, u = 0, so the last row is the state after the last real token
        h = tl.sum(tl.where((offs_t == T - 1)[:, None, None], hs, 0.0), axis=0)
    tl.store(hT_ptr + state_off, h)


@triton.jit
def _ss_bwd_kernel(
    x_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, rs_ptr, hc_ptr, dy_ptr, dhT_ptr,
    dx_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, n_chunks, d_inner,
    s_x_b, s_x_l, s_dt_b, s_dt_l, s_z_b, s_z_l,
    s_B_b, s_B_l, s_B_g, s_C_b, s_C_l, s_C_g,
    s_rs_b, s_rs_l, s_dy_b, s_dy_l,
    T: tl.constexpr, CPG: tl.constexpr, N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_RESET: tl.constexpr, HAS_DHT: tl.constexpr,
):
    # outputs dx/ddt/dz are contiguous (b, l, d); dB/dC contiguous (b, l, G, N);
    # dA (b, d, N), dD (b, d), dbias (b, d), dh0 (b, d, N) are per-sequence partials, fp32
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    G = d_inner // CPG
    offs_t = tl.arange(0, T)
    offs_c = tl.arange(0, CPG)
    offs_n = tl.arange(0, N)
    d0 = pid_g * CPG
    A = tl.load(A_ptr + (d0 + offs_c)[:, None] * N + offs_n[None, :]).to(tl.float32)
    A2 = A * 1.4426950408889634
    bias = tl.zeros([CPG], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d0 + offs_c).to(tl.float32)
    Dv = tl.zeros([CPG], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d0 + offs_c).to(tl.float32)
    state_off = pid_b * d_inner * N + (d0 + offs_c)[:, None] * N + offs_n[None, :]
    if HAS_DHT:
        gcar = tl.load(dhT_ptr + state_off).to(tl.float32)  # dL/dh at the step after the chunk
    else:
        gcar = tl.zeros([CPG, N], dtype=tl.float32)
    dA_acc = tl.zeros([CPG, N], dtype=tl.float32)
    dD_acc = tl.zeros([CPG], dtype=tl.float32)
    db_acc = tl.zeros([CPG], dtype=tl.float32)
    x_base = x_ptr + pid_b * s_x_b + d0
    dt_base = dt_ptr + pid_b * s_dt_b + d0
    z_base = z_ptr + pid_b * s_z_b + d0
    B_base = B_ptr + pid_b * s_B_b + pid_g * s_B_g
    C_base = C_ptr + pid_b * s_C_b + pid_g * s_C_g
    rs_base = rs_ptr + pid_b * s_rs_b
    dy_base = dy_ptr + pid_b * s_dy_b + d0
    o_bld = pid_b * L * d_inner + d0  # contiguous (b, l, d) outputs
    o_blg = pid_b * L * G * N + pid_g * N  # contiguous (b, l, G, N) outputs
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        t = c * T + offs_t
        tmask = t < L
        # --- recompute the chunk's forward states from the saved chunk-entry state
        h_in = tl.load(hc_ptr + (pid_b * n_chunks + c) * d_inner * N + (d0 + offs_c)[:, None] * N + offs_n[None, :])
        delta, dtv, a = _delta_and_decay(dt_base, rs_base, t, tmask, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                         s_dt_l, s_rs_l, offs_c)
        xv = tl.load(x_base + t[:, None] * s_x_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        Bv = tl.load(B_base + t[:, None] * s_B_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        Cv = tl.load(C_base + t[:, None] * s_C_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        xB = xv[:, :, None] * Bv[:, None, :]  # (T, CPG, N)
        u = delta[:, :, None] * xB
        P, hl = tl.associative_scan((a, u), 0, first_order_combine)
        hs = P * h_in[None, :, :] + hl
        # --- output gate
        dov = tl.load(dy_base + t[:, None] * s_dy_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        if HAS_Z:
            yv = tl.sum(hs * Cv[:, None, :], axis=2)
            if HAS_D:
                yv += Dv[None, :] * xv
            zv = tl.load(z_base + t[:, None] * s_z_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            dyv = dov * zv * sz
            dzv = dov * yv * sz * (1.0 + zv * (1.0 - sz))
            tl.store(dz_ptr + o_bld + t[:, None] * d_inner + offs_c[None, :], dzv.to(dz_ptr.dtype.element_ty),
                     mask=tmask[:, None])
        else:
            dyv = dov
        # --- adjoint recurrence, reversed: g_t = a_{t+1} g_{t+1} + dy_t C_t (a = 1 past the end)
        t1 = t + 1
        _d1, _v1, a_next = _delta_and_decay(dt_base, rs_base, t1, t1 < L, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                            s_dt_l, s_rs_l, offs_c)
        cv = dyv[:, :, None] * Cv[:, None, :]
        Pr, gl = tl.associative_scan((a_next, cv), 0, first_order_combine, reverse=True)
        g = Pr * gcar[None, :, :] + gl  # (T, CPG, N): dL/dh_t
        # --- parameter / input gradients
        ah = hs - u  # a_t h_{t-1} (reset already applied)
        gah = g * ah
        ddelta = tl.sum(g * xB, axis=2) + tl.sum(gah * A[None, :, :], axis=2)  # (T, CPG)
        dA_acc += tl.sum(gah * delta[:, :, None], axis=0)
        gB = tl.sum(g * Bv[:, None, :], axis=2)
        dxv = gB * delta
        if HAS_D:
            dxv += dyv * Dv[None, :]
            dD_acc += tl.sum(dyv * xv, axis=0)
        if SOFTPLUS:
            ddt = ddelta * tl.sigmoid(dtv)
        else:
            ddt = ddelta
        ddt = tl.where(tmask[:, None], ddt, 0.0)
        db_acc += tl.sum(ddt, axis=0)
        dBv = tl.sum(g * (delta * xv)[:, :, None], axis=1)  # (T, N): the group's channels summed
        dCv = tl.sum(hs * dyv[:, :, None], axis=1)
        tl.store(dx_ptr + o_bld + t[:, None] * d_inner + offs_c[None, :], dxv.to(dx_ptr.dtype.element_ty),
                 mask=tmask[:, None])
        tl.store(ddt_ptr + o_bld + t[:, None] * d_inner + offs_c[None, :], ddt.to(ddt_ptr.dtype.element_ty),
                 mask=tmask[:, None])
        tl.store(dB_ptr + o_blg + t[:, None] * (G * N) + offs_n[None, :], dBv.to(dB_ptr.dtype.element_ty),
                 mask=tmask[:, None])
        tl.store(dC_ptr + o_blg + t[:, None] * (G * N) + offs_n[None, :], dCv.to(dC_ptr.dtype.element_ty),
                 mask=tmask[:, None])
        gcar = tl.sum(tl.where((offs_t == 0)[:, None, None], g, 0.0), axis=0)  # dL/dh at the chunk's first step
    # dL/dh_{-1} = a_0 g_0
    zero = tl.zeros([1], dtype=tl.int32)
    _d0, _v0, a0 = _delta_and_decay(dt_base, rs_base, zero, zero < L, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                    s_dt_l, s_rs_l, offs_c)
    tl.store(dh0_ptr + state_off, tl.sum(a0, axis=0) * gcar)
    tl.store(dA_ptr + state_off, dA_acc)
    tl.store(dD_ptr + pid_b * d_inner + d0 + offs_c, dD_acc)
    tl.store(dbias_ptr + pid_b * d_inner + d0 + offs_c, db_acc)


def _config(cpg: int, n: int, chunk_size: int | None, backward: bool, num_warps: int | None = None) -> tuple[int, int]:
    """(T, num_warps).  T is a power of two; the (T, CPG, N) tile lives in registers.

    Defaults: T*CPG*N = 8192 (forward) / 4096 (backward) tile elements, 8 warps.  Not yet
    tuned on a GPU: `thinkfast bench kernels --scan-configs` sweeps them, and the
    THINKFAST_SCAN_CHUNK / THINKFAST_SCAN_WARPS environment variables override them.
    """
    if chunk_size is None and os.environ.get("THINKFAST_SCAN_CHUNK"):
        chunk_size = int(os.environ["THINKFAST_SCAN_CHUNK"])
    if num_warps is None and os.environ.get("THINKFAST_SCAN_WARPS"):
        num_warps = int(os.environ["THINKFAST_SCAN_WARPS"])
    if chunk_size is None:
        elems = 32 * 16 * 16
        chunk_size = max(2, min(64, triton.next_power_of_2(max(1, elems // (cpg * n)))))
        if backward:
            chunk_size = max(2, chunk_size // 2)
    if not is_pow2(chunk_size):
        raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
    tile = chunk_size * cpg * n
    if num_warps is None:
        num_warps = 4 if tile < 4096 else 8
    return chunk_size, num_warps


def supported(x, A, B) -> bool:
    """Shapes and dtypes the kernel handles (dispatch falls back to the reference otherwise)."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or x.dim() != 3 or B.dim() != 4:
        return False
    d, n = A.shape
    groups = B.shape[2]
    return d % groups == 0 and is_pow2(d // groups) and is_pow2(n) and (d // groups) * n <= 4096


def _bc_view(t):
    return last_dim_contiguous(t)


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_state, reset, softplus_flag, chunk_fwd, chunk_bwd,
                num_warps):
        b, L, d = x.shape
        n = A.shape[1]
        G = B.shape[2]
        cpg = d // G
        x, dt, B, C = (last_dim_contiguous(t) for t in (x, dt, B, C))
        z = last_dim_contiguous(z) if z is not None else None
        A = A.float().contiguous()
        Df = D.float().contiguous() if D is not None else None
        biasf = dt_bias.float().contiguous() if dt_bias is not None else None
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        rs = reset.to(torch.uint8).contiguous() if reset is not None else None
        need_grad = any(ctx.needs_input_grad[:9])
        ctx.set_materialize_grads(False)
        T, warps = _config(cpg, n, chunk_fwd, backward=False, num_warps=num_warps)
        n_chunks = triton.cdiv(L, T)
        y = torch.empty(b, L, d, device=x.device, dtype=x.dtype)
        hT = torch.empty(b, d, n, device=x.device, dtype=torch.float32)
        # the backward recomputes with its own chunk length, so save states at that granularity
        Tb, warps_b = _config(cpg, n, chunk_bwd, backward=True, num_warps=num_warps)
        if need_grad and Tb != T:
            T, warps = Tb, warps_b
            n_chunks = triton.cdiv(L, T)
        hc = torch.empty(b, n_chunks, d, n, device=x.device, dtype=torch.float32) if need_grad else hT
        dummy = x
        grid = (G, b)
        _ss_fwd_kernel[grid](
            x, dt, z if z is not None else dummy, B, C, A,
            Df if Df is not None else A, biasf if biasf is not None else A, h0 if h0 is not None else hT,
            rs if rs is not None else dummy,
            y, hT, hc,
            L, n_chunks, d,
            x.stride(0), x.stride(1), dt.stride(0), dt.stride(1),
            z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
            B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
            rs.stride(0) if rs is not None else 0, rs.stride(1) if rs is not None else 0,
            y.stride(0), y.stride(1),
            T=T, CPG=cpg, N=n,
            HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=biasf is not None, SOFTPLUS=bool(softplus_flag),
            HAS_H0=h0 is not None, HAS_RESET=rs is not None, STORE_CHUNK_STATES=need_grad,
            num_warps=warps,
        )
        if need_grad:
            ctx.save_for_backward(x, dt, z, A, B, C, Df, biasf, rs, hc)
            ctx.meta = (T, warps, softplus_flag, initial_state is not None,
                        D.dtype if D is not None else None, dt_bias.dtype if dt_bias is not None else None,
                        B.dtype, C.dtype, initial_state.dtype if initial_state is not None else None)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, z, A, B, C, Df, biasf, rs, hc = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(x)
        T, warps, softplus_flag, has_h0, D_dtype, bias_dtype, B_dtype, C_dtype, h0_dtype = ctx.meta
        b, L, d = x.shape
        n = A.shape[1]
        G = B.shape[2]
        cpg = d // G
        n_chunks = hc.shape[1]
        dy = last_dim_contiguous(dy)
        dx = torch.empty(b, L, d, device=x.device, dtype=x.dtype)
        ddt = torch.empty(b, L, d, device=x.device, dtype=dt.dtype)
        dz = torch.empty(b, L, d, device=x.device, dtype=z.dtype) if z is not None else None
        dB = torch.empty(b, L, G, n, device=x.device, dtype=B_dtype)
        dC = torch.empty(b, L, G, n, device=x.device, dtype=C_dtype)
        dA = torch.empty(b, d, n, device=x.device, dtype=torch.float32)
        dD = torch.empty(b, d, device=x.device, dtype=torch.float32)
        dbias = torch.empty(b, d, device=x.device, dtype=torch.float32)
        dh0 = torch.empty(b, d, n, device=x.device, dtype=torch.float32)
        dhT = dhT.float().contiguous() if dhT is not None else None
        _ss_bwd_kernel[(G, b)](
            x, dt, z if z is not None else x, B, C, A,
            Df if Df is not None else A, biasf if biasf is not None else A, rs if rs is not None else x,
            hc, dy, dhT if dhT is not None else dA,
            dx, ddt, dz if dz is not None else dx, dB, dC, dA, dD, dbias, dh0,
            L, n_chunks, d,
            x.stride(0), x.stride(1), dt.stride(0), dt.stride(1),
            z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
            B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
            rs.stride(0) if rs is not None else 0, rs.stride(1) if rs is not None else 0,
            dy.stride(0), dy.stride(1),
            T=T, CPG=cpg, N=n,
            HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=biasf is not None, SOFTPLUS=bool(softplus_flag),
            HAS_RESET=rs is not None, HAS_DHT=dhT is not None,
            num_warps=warps,
        )
        gA = dA.sum(0)
        gD = dD.sum(0).to(D_dtype) if D_dtype is not None else None
        gbias = dbias.sum(0).to(bias_dtype) if bias_dtype is not None else None
        gh0 = dh0.to(h0_dtype) if has_h0 else None
        return dx, ddt, gA, dB, dC, gD, dz, gbias, gh0, None, None, None, None, None


def selective_scan(
    x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=True, initial_state=None, reset=None,
    return_final_state=False, chunk_size=None, chunk_size_bwd=None, num_warps=None,
):
    """Triton selective scan; arguments and results as `selective_scan_ref`."""
    y, hT = SelectiveScanFn.apply(x, dt, A, B, C, D, z, dt_bias, initial_state, reset, softplus,
                                  chunk_size, chunk_size_bwd, num_warps)
    return (y, hT) if return_final_state else y
