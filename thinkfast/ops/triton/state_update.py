"""Decode-step recurrent state updates, in place on rows of a state pool.

Mamba-1 (`selective_state_update`, same function as `selective_state_update_ref`):
    state (pool, d, N) fp32 or bf16; x, dt, z (b, d); B, C (b, G, N); A (d, N); D, dt_bias (d,)
    grid (b, d / BLOCK_D): a program reads its (BLOCK_D, N) block of one row of the pool,
    applies one step, writes it back and emits y for its BLOCK_D channels.
Discrete Mamba-2 (`ssd_step`, same function as `ssd_step_ref`):
    state (pool, h, n, p) fp32 or bf16; x (b, h, p); g (b, h); B, C (b, h, n)
    grid (b, h, p / BLOCK_P): a program owns an (n, BLOCK_P) block of one head.

Both are memory-bound: the state is read once and written once (8 bytes per fp32
element, 4 per bf16 one), everything else is O(b d) and negligible (x/z/dt/y are 1/N of
the state).  A bf16 state is loaded into fp32, updated and contracted with C in fp32, and
only the stored copy is rounded (y comes from the unrounded fp32 state, as in the reference).
Rows are taken from `state_indices` (default 0..b-1) so the engine can update any
subset of its pool in place.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from thinkfast.ops.triton._common import is_pow2, last_dim_contiguous, softplus


@triton.jit
def _mamba1_step_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, idx_ptr, y_ptr,
    d_inner, cpg_b, cpg_c,
    s_st_p, s_x_b, s_dt_b, s_z_b, s_B_b, s_B_g, s_C_b, s_C_g, s_y_b,
    N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_IDX: tl.constexpr, HD: tl.constexpr, REP: tl.constexpr, A_IS_LOG: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N)
    dmask = offs_d < d_inner
    if HAS_IDX:
        row = tl.load(idx_ptr + pid_b).to(tl.int64)
    else:
        row = pid_b.to(tl.int64)
    st_ptrs = state_ptr + row * s_st_p + offs_d[:, None] * N + offs_n[None, :]  # (BLOCK_D, N)
    h = tl.load(st_ptrs, mask=dmask[:, None], other=0.0).to(tl.float32)
    if REP == 1:
        offs_x = offs_d
    else:  # GQA-shaped x: query head d // HD reads kv head (d // HD) // REP, channel d % HD
        offs_x = (offs_d // (HD * REP)) * HD + offs_d % HD
    xv = tl.load(x_ptr + pid_b * s_x_b + offs_x, mask=dmask, other=0.0).to(tl.float32)
    dtv = tl.load(dt_ptr + pid_b * s_dt_b + offs_d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dtv += tl.load(bias_ptr + offs_d, mask=dmask, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dtv = softplus(dtv)
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=dmask[:, None], other=0.0).to(tl.float32)
    if A_IS_LOG:  # A = -exp(A_log) in registers: no per-step kernel, no cached copy
        A = -tl.exp(A)
    grp_b = offs_x // cpg_b  # B's groups follow x (GQA-shaped B), C's the d_inner channels
    grp_c = offs_d // cpg_c
    Bv = tl.load(B_ptr + pid_b * s_B_b + grp_b[:, None] * s_B_g + offs_n[None, :], mask=dmask[:, None],
                 other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + pid_b * s_C_b + grp_c[:, None] * s_C_g + offs_n[None, :], mask=dmask[:, None],
                 other=0.0).to(tl.float32)
    h = tl.exp(dtv[:, None] * A) * h + (dtv * xv)[:, None] * Bv
    tl.store(st_ptrs, h.to(state_ptr.dtype.element_ty), mask=dmask[:, None])
    yv = tl.sum(h * Cv, axis=1)
    if HAS_D:
        yv += tl.load(D_ptr + offs_d, mask=dmask, other=0.0).to(tl.float32) * xv
    if HAS_Z:
        zv = tl.load(z_ptr + pid_b * s_z_b + offs_d, mask=dmask, other=0.0).to(tl.float32)
        yv = yv * zv * tl.sigmoid(zv)
    tl.store(y_ptr + pid_b * s_y_b + offs_d, yv.to(y_ptr.dtype.element_ty), mask=dmask)


def mamba1_supported(state, x, A, B) -> bool:
    return (
        x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and state.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and is_pow2(A.shape[1])
        and A.shape[0] % B.shape[-2] == 0
        and state.is_contiguous()
    )


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, softplus=True,
                           state_indices=None, block_d: int | None = None, num_warps: int | None = None,
                           *, head_dim: int | None = None, rep: int = 1, a_is_log: bool = False):
    """Triton decode step; arguments and result as `selective_state_update_ref` (state updated in place).

    GQA-shaped inputs (the hybrids' Mamba-1 layers): with `rep` > 1, x (b, d / rep) and B (b, G_B, N) hold
    one kv head of `head_dim` channels per `rep` query heads and are read by index (channel i of d_inner
    reads x[kv(i) * head_dim + i % head_dim], kv(i) = i // head_dim // rep), never expanded; C stays
    (b, G, N) over d_inner.  `a_is_log`: A is A_log and A = -exp(A_log) is taken in registers."""
    bsz = x.shape[0]
    d = dt.shape[-1]
    n = A.shape[1]
    if rep > 1 and (head_dim is None or x.shape[-1] * rep != d or x.shape[-1] % head_dim):
        raise ValueError(f"rep={rep} needs head_dim and x of d / rep = {d // rep} channels, got {tuple(x.shape)}")
    if not state.is_contiguous():
        raise ValueError("the state pool must be contiguous (it is updated in place)")
    x, dt, B, C = (last_dim_contiguous(t) for t in (x, dt, B, C))
    z = last_dim_contiguous(z) if z is not None else None
    A = A.contiguous()
    y = torch.empty(bsz, d, device=x.device, dtype=x.dtype)
    if block_d is None or num_warps is None:
        bd, nw = _mamba1_config(d, n, rep)
        block_d, num_warps = block_d or bd, num_warps or nw
    idx = state_indices.contiguous() if state_indices is not None else None
    grid = (bsz, triton.cdiv(d, block_d))
    _mamba1_step_kernel[grid](
        state, x, dt, A, B, C,
        D if D is not None else A, z if z is not None else x, dt_bias if dt_bias is not None else A,
        idx if idx is not None else x, y,
        d, x.shape[-1] // B.shape[-2], d // C.shape[-2],
        state.stride(0), x.stride(0), dt.stride(0), z.stride(0) if z is not None else 0,
        B.stride(0), B.stride(1), C.stride(0), C.stride(1), y.stride(0),
        N=n, BLOCK_D=block_d,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(softplus),
        HAS_IDX=idx is not None, HD=head_dim if rep > 1 else 1, REP=rep, A_IS_LOG=bool(a_is_log),
        num_warps=num_warps,
    )
    return y


def _mamba1_config(d: int, n: int, rep: int = 1) -> tuple[int, int]:
    """(BLOCK_D, num_warps): small programs (32 or 64 channels x 16 = 512 or 1024 state elements).

    rep = 1, H200 sweep at the 3B shape (tune_decode, 2026-11-21): (32, 1) 35.7 us at B=256 (72% of copy
    bandwidth) and 65.0 us at B=512 (79%); the old (256, 4) took 50.6 / 74.1 us (52% / 70%).  The
    step is latency-bound, not bandwidth-bound, at these sizes: many small resident programs keep
    more loads in flight per SM than a few large ones.
    rep > 1 (the hybrids' two-launch decode step, x and B read by index): (64, 2), the best of (32, 1),
    (64, 1), (32, 2), (64, 2) in the engine's captured hybrid-3B step at context 2304 (H200, 2026-12-02:
    7.37 / 13.18 ms per step at batch 256 / 512 against 7.38 / 13.26 with (32, 1) and 7.50 / 13.45 with
    (64, 1); docs/results/decode_profile_h200/mamba_two_launch_2026-12-02/).
    THINKFAST_MAMBA1_STEP_CONFIG="block_d,num_warps" overrides it (tuning runs)."""
    env = os.environ.get("THINKFAST_MAMBA1_STEP_CONFIG")
    if env:
        bd, nw = (int(v) for v in env.split(","))
        return min(bd, triton.next_power_of_2(d)), nw
    if rep > 1:
        return min(triton.next_power_of_2(d), 64), 2
    return max(1, min(triton.next_power_of_2(d), 32)), 1


@triton.jit
def _ssd_step_kernel(
    state_ptr, x_ptr, g_ptr, B_ptr, C_ptr, idx_ptr, y_ptr,
    H, P,
    s_st_p, s_st_h, s_x_b, s_x_h, s_g_b, s_B_b, s_B_h, s_C_b, s_C_h, s_y_b, s_y_h,
    NS: tl.constexpr, BLOCK_P: tl.constexpr, HAS_IDX: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_p = tl.program_id(2)
    offs_n = tl.arange(0, NS)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    if HAS_IDX:
        row = tl.load(idx_ptr + pid_b).to(tl.int64)
    else:
        row = pid_b.to(tl.int64)
    st_ptrs = state_ptr + row * s_st_p + pid_h * s_st_h + offs_n[:, None] * P + offs_p[None, :]  # (NS, BLOCK_P)
    S = tl.load(st_ptrs, mask=pmask[None, :], other=0.0).to(tl.float32)
    decay = tl.exp(tl.load(g_ptr + pid_b * s_g_b + pid_h).to(tl.float32))
    xv = tl.load(x_ptr + pid_b * s_x_b + pid_h * s_x_h + offs_p, mask=pmask, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + pid_b * s_B_b + pid_h * s_B_h + offs_n).to(tl.float32)
    Cv = tl.load(C_ptr + pid_b * s_C_b + pid_h * s_C_h + offs_n).to(tl.float32)
    S = decay * S + Bv[:, None] * xv[None, :]
    tl.store(st_ptrs, S.to(state_ptr.dtype.element_ty), mask=pmask[None, :])
    yv = tl.sum(Cv[:, None] * S, axis=0)
    tl.store(y_ptr + pid_b * s_y_b + pid_h * s_y_h + offs_p, yv.to(y_ptr.dtype.element_ty), mask=pmask)


def ssd_step_supported(state, x, B) -> bool:
    return (
        x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and state.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and is_pow2(B.shape[-1])
        and state.is_contiguous()
    )


def ssd_step(state, x, g, B, C, state_indices=None, block_p: int | None = None):
    """Triton discrete Mamba-2 decode step; arguments and result as `ssd_step_ref`."""
    bsz, H, P = x.shape
    ns = B.shape[-1]
    if not state.is_contiguous():
        raise ValueError("the state pool must be contiguous (it is updated in place)")
    x, g, B, C = (last_dim_contiguous(t) for t in (x, g, B, C))
    y = torch.empty(bsz, H, P, device=x.device, dtype=x.dtype)
    if block_p is None:
        low_bit = P & -P  # the largest power of two dividing P: no masked lanes when >= 16
        block_p = low_bit if low_bit >= 16 else triton.next_power_of_2(P)
        block_p = max(1, min(block_p, 4096 // ns))
    idx = state_indices.contiguous() if state_indices is not None else None
    grid = (bsz, H, triton.cdiv(P, block_p))
    _ssd_step_kernel[grid](
        state, x, g, B, C, idx if idx is not None else x, y,
        H, P,
        state.stride(0), state.stride(1), x.stride(0), x.stride(1), g.stride(0),
        B.stride(0), B.stride(1), C.stride(0), C.stride(1), y.stride(0), y.stride(1),
        NS=ns, BLOCK_P=block_p, HAS_IDX=idx is not None,
        num_warps=4,
    )
    return y
