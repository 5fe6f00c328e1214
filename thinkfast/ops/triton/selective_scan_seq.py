"""Step-sequential in-chunk solvers for the Mamba-1 selective scan (`solver="seq"`).

Same chunk-parallel scheme, same launches and same arguments as the tile solvers in
`selective_scan.py` (F1/F3 `_ss_fwd_kernel`, B1 `_ss_bwd_local_kernel`, B3 `_ss_bwd_kernel`);
only the work inside a chunk differs.  A tile solver solves (T, CPG, N) tiles with
`tl.associative_scan`; these walk the chunk one time step at a time with the program's
(CPG, N) fp32 state in registers: about 5 flops and one exp per state element and step, no
scan tree and no (T, CPG, N) broadcasts.

The backward needs, at each step of its reverse walk, the forward state h_{t-1} and the
adjoint g_t.  B3 therefore walks each T-step sub-tile twice: forward from the sub-tile's entry
state (saved by F3 every T steps, as for the tile solver), keeping the T + 1 states in registers,
then in reverse.  T is fixed at 4 so that five (CPG, N) states fit in registers; an earlier version
(T = 16) wrote them to a per-program scratch in global memory and read them back, ~6 GB of traffic
per call at the 3B layer, which is what its B3 waited on.  (Recovering h_{t-1} = (h_t - u_t) / a_t
in reverse would be unstable where a_t is small.)
"""

from __future__ import annotations

import triton
import triton.language as tl

from thinkfast.ops.triton._common import load_channel_params, sigmoid, softplus


@triton.jit
def _step_delta_decay(dt_base, rs_base, t, bias, A2, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                      HAS_RESET: tl.constexpr, s_dt_l, s_rs_l, offs_c):
    """One step t: delta (CPG,), raw dt + bias (CPG,), decay a (CPG, N) (0 at a reset) and keep
    (a 0-d 1. or 0.)."""
    dtv = tl.load(dt_base + t * s_dt_l + offs_c).to(tl.float32)
    if HAS_BIAS:
        dtv = dtv + bias
    if SOFTPLUS:
        delta = softplus(dtv)
    else:
        delta = dtv
    a = tl.exp2(delta[:, None] * A2)
    keep = tl.sum(tl.full([1], 1.0, tl.float32), axis=0)
    if HAS_RESET:
        r = tl.load(rs_base + t * s_rs_l)
        keep = tl.where(r == 0, 1.0, 0.0)
        a = a * keep
    return delta, dtv, a, keep


@triton.jit
def _step_dy(dy_base, z_base, t, s_dy_l, s_z_l, offs_c, HAS_Z: tl.constexpr):
    """dy of step t (CPG,) and, with a z gate, dy through the gate, z and sigmoid(z)."""
    dov = tl.load(dy_base + t * s_dy_l + offs_c).to(tl.float32)
    zv = dov
    sz = dov
    if HAS_Z:
        zv = tl.load(z_base + t * s_z_l + offs_c).to(tl.float32)
        sz = sigmoid(zv)
        dyv = dov * zv * sz
    else:
        dyv = dov
    return dov, dyv, zv, sz


