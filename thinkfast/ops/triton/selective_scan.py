"""Mamba-1 selective scan (grouped B/C), forward and backward, as a torch.autograd.Function.

Same function as `thinkfast.ops.reference.selective_scan_ref`.

Chunk-parallel over time (see docs/kernels.md for the figures).  The sequence is cut into
chunks of CL steps; one program owns (B/C group, sequence, chunk), i.e. the CPG channels of
one group (16 at the papers' 1B/3B shapes) for CL steps, carrying its (CPG, N) fp32 state in
registers.  Two in-chunk solvers share the launches below, the chunk combine and this file's
autograd function: "seq" (the default, `selective_scan_seq.py`) walks the chunk one time step
at a time; "tile" (this file's kernels) solves h_t = a_t h_{t-1} + u_t over sub-tiles of T
steps with `tl.associative_scan` over time.

Forward (three launches; one when the sequence fits in one chunk):
  F1 `_ss_fwd_kernel` (LOCAL): every chunk but the last from a zero state -> the chunk's
     local final state and its total decay Q = prod a = exp(A * sum delta), 0 if the chunk
     holds a reset;
  F2 `_ss_fwd_combine_kernel`: h_in[c+1] = Q[c] h_in[c] + hl[c], sequential over the L/CL
     chunks, elementwise over (b, d, N); gives the state entering every chunk and the final
     state;
  F3 `_ss_fwd_kernel`: every chunk again from its true entry state, writing y (D skip and
     z gate fused).
Backward (three launches; one for a single chunk), with the adjoint g_t = dL/dh_t,
g_t = a_{t+1} g_{t+1} + dy_t C_t, and W_c = dL/d(state entering chunk c):
  B1 `_ss_bwd_local_kernel`: every chunk but the first, reverse scan from a zero carry ->
     V_c = a_{s_c} g_{s_c} (local part of W_c);
  B2 `_ss_bwd_combine_kernel`: W_c = Q_c W_{c+1} + V_c, reverse over chunks, W_{n} = dhT;
  B3 `_ss_bwd_kernel`: every chunk walks its T-step sub-tiles in reverse, recomputes their
     forward states from the sub-tile entry states that F3 saved when a gradient is needed
     ((b, L/T, d, N) fp32) and their adjoints from W_{c+1}, and writes dx, ddt, dz, dB, dC (dB/dC are sums over the
     group's channels, which the program owns: no atomics) and per-(sequence, chunk)
     partials of dA, dD, d(dt_bias) (summed in PyTorch).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from thinkfast.ops.triton._common import (
    first_order_combine,
    interpreting,
    is_pow2,
    last_dim_contiguous,
    load_channel_params,
    softplus,
)
from thinkfast.ops.triton.selective_scan_seq import (
    _ss_bwd_local_seq_kernel,
    _ss_bwd_seq_kernel,
    _ss_fwd_seq_kernel,
)

DEFAULT_SOLVER = "seq"
SEQ_SUB_TILE = 4  # the seq solver's sub-tile: fixed by its backward (selective_scan_seq.py)
# B3's register cap: its 5 register-held states take it to ~220 registers uncapped (9 warps per SM); capped at
# 168 it spills ~90 bytes to L1-cached local memory and runs 12 warps per SM.  H200, 3B layer, batch 4 x 4096
# (2026-12-02): 2.44 ms capped at 168, 2.57 at 152, 3.21 at 192, 3.12 uncapped.
SEQ_B3_MAX_REGISTERS = 168


@triton.jit
def _delta_and_decay(dt_ptr, rs_ptr, t, tmask, bias, A2, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     HAS_RESET: tl.constexpr, stride_dt_l, stride_rs_l, offs_c):
    """delta (T, CPG) (0 on masked rows), the raw dt+bias (for softplus'), decay a (T, CPG, N)
    (exactly 1 on masked rows, 0 at resets) and keep (T,) (0. at a reset row, else 1.)."""
    dtv = tl.load(dt_ptr + t[:, None] * stride_dt_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
    if HAS_BIAS:
        dtv = dtv + bias[None, :]
    if SOFTPLUS:
        delta = softplus(dtv)
    else:
        delta = dtv
    delta = tl.where(tmask[:, None], delta, 0.0)
    a = tl.exp2(delta[:, :, None] * A2[None, :, :])
    keep = tl.full(t.shape, 1.0, tl.float32)
    if HAS_RESET:
        r = tl.load(rs_ptr + t * stride_rs_l, mask=tmask, other=0)
        keep = tl.where(r == 0, 1.0, 0.0)
        a = a * keep[:, None, None]
    return delta, dtv, a, keep


@triton.jit
def _ss_fwd_kernel(
    x_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, hin_ptr, rs_ptr,
    y_ptr, hout_ptr, q_ptr, hc_ptr,
    L, CL, d_inner, n_tiles, s_hin_b, s_hin_c,
    s_x_b, s_x_l, s_dt_b, s_dt_l, s_z_b, s_z_l,
    s_B_b, s_B_l, s_B_g, s_C_b, s_C_l, s_C_g,
    s_rs_b, s_rs_l, s_y_b, s_y_l,
    T: tl.constexpr, CPG: tl.constexpr, N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_HIN: tl.constexpr, HAS_RESET: tl.constexpr, LOCAL: tl.constexpr, WRITE_HOUT: tl.constexpr,
    STORE_STATES: tl.constexpr, STORE_Q: tl.constexpr,
):
    """LOCAL: zero entry state, write the chunk's final local state (hout) and decay (q),
    both (b, n_chunks, d, N).  Else: entry state from hin (strides s_hin_b, s_hin_c), write
    y, when WRITE_HOUT the final state into hout (b, d, N), and when STORE_STATES the state
    entering every T-step sub-tile into hc (b, n_tiles, d, N)."""
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
    offs_t = tl.arange(0, T)
    offs_c = tl.arange(0, CPG)
    offs_n = tl.arange(0, N)
    d0 = pid_g * CPG
    dn_off, A, A2, bias, Dv = load_channel_params(A_ptr, bias_ptr, D_ptr, d0, offs_c, offs_n, N, HAS_BIAS, HAS_D)
    if HAS_HIN:
        h = tl.load(hin_ptr + pid_b * s_hin_b + pid_c * s_hin_c + dn_off).to(tl.float32)
    else:
        h = tl.zeros([CPG, N], dtype=tl.float32)
    x_base = x_ptr + pid_b * s_x_b + d0
    dt_base = dt_ptr + pid_b * s_dt_b + d0
    z_base = z_ptr + pid_b * s_z_b + d0
    B_base = B_ptr + pid_b * s_B_b + pid_g * s_B_g
    C_base = C_ptr + pid_b * s_C_b + pid_g * s_C_g
    rs_base = rs_ptr + pid_b * s_rs_b
    y_base = y_ptr + pid_b * s_y_b + d0
    sdelta = tl.zeros([CPG], dtype=tl.float32)
    kp = tl.min(tl.full([T], 1.0, tl.float32), axis=0)
    t0 = pid_c * CL
    n_sub = tl.cdiv(tl.minimum(t0 + CL, L) - t0, T)
    for si in range(n_sub):
        s = si * T
        t = t0 + s + offs_t
        tmask = t < L
        if STORE_STATES:
            # hc (b, n_tiles, d, N): the state entering every sub-tile, for the backward
            tl.store(hc_ptr + ((pid_b * n_tiles + (t0 + s) // T) * d_inner) * N + dn_off, h)
        delta, dtv, a, keep = _delta_and_decay(dt_base, rs_base, t, tmask, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                               s_dt_l, s_rs_l, offs_c)
        xv = tl.load(x_base + t[:, None] * s_x_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        Bv = tl.load(B_base + t[:, None] * s_B_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        u = (delta * xv)[:, :, None] * Bv[:, None, :]  # (T, CPG, N)
        P, hl = tl.associative_scan((a, u), 0, first_order_combine)
        hs = P * h[None, :, :] + hl  # states after each step of the sub-tile
        if LOCAL or STORE_Q:
            sdelta += tl.sum(delta, axis=0)
            kp = kp * tl.min(keep, axis=0)
        if not LOCAL:
            Cv = tl.load(C_base + t[:, None] * s_C_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
            yv = tl.sum(hs * Cv[:, None, :], axis=2)  # (T, CPG)
            if HAS_D:
                yv += Dv[None, :] * xv
            if HAS_Z:
                zv = tl.load(z_base + t[:, None] * s_z_l + offs_c[None, :], mask=tmask[:, None],
                             other=0.0).to(tl.float32)
                yv = yv * zv * tl.sigmoid(zv)
            tl.store(y_base + t[:, None] * s_y_l + offs_c[None, :], yv.to(y_ptr.dtype.element_ty), mask=tmask[:, None])
        # padded rows have a = 1, u = 0, so the last row is the state after the last real token
        h = tl.sum(tl.where((offs_t == T - 1)[:, None, None], hs, 0.0), axis=0)
    if LOCAL:
        o = pid_b * s_hin_b + pid_c * s_hin_c + dn_off  # hout, q: (b, n_chunks, d, N) like hin
        tl.store(hout_ptr + o, h)
        tl.store(q_ptr + o, tl.exp2(A2 * sdelta[:, None]) * kp)
    else:
        if STORE_Q:  # the backward needs every chunk's decay (F1 only covers chunks 0..n-2)
            tl.store(q_ptr + pid_b * s_hin_b + pid_c * s_hin_c + dn_off, tl.exp2(A2 * sdelta[:, None]) * kp)
        if WRITE_HOUT:
            if pid_c == n_chunks - 1:
                tl.store(hout_ptr + pid_b * d_inner * N + dn_off, h)


@triton.jit
def _ss_fwd_combine_kernel(hl_ptr, q_ptr, h0_ptr, n_chunks, DN, HAS_H0: tl.constexpr, BLOCK: tl.constexpr):
    """hl (b, n_chunks, DN) holds the local final states of chunks 0..n-2 on entry and the
    state entering every chunk on exit."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < DN
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * DN + offs, mask=m, other=0.0)
    else:
        h = tl.zeros([BLOCK], dtype=tl.float32)
    base = pid_b * n_chunks * DN + offs
    for c in range(n_chunks - 1):
        hl = tl.load(hl_ptr + base + c * DN, mask=m, other=0.0)
        q = tl.load(q_ptr + base + c * DN, mask=m, other=0.0)
        tl.store(hl_ptr + base + c * DN, h, mask=m)
        h = q * h + hl
    tl.store(hl_ptr + base + (n_chunks - 1) * DN, h, mask=m)


@triton.jit
def _dyv_tile(dy_base, z_base, t, tmask, s_dy_l, s_z_l, offs_c, HAS_Z: tl.constexpr):
    dov = tl.load(dy_base + t[:, None] * s_dy_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
    zv = dov
    sz = dov
    if HAS_Z:
        zv = tl.load(z_base + t[:, None] * s_z_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        sz = tl.sigmoid(zv)
        dyv = dov * zv * sz
    else:
        dyv = dov
    return dov, dyv, zv, sz


@triton.jit
def _ss_bwd_local_kernel(
    dt_ptr, z_ptr, C_ptr, A_ptr, bias_ptr, rs_ptr, dy_ptr, v_ptr,
    L, CL, d_inner,
    s_dt_b, s_dt_l, s_z_b, s_z_l, s_C_b, s_C_l, s_C_g, s_rs_b, s_rs_l, s_dy_b, s_dy_l,
    T: tl.constexpr, CPG: tl.constexpr, N: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_RESET: tl.constexpr,
):
    """Chunks 1..n-1: V_c = a_{s_c} g_{s_c} with the adjoint started from zero at the chunk end,
    written to v (b, n_chunks, d, N) at chunk c."""
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2) + 1
    n_chunks = tl.num_programs(2) + 1
    offs_t = tl.arange(0, T)
    offs_c = tl.arange(0, CPG)
    offs_n = tl.arange(0, N)
    d0 = pid_g * CPG
    # B1 has no D: A_ptr stands in for it, never read (HAS_D=False)
    dn_off, A, A2, bias, _ = load_channel_params(A_ptr, bias_ptr, A_ptr, d0, offs_c, offs_n, N, HAS_BIAS, False)
    dt_base = dt_ptr + pid_b * s_dt_b + d0
    z_base = z_ptr + pid_b * s_z_b + d0
    C_base = C_ptr + pid_b * s_C_b + pid_g * s_C_g
    rs_base = rs_ptr + pid_b * s_rs_b
    dy_base = dy_ptr + pid_b * s_dy_b + d0
    t0 = pid_c * CL
    t_end = tl.minimum(t0 + CL, L)
    gcar = tl.zeros([CPG, N], dtype=tl.float32)
    n_sub = tl.cdiv(t_end - t0, T)
    for i in range(n_sub):
        t = t0 + (n_sub - 1 - i) * T + offs_t
        tmask = t < t_end
        t1 = t + 1
        _d1, _v1, a_next, _k1 = _delta_and_decay(dt_base, rs_base, t1, t1 < t_end, bias, A2, HAS_BIAS, SOFTPLUS,
                                                 HAS_RESET, s_dt_l, s_rs_l, offs_c)
        dov, dyv, zv, sz = _dyv_tile(dy_base, z_base, t, tmask, s_dy_l, s_z_l, offs_c, HAS_Z)
        Cv = tl.load(C_base + t[:, None] * s_C_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        cv = dyv[:, :, None] * Cv[:, None, :]
        Pr, gl = tl.associative_scan((a_next, cv), 0, first_order_combine, reverse=True)
        g = Pr * gcar[None, :, :] + gl
        gcar = tl.sum(tl.where((offs_t == 0)[:, None, None], g, 0.0), axis=0)
    ts = t0 + tl.zeros([1], dtype=tl.int32)
    _d0, _v0, a0, _k0 = _delta_and_decay(dt_base, rs_base, ts, ts < L, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                         s_dt_l, s_rs_l, offs_c)
    tl.store(v_ptr + (pid_b * n_chunks + pid_c) * d_inner * N + dn_off, tl.sum(a0, axis=0) * gcar)


@triton.jit
def _ss_bwd_combine_kernel(v_ptr, q_ptr, dhT_ptr, n_chunks, DN, HAS_DHT: tl.constexpr, BLOCK: tl.constexpr):
    """v (b, n_chunks, DN): V_c (c >= 1) on entry, W_{c+1} (the adjoint carried into chunk c
    from its right, dhT for the last) on exit.  W_c = Q_c W_{c+1} + V_c."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < DN
    if HAS_DHT:
        w = tl.load(dhT_ptr + pid_b * DN + offs, mask=m, other=0.0)
    else:
        w = tl.zeros([BLOCK], dtype=tl.float32)
    base = pid_b * n_chunks * DN + offs
    for i in range(n_chunks - 1):
        c = n_chunks - 1 - i
        v = tl.load(v_ptr + base + c * DN, mask=m, other=0.0)
        q = tl.load(q_ptr + base + c * DN, mask=m, other=0.0)
        tl.store(v_ptr + base + c * DN, w, mask=m)
        w = q * w + v
    tl.store(v_ptr + base, w, mask=m)


@triton.jit
def _ss_bwd_kernel(
    x_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, rs_ptr, hc_ptr, dy_ptr, w_ptr,
    dx_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, CL, d_inner, n_tiles, s_w_b, s_w_c,
    s_x_b, s_x_l, s_dt_b, s_dt_l, s_z_b, s_z_l,
    s_B_b, s_B_l, s_B_g, s_C_b, s_C_l, s_C_g,
    s_rs_b, s_rs_l, s_dy_b, s_dy_l,
    T: tl.constexpr, CPG: tl.constexpr, N: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_RESET: tl.constexpr, HAS_W: tl.constexpr,
):
    # dx/ddt/dz contiguous (b, l, d); dB/dC contiguous (b, l, G, N); dA (b, nc, d, N),
    # dD, dbias (b, nc, d) per-(sequence, chunk) partials, fp32; dh0 (b, d, N) from chunk 0
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
    G = d_inner // CPG
    offs_t = tl.arange(0, T)
    offs_c = tl.arange(0, CPG)
    offs_n = tl.arange(0, N)
    d0 = pid_g * CPG
    dn_off, A, A2, bias, Dv = load_channel_params(A_ptr, bias_ptr, D_ptr, d0, offs_c, offs_n, N, HAS_BIAS, HAS_D)
    if HAS_W:
        gcar = tl.load(w_ptr + pid_b * s_w_b + pid_c * s_w_c + dn_off).to(tl.float32)
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
    o_bld = pid_b * L * d_inner + d0
    o_blg = pid_b * L * G * N + pid_g * N
    t0 = pid_c * CL
    t_end = tl.minimum(t0 + CL, L)
    n_sub = tl.cdiv(t_end - t0, T)
    for i in range(n_sub):
        s = n_sub - 1 - i
        t = t0 + s * T + offs_t
        tmask = t < t_end
        # the sub-tile's entry state, saved by the forward
        h = tl.load(hc_ptr + ((pid_b * n_tiles + (t0 + s * T) // T) * d_inner) * N + dn_off)
        delta, dtv, a, keep = _delta_and_decay(dt_base, rs_base, t, tmask, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                               s_dt_l, s_rs_l, offs_c)
        xv = tl.load(x_base + t[:, None] * s_x_l + offs_c[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        Bv = tl.load(B_base + t[:, None] * s_B_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        Cv = tl.load(C_base + t[:, None] * s_C_l + offs_n[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
        xB = xv[:, :, None] * Bv[:, None, :]  # (T, CPG, N)
        u = delta[:, :, None] * xB
        P, hl = tl.associative_scan((a, u), 0, first_order_combine)
        hs = P * h[None, :, :] + hl
        dov, dyv, zv, sz = _dyv_tile(dy_base, z_base, t, tmask, s_dy_l, s_z_l, offs_c, HAS_Z)
        if HAS_Z:
            yv = tl.sum(hs * Cv[:, None, :], axis=2)
            if HAS_D:
                yv += Dv[None, :] * xv
            dzv = dov * yv * sz * (1.0 + zv * (1.0 - sz))
            tl.store(dz_ptr + o_bld + t[:, None] * d_inner + offs_c[None, :], dzv.to(dz_ptr.dtype.element_ty),
                     mask=tmask[:, None])
        # adjoint, reversed: g_t = a_{t+1} g_{t+1} + dy_t C_t (a = 1 past the chunk end)
        t1 = t + 1
        _d1, _v1, a_next, _k1 = _delta_and_decay(dt_base, rs_base, t1, t1 < t_end, bias, A2, HAS_BIAS, SOFTPLUS,
                                                 HAS_RESET, s_dt_l, s_rs_l, offs_c)
        cv = dyv[:, :, None] * Cv[:, None, :]
        Pr, gl = tl.associative_scan((a_next, cv), 0, first_order_combine, reverse=True)
        g = Pr * gcar[None, :, :] + gl  # (T, CPG, N): dL/dh_t
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
        gcar = tl.sum(tl.where((offs_t == 0)[:, None, None], g, 0.0), axis=0)  # dL/dh at the sub-tile's first step
    if pid_c == 0:
        zero = tl.zeros([1], dtype=tl.int32)
        _d0, _v0, a0, _k0 = _delta_and_decay(dt_base, rs_base, zero, zero < L, bias, A2, HAS_BIAS, SOFTPLUS,
                                             HAS_RESET, s_dt_l, s_rs_l, offs_c)
        tl.store(dh0_ptr + pid_b * d_inner * N + dn_off, tl.sum(a0, axis=0) * gcar)
    o = (pid_b * n_chunks + pid_c) * d_inner
    tl.store(dA_ptr + o * N + dn_off, dA_acc)
    tl.store(dD_ptr + o + d0 + offs_c, dD_acc)
    tl.store(dbias_ptr + o + d0 + offs_c, db_acc)


def _env_int(name):
    v = os.environ.get(name)
    return int(v) if v else None


def _b3_max_registers(device) -> int | None:
    """SEQ_B3_MAX_REGISTERS on CUDA (THINKFAST_SCAN_B3_MAXNREG overrides it, 0 = no cap); None where the
    option does not exist (the interpreter, ROCm)."""
    if interpreting() or device.type != "cuda" or torch.version.hip:
        return None
    env = os.environ.get("THINKFAST_SCAN_B3_MAXNREG")
    return (int(env) or None) if env else SEQ_B3_MAX_REGISTERS


SOLVERS = ("seq", "tile")


def resolve_solver(solver: str | None = None) -> str:
    """The in-chunk solver a scan call uses: the argument, else THINKFAST_SCAN_SOLVER, else DEFAULT_SOLVER."""
    solver = solver or os.environ.get("THINKFAST_SCAN_SOLVER") or DEFAULT_SOLVER
    if solver not in SOLVERS:
        raise ValueError(f"scan solver must be one of {SOLVERS}, got {solver!r}")
    return solver


def _config(cpg: int, n: int, length: int, batch: int, groups: int, chunk_size=None, chunk_len=None,
            num_warps=None, solver=None) -> tuple[str, int, int, int]:
    """(solver, T, CL, num_warps): the in-chunk solver, sub-tile T (power of two), chunk length
    CL (a multiple of T: one program per chunk) and warps.

    solver "tile" (`tl.associative_scan` over (T, CPG, N) tiles): T*CPG*N = 2048 tile elements
    (T = 8 at CPG = N = 16), 2 warps, CL = 8 sub-tiles.  solver "seq" (one time step at a time,
    `selective_scan_seq.py`): T = 4, always (the forward saves the state every 4 steps and the backward
    holds one sub-tile's 5 states in registers), 1 warp, CL = 64 sub-tiles.  Either way CL is shortened
    until there are enough programs to fill the GPU.  Overrides: arguments, or THINKFAST_SCAN_SOLVER /
    THINKFAST_SCAN_CHUNK / THINKFAST_SCAN_CHUNK_LEN / THINKFAST_SCAN_WARPS.
    """
    solver = resolve_solver(solver)
    chunk_size = chunk_size or _env_int("THINKFAST_SCAN_CHUNK")
    chunk_len = chunk_len or _env_int("THINKFAST_SCAN_CHUNK_LEN")
    num_warps = num_warps or _env_int("THINKFAST_SCAN_WARPS")
    if solver == "seq" and chunk_size not in (None, SEQ_SUB_TILE):
        raise ValueError(f"the seq scan solver's sub-tile is {SEQ_SUB_TILE} (its backward keeps a sub-tile's states "
                         f"in registers), got chunk_size={chunk_size}; leave it unset or use solver='tile'")
    if chunk_size is None:
        chunk_size = SEQ_SUB_TILE if solver == "seq" else max(2, min(64, triton.next_power_of_2(max(1, 2048 // (cpg * n)))))
    if not is_pow2(chunk_size):
        raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
    if chunk_len is None:
        subs = 64 if solver == "seq" else 8  # seq: CL = 256, as before the sub-tile shrank from 16 to 4
        # at least ~16 programs per SM-sized slot (assume ~132 SMs) when the sequence allows
        while subs > 1 and batch * groups * triton.cdiv(length, subs * chunk_size) < 2048:
            subs //= 2
        chunk_len = subs * chunk_size
    if chunk_len % chunk_size:
        raise ValueError(f"chunk_len ({chunk_len}) must be a multiple of chunk_size ({chunk_size})")
    if num_warps is None:
        tile = chunk_size * cpg * n
        num_warps = 1 if solver == "seq" else (2 if tile <= 2048 else (4 if tile <= 4096 else 8))
    return solver, chunk_size, chunk_len, num_warps


def supported(x, A, B) -> bool:
    """Shapes and dtypes the kernel handles (dispatch falls back to the reference otherwise)."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or x.dim() != 3 or B.dim() != 4:
        return False
    d, n = A.shape
    groups = B.shape[2]
    return d % groups == 0 and is_pow2(d // groups) and is_pow2(n) and (d // groups) * n <= 4096


def _combine_grid(b, dn, block=1024):
    return (b, triton.cdiv(dn, block)), block


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_state, reset, softplus_flag, chunk_size, chunk_len,
                num_warps, solver):
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
        solver, T, CL, warps = _config(cpg, n, L, b, G, chunk_size, chunk_len, num_warps, solver)
        fwd_kernel = _ss_fwd_seq_kernel if solver == "seq" else _ss_fwd_kernel
        n_chunks = triton.cdiv(L, CL)
        n_tiles = triton.cdiv(L, T)
        dev = x.device
        y = torch.empty(b, L, d, device=dev, dtype=x.dtype)
        hT = torch.empty(b, d, n, device=dev, dtype=torch.float32)
        hc = torch.empty(b, n_tiles, d, n, device=dev, dtype=torch.float32) if need_grad else hT
        zz = z if z is not None else x
        common = dict(T=T, CPG=cpg, N=n, HAS_D=Df is not None, HAS_Z=z is not None, HAS_BIAS=biasf is not None,
                      SOFTPLUS=bool(softplus_flag), HAS_RESET=rs is not None, num_warps=warps)
        strides = (x.stride(0), x.stride(1), dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1),
                   B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
                   rs.stride(0) if rs is not None else 0, rs.stride(1) if rs is not None else 0,
                   y.stride(0), y.stride(1))
        Dp = Df if Df is not None else A
        bp = biasf if biasf is not None else A
        rp = rs if rs is not None else x
        Q = None
        if n_chunks > 1:
            # F1: local final states and decays of chunks 0..n-2; F2: entry state of every chunk
            hin = torch.empty(b, n_chunks, d, n, device=dev, dtype=torch.float32)
            Q = torch.empty(b, n_chunks, d, n, device=dev, dtype=torch.float32)
            fwd_kernel[(G, b, n_chunks - 1)](
                x, dt, zz, B, C, A, Dp, bp, hT, rp, y, hin, Q, hT,
                L, CL, d, n_tiles, n_chunks * d * n, d * n, *strides,
                HAS_HIN=False, LOCAL=True, WRITE_HOUT=False, STORE_STATES=False, STORE_Q=False, **common)
            grid, block = _combine_grid(b, d * n)
            _ss_fwd_combine_kernel[grid](hin, Q, h0 if h0 is not None else hT, n_chunks, d * n,
                                         HAS_H0=h0 is not None, BLOCK=block)
            hin_args = (hin, n_chunks * d * n, d * n)
        elif h0 is not None:
            hin_args = (h0, d * n, 0)
        else:
            hin_args = (None, 0, 0)
        fwd_kernel[(G, b, n_chunks)](
            x, dt, zz, B, C, A, Dp, bp, hin_args[0] if hin_args[0] is not None else hT, rp, y, hT,
            Q if Q is not None else hT, hc,
            L, CL, d, n_tiles, hin_args[1], hin_args[2], *strides,
            HAS_HIN=hin_args[0] is not None, LOCAL=False, WRITE_HOUT=True, STORE_STATES=need_grad,
            STORE_Q=need_grad and Q is not None, **common)
        if need_grad:
            ctx.save_for_backward(x, dt, z, A, B, C, Df, biasf, rs, hc, Q)
            ctx.meta = (solver, T, CL, warps, softplus_flag, initial_state is not None,
                        D.dtype if D is not None else None, dt_bias.dtype if dt_bias is not None else None,
                        B.dtype, C.dtype, initial_state.dtype if initial_state is not None else None)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, dt, z, A, B, C, Df, biasf, rs, hc, Q = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(x)
        solver, T, CL, warps, softplus_flag, has_h0, D_dtype, bias_dtype, B_dtype, C_dtype, h0_dtype = ctx.meta
        b, L, d = x.shape
        n = A.shape[1]
        G = B.shape[2]
        cpg = d // G
        n_chunks = triton.cdiv(L, CL)
        n_tiles = hc.shape[1]
        dev = x.device
        dy = last_dim_contiguous(dy)
        dx = torch.empty(b, L, d, device=dev, dtype=x.dtype)
        ddt = torch.empty(b, L, d, device=dev, dtype=dt.dtype)
        dz = torch.empty(b, L, d, device=dev, dtype=z.dtype) if z is not None else None
        dB = torch.empty(b, L, G, n, device=dev, dtype=B_dtype)
        dC = torch.empty(b, L, G, n, device=dev, dtype=C_dtype)
        dA = torch.empty(b, n_chunks, d, n, device=dev, dtype=torch.float32)
        dD = torch.empty(b, n_chunks, d, device=dev, dtype=torch.float32)
        dbias = torch.empty(b, n_chunks, d, device=dev, dtype=torch.float32)
        dh0 = torch.empty(b, d, n, device=dev, dtype=torch.float32)
        dhT = dhT.float().contiguous() if dhT is not None else None
        zz = z if z is not None else x
        Dp = Df if Df is not None else A
        bp = biasf if biasf is not None else A
        rp = rs if rs is not None else x
        rs_strides = (rs.stride(0), rs.stride(1)) if rs is not None else (0, 0)
        flags = dict(T=T, CPG=cpg, N=n, HAS_Z=z is not None, HAS_BIAS=biasf is not None,
                     SOFTPLUS=bool(softplus_flag), HAS_RESET=rs is not None, num_warps=warps)
        if n_chunks > 1:
            # B1: local adjoint carries of chunks 1..n-1; B2: W_{c+1} for every chunk
            W = torch.empty(b, n_chunks, d, n, device=dev, dtype=torch.float32)
            local_kernel = _ss_bwd_local_seq_kernel if solver == "seq" else _ss_bwd_local_kernel
            local_kernel[(G, b, n_chunks - 1)](
                dt, zz, C, A, bp, rp, dy, W, L, CL, d,
                dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1), C.stride(0), C.stride(1), C.stride(2),
                *rs_strides, dy.stride(0), dy.stride(1), **flags)
            grid, block = _combine_grid(b, d * n)
            _ss_bwd_combine_kernel[grid](W, Q, dhT if dhT is not None else W, n_chunks, d * n,
                                         HAS_DHT=dhT is not None, BLOCK=block)
            w_args = (W, n_chunks * d * n, d * n)
        elif dhT is not None:
            w_args = (dhT, d * n, 0)
        else:
            w_args = (None, 0, 0)
        args = (x, dt, zz, B, C, A, Dp, bp, rp, hc, dy, w_args[0] if w_args[0] is not None else dA,
                dx, ddt, dz if dz is not None else dx, dB, dC, dA, dD, dbias, dh0,
                L, CL, d, n_tiles, w_args[1], w_args[2],
                x.stride(0), x.stride(1), dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1),
                B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
                *rs_strides, dy.stride(0), dy.stride(1))
        bwd_kernel = _ss_bwd_seq_kernel if solver == "seq" else _ss_bwd_kernel
        launch = dict(maxnreg=maxnreg) if solver == "seq" and (maxnreg := _b3_max_registers(x.device)) else {}
        bwd_kernel[(G, b, n_chunks)](*args, HAS_D=Df is not None, HAS_W=w_args[0] is not None, **flags, **launch)
        gA = dA.sum((0, 1))
        gD = dD.sum((0, 1)).to(D_dtype) if D_dtype is not None else None
        gbias = dbias.sum((0, 1)).to(bias_dtype) if bias_dtype is not None else None
        gh0 = dh0.to(h0_dtype) if has_h0 else None
        return dx, ddt, gA, dB, dC, gD, dz, gbias, gh0, None, None, None, None, None, None


def selective_scan(
    x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=True, initial_state=None, reset=None,
    return_final_state=False, chunk_size=None, chunk_len=None, num_warps=None, chunk_size_bwd=None, solver=None,
):
    """Triton selective scan; arguments and results as `selective_scan_ref`.

    `solver`: "seq" (one time step at a time, the default) or "tile" (associative scan over
    (T, CPG, N) tiles); `chunk_size`: sub-tile length T (power of two); `chunk_len`: time steps
    per program (a multiple of T); `num_warps`.  `chunk_size_bwd` is accepted for compatibility and must
    equal `chunk_size` if given (forward and backward share the sub-tile grid).
    """
    if chunk_size_bwd is not None and chunk_size is not None and chunk_size_bwd != chunk_size:
        raise ValueError("chunk_size_bwd must equal chunk_size (the backward reuses the forward's sub-tile states)")
    chunk_size = chunk_size or chunk_size_bwd
    y, hT = SelectiveScanFn.apply(x, dt, A, B, C, D, z, dt_bias, initial_state, reset, softplus,
                                  chunk_size, chunk_len, num_warps, solver)
    return (y, hT) if return_final_state else y