@triton.jit
def _ss_fwd_seq_kernel(
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
    """F1 (LOCAL) and F3, arguments and outputs as `_ss_fwd_kernel`."""
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
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
    kp = tl.sum(tl.full([1], 1.0, tl.float32), axis=0)
    t0 = pid_c * CL
    t_end = tl.minimum(t0 + CL, L)
    n_sub = tl.cdiv(t_end - t0, T)
    for si in range(n_sub):
        ts = t0 + si * T
        if STORE_STATES:
            # hc (b, n_tiles, d, N): the state entering every sub-tile, for the backward
            tl.store(hc_ptr + ((pid_b * n_tiles + ts // T) * d_inner) * N + dn_off, h)
        for t in range(ts, tl.minimum(ts + T, t_end)):
            delta, dtv, a, keep = _step_delta_decay(dt_base, rs_base, t, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                                    s_dt_l, s_rs_l, offs_c)
            xv = tl.load(x_base + t * s_x_l + offs_c).to(tl.float32)
            Bv = tl.load(B_base + t * s_B_l + offs_n).to(tl.float32)
            h = a * h + (delta * xv)[:, None] * Bv[None, :]  # (CPG, N)
            if LOCAL or STORE_Q:
                sdelta += delta
                kp = kp * keep
            if not LOCAL:
                Cv = tl.load(C_base + t * s_C_l + offs_n).to(tl.float32)
                yv = tl.sum(h * Cv[None, :], axis=1)  # (CPG,)
                if HAS_D:
                    yv += Dv * xv
                if HAS_Z:
                    zv = tl.load(z_base + t * s_z_l + offs_c).to(tl.float32)
                    yv = yv * zv * sigmoid(zv)
                tl.store(y_base + t * s_y_l + offs_c, yv.to(y_ptr.dtype.element_ty))
    if LOCAL:
        o = pid_b * s_hin_b + pid_c * s_hin_c + dn_off  # hout, q: (b, n_chunks, d, N) like hin
        tl.store(hout_ptr + o, h)
        tl.store(q_ptr + o, tl.exp2(A2 * sdelta[:, None]) * kp)
    else:
        if STORE_Q:
            tl.store(q_ptr + pid_b * s_hin_b + pid_c * s_hin_c + dn_off, tl.exp2(A2 * sdelta[:, None]) * kp)
        if WRITE_HOUT:
            if pid_c == n_chunks - 1:
                tl.store(hout_ptr + pid_b * d_inner * N + dn_off, h)


@triton.jit
def _ss_bwd_local_seq_kernel(
    dt_ptr, z_ptr, C_ptr, A_ptr, bias_ptr, rs_ptr, dy_ptr, v_ptr,
    L, CL, d_inner,
    s_dt_b, s_dt_l, s_z_b, s_z_l, s_C_b, s_C_l, s_C_g, s_rs_b, s_rs_l, s_dy_b, s_dy_l,
    T: tl.constexpr, CPG: tl.constexpr, N: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_RESET: tl.constexpr,
):
    """B1, as `_ss_bwd_local_kernel`: V_c = a_{s_c} g_{s_c} of chunks 1..n-1 from a zero carry."""
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2) + 1
    n_chunks = tl.num_programs(2) + 1
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
    g = tl.zeros([CPG, N], dtype=tl.float32)
    a_next = tl.full([CPG, N], 1.0, tl.float32)  # a_{t+1}: 1 past the chunk end
    for i in range(t_end - t0):
        t = t_end - 1 - i
        delta, dtv, a, keep = _step_delta_decay(dt_base, rs_base, t, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                                s_dt_l, s_rs_l, offs_c)
        dov, dyv, zv, sz = _step_dy(dy_base, z_base, t, s_dy_l, s_z_l, offs_c, HAS_Z)
        Cv = tl.load(C_base + t * s_C_l + offs_n).to(tl.float32)
        g = a_next * g + dyv[:, None] * Cv[None, :]
        a_next = a
    tl.store(v_ptr + (pid_b * n_chunks + pid_c) * d_inner * N + dn_off, a_next * g)


@triton.jit
def _masked_step_inputs(t, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l, rs_base, s_rs_l, bias, A2, offs_c,
                        offs_n, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_RESET: tl.constexpr):
    """Step t's row (min(t, L - 1)), whether t < t_end, its delta and decay (0 and 1 past t_end: the step then
    changes nothing), dt, x and B, for B3's forward re-walk and reverse walk."""
    valid = t < t_end
    tr = tl.minimum(t, L - 1)
    delta, dtv, a, keep = _step_delta_decay(dt_base, rs_base, tr, bias, A2, HAS_BIAS, SOFTPLUS, HAS_RESET,
                                            s_dt_l, s_rs_l, offs_c)
    delta = tl.where(valid, delta, 0.0)
    a = tl.where(valid, a, 1.0)
    xv = tl.load(x_base + tr * s_x_l + offs_c).to(tl.float32)
    Bv = tl.load(B_base + tr * s_B_l + offs_n).to(tl.float32)
    return tr, valid, delta, dtv, a, xv, Bv


@triton.jit
def _fwd_step(h, t, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l, rs_base, s_rs_l, bias, A2, offs_c, offs_n,
              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_RESET: tl.constexpr):
    """h after step t from h before it; a step at or past t_end leaves h as it is (it reads row min(t, L - 1))."""
    tr, valid, delta, dtv, a, xv, Bv = _masked_step_inputs(t, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l,
                                                           rs_base, s_rs_l, bias, A2, offs_c, offs_n, HAS_BIAS,
                                                           SOFTPLUS, HAS_RESET)
    return a * h + (delta * xv)[:, None] * Bv[None, :]


@triton.jit
def _bwd_step(t, h, h_prev, g, a_next, dA_acc, dD_acc, db_acc, t_end, L,
              x_base, s_x_l, dt_base, s_dt_l, z_base, s_z_l, B_base, s_B_l, C_base, s_C_l, rs_base, s_rs_l,
              dy_base, s_dy_l, dx_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, o_bld, o_blg, d_inner, G,
              bias, A, A2, Dv, offs_c, offs_n, N: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_RESET: tl.constexpr):
    """One reverse step at t, h = h_t, h_prev = h_{t-1}: the adjoint g_t = a_{t+1} g_{t+1} + dy_t C_t, the
    step's dx, ddt, dz, dB, dC (stored) and the dA, dD, d(bias) partials (accumulated).  A step at or past t_end
    (the sequence's last sub-tile, cut short) changes nothing and stores nothing.  Returns g, a_t and the
    three accumulators."""
    mask_c = (t + 0 * offs_c) < t_end  # t < t_end, as (CPG,) and (N,) store masks
    mask_n = (t + 0 * offs_n) < t_end
    tr, valid, delta, dtv, a, xv, Bv = _masked_step_inputs(t, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l,
                                                           rs_base, s_rs_l, bias, A2, offs_c, offs_n, HAS_BIAS,
                                                           SOFTPLUS, HAS_RESET)
    Cv = tl.load(C_base + tr * s_C_l + offs_n).to(tl.float32)
    dov, dyv, zv, sz = _step_dy(dy_base, z_base, tr, s_dy_l, s_z_l, offs_c, HAS_Z)
    dyv = tl.where(valid, dyv, 0.0)
    if HAS_Z:
        yv = tl.sum(h * Cv[None, :], axis=1)
        if HAS_D:
            yv += Dv * xv
        dzv = dov * yv * sz * (1.0 + zv * (1.0 - sz))
        tl.store(dz_ptr + o_bld + tr * d_inner + offs_c, dzv.to(dz_ptr.dtype.element_ty), mask=mask_c)
    g = a_next * g + dyv[:, None] * Cv[None, :]  # (CPG, N): dL/dh_t
    gah = g * (a * h_prev)  # a_t h_{t-1}: 0 at a reset
    gB = tl.sum(g * Bv[None, :], axis=1)  # (CPG,)
    ddelta = xv * gB + tl.sum(gah * A, axis=1)
    dA_acc += gah * delta[:, None]
    dxv = gB * delta
    if HAS_D:
        dxv += dyv * Dv
        dD_acc += dyv * xv
    if SOFTPLUS:
        ddt = ddelta * sigmoid(dtv)
    else:
        ddt = ddelta
    ddt = tl.where(valid, ddt, 0.0)
    db_acc += ddt
    dBv = tl.sum(g * (delta * xv)[:, None], axis=0)  # (N,): the group's channels summed
    dCv = tl.sum(h * dyv[:, None], axis=0)
    tl.store(dx_ptr + o_bld + tr * d_inner + offs_c, dxv.to(dx_ptr.dtype.element_ty), mask=mask_c)
    tl.store(ddt_ptr + o_bld + tr * d_inner + offs_c, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_c)
    tl.store(dB_ptr + o_blg + tr * (G * N) + offs_n, dBv.to(dB_ptr.dtype.element_ty), mask=mask_n)
    tl.store(dC_ptr + o_blg + tr * (G * N) + offs_n, dCv.to(dC_ptr.dtype.element_ty), mask=mask_n)
    return g, a, dA_acc, dD_acc, db_acc


@triton.jit
def _ss_bwd_seq_kernel(
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
    """B3, arguments and outputs as `_ss_bwd_kernel`.  T must be 4: each sub-tile's five states (entry + 4 steps)
    are held in registers between its forward re-walk and its reverse walk."""
    tl.static_assert(T == 4, "the seq solver's backward holds one 4-step sub-tile's states in registers")
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    n_chunks = tl.num_programs(2)
    G = d_inner // CPG
    offs_c = tl.arange(0, CPG)
    offs_n = tl.arange(0, N)
    d0 = pid_g * CPG
    dn_off, A, A2, bias, Dv = load_channel_params(A_ptr, bias_ptr, D_ptr, d0, offs_c, offs_n, N, HAS_BIAS, HAS_D)
    if HAS_W:
        g = tl.load(w_ptr + pid_b * s_w_b + pid_c * s_w_c + dn_off).to(tl.float32)
    else:
        g = tl.zeros([CPG, N], dtype=tl.float32)
    a_next = tl.full([CPG, N], 1.0, tl.float32)
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
        ts = t0 + (n_sub - 1 - i) * T
        # forward over the sub-tile from its saved entry state, states kept in registers: h_k = state before ts + k
        h0 = tl.load(hc_ptr + ((pid_b * n_tiles + ts // T) * d_inner) * N + dn_off)
        h1 = _fwd_step(h0, ts, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l, rs_base, s_rs_l, bias, A2,
                       offs_c, offs_n, HAS_BIAS, SOFTPLUS, HAS_RESET)
        h2 = _fwd_step(h1, ts + 1, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l, rs_base, s_rs_l, bias,
                       A2, offs_c, offs_n, HAS_BIAS, SOFTPLUS, HAS_RESET)
        h3 = _fwd_step(h2, ts + 2, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l, rs_base, s_rs_l, bias,
                       A2, offs_c, offs_n, HAS_BIAS, SOFTPLUS, HAS_RESET)
        h4 = _fwd_step(h3, ts + 3, t_end, L, x_base, s_x_l, dt_base, s_dt_l, B_base, s_B_l, rs_base, s_rs_l, bias,
                       A2, offs_c, offs_n, HAS_BIAS, SOFTPLUS, HAS_RESET)
        # reverse: g_t = a_{t+1} g_{t+1} + dy_t C_t
        g, a_next, dA_acc, dD_acc, db_acc = _bwd_step(
            ts + 3, h4, h3, g, a_next, dA_acc, dD_acc, db_acc, t_end, L, x_base, s_x_l, dt_base, s_dt_l, z_base,
            s_z_l, B_base, s_B_l, C_base, s_C_l, rs_base, s_rs_l, dy_base, s_dy_l, dx_ptr, ddt_ptr, dz_ptr, dB_ptr,
            dC_ptr, o_bld, o_blg, d_inner, G, bias, A, A2, Dv, offs_c, offs_n, N, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS,
            HAS_RESET)
        g, a_next, dA_acc, dD_acc, db_acc = _bwd_step(
            ts + 2, h3, h2, g, a_next, dA_acc, dD_acc, db_acc, t_end, L, x_base, s_x_l, dt_base, s_dt_l, z_base,
            s_z_l, B_base, s_B_l, C_base, s_C_l, rs_base, s_rs_l, dy_base, s_dy_l, dx_ptr, ddt_ptr, dz_ptr, dB_ptr,
            dC_ptr, o_bld, o_blg, d_inner, G, bias, A, A2, Dv, offs_c, offs_n, N, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS,
            HAS_RESET)
        g, a_next, dA_acc, dD_acc, db_acc = _bwd_step(
            ts + 1, h2, h1, g, a_next, dA_acc, dD_acc, db_acc, t_end, L, x_base, s_x_l, dt_base, s_dt_l, z_base,
            s_z_l, B_base, s_B_l, C_base, s_C_l, rs_base, s_rs_l, dy_base, s_dy_l, dx_ptr, ddt_ptr, dz_ptr, dB_ptr,
            dC_ptr, o_bld, o_blg, d_inner, G, bias, A, A2, Dv, offs_c, offs_n, N, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS,
            HAS_RESET)
        g, a_next, dA_acc, dD_acc, db_acc = _bwd_step(
            ts, h1, h0, g, a_next, dA_acc, dD_acc, db_acc, t_end, L, x_base, s_x_l, dt_base, s_dt_l, z_base,
            s_z_l, B_base, s_B_l, C_base, s_C_l, rs_base, s_rs_l, dy_base, s_dy_l, dx_ptr, ddt_ptr, dz_ptr, dB_ptr,
            dC_ptr, o_bld, o_blg, d_inner, G, bias, A, A2, Dv, offs_c, offs_n, N, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS,
            HAS_RESET)
    if pid_c == 0:
        tl.store(dh0_ptr + pid_b * d_inner * N + dn_off, a_next * g)  # a_0 g_0
    o = (pid_b * n_chunks + pid_c) * d_inner
    tl.store(dA_ptr + o * N + dn_off, dA_acc)
    tl.store(dD_ptr + o + d0 + offs_c, dD_acc)
    tl.store(dbias_ptr + o + d0 + offs_c, db_acc)
