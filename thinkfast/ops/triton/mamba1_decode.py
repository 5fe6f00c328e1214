"""Mamba-1 decode step from the raw in_proj slices (hybrid students, GQA-shaped x and B), no expansion copies.

Two ways to run it (`step_launches`): by default two launches, the conv step and then the state-update
kernel reading x and B by index (`state_update.selective_state_update(rep=...)`), faster in the captured
step; or the one-launch fused kernel of this file, described below.
Same function as `mamba1_fused_step_ref`.  Inputs are the raw in_proj slices (views of one
(b, W) buffer, no copies) and dt_proj's output:
    z, C (b, d_inner); x, B (b, d_xb = n_kv * hd); dt (b, d_inner);
    conv_state (pool, d_xb, K-1) rolled in place; state (pool, d_inner, N) fp32 or bf16 in place
    (loaded into fp32, updated in fp32, rounded only where it is stored);
    A_log (d_inner, N), D, dt_bias (d_inner,) fp32; conv weight (d_xb, K), bias (d_xb,).
In one program, for one batch row, one kv head and BLOCK_J of its hd channels:
    conv step + SiLU of x (the conv state is read once and written once),
    then for each of the REP query heads sharing that kv head (a (REP, BLOCK_J, N) tile):
    dt softplus, A = -exp(A_log) (recomputed in registers: it costs no memory traffic that
    loading a cached A would not), decay, the GQA expansion of x and B by *indexing*
    (query head h reads kv head h // REP; channel i's B/C group is i // N), state update,
    C contraction, D skip and z gate.
What this replaces per layer: the conv kernel, two head-expansion copies, the A = -exp(A_log)
kernels and the state-update kernel (and their reads and writes of the intermediates).
A kv head's conv must run once (it rolls the conv state), which is why a program owns all
REP query heads of its kv channels instead of one block of d_inner channels.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from thinkfast.ops.triton._common import is_pow2, softplus


@triton.jit
def _mamba1_fused_step_kernel(
    z_ptr, x_ptr, B_ptr, C_ptr, dt_ptr,
    conv_ptr, cw_ptr, cb_ptr,
    state_ptr, alog_ptr, D_ptr, bias_ptr, idx_ptr, y_ptr,
    s_z, s_x, s_B, s_C, s_dt, s_y,
    s_cs_p, s_cs_c, s_cs_k, s_cw_c,
    s_st_p,
    HD: tl.constexpr, REP: tl.constexpr, REP_P: tl.constexpr, N: tl.constexpr,
    K: tl.constexpr, KP: tl.constexpr, BLOCK_J: tl.constexpr,
    HAS_CB: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, SILU: tl.constexpr, HAS_IDX: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    NJ: tl.constexpr = (HD + BLOCK_J - 1) // BLOCK_J
    kv = pid_c // NJ
    j = (pid_c % NJ) * BLOCK_J + tl.arange(0, BLOCK_J)
    jm = j < HD
    if HAS_IDX:
        row = tl.load(idx_ptr + pid_b).to(tl.int64)
    else:
        row = pid_b.to(tl.int64)
    b64 = pid_b.to(tl.int64)

    # Every load comes first: a store may alias any pointer as far as the compiler knows, so a load
    # written after the conv-state store would wait for it (two memory round trips per program
    # instead of one).
    # ---- loads for the conv step on the kv channels c = kv*HD + j (state: K-1 previous inputs, oldest first)
    c = kv * HD + j
    k = tl.arange(0, KP)
    kmask = jm[:, None] & (k < K - 1)[None, :]
    cs = conv_ptr + row * s_cs_p + c[:, None] * s_cs_c + k[None, :] * s_cs_k
    old = tl.load(cs, mask=kmask, other=0.0)  # (BLOCK_J, KP)
    nxt = tl.load(cs + s_cs_k, mask=jm[:, None] & (k < K - 2)[None, :], other=0.0)  # (BLOCK_J, KP)
    xraw = tl.load(x_ptr + b64 * s_x + c, mask=jm, other=0.0)  # (BLOCK_J,)
    w = tl.load(cw_ptr + c[:, None] * s_cw_c + k[None, :], mask=kmask, other=0.0).to(tl.float32)
    w_last = tl.load(cw_ptr + c * s_cw_c + (K - 1), mask=jm, other=0.0).to(tl.float32)  # (BLOCK_J,)
    if HAS_CB:
        conv_b = tl.load(cb_ptr + c, mask=jm, other=0.0).to(tl.float32)

    # ---- B of channel j (kv head kv, group j // N), shared by the REP query heads
    n = tl.arange(0, N)
    grp_off = (j // N) * N  # offset of channel j's group inside its head
    Bv = tl.load(B_ptr + b64 * s_B + kv * HD + grp_off[:, None] + n[None, :], mask=jm[:, None],
                 other=0.0).to(tl.float32)  # (BLOCK_J, N)

    # ---- the REP query heads h = kv*REP + r as one (REP_P, BLOCK_J, N) tile
    r = tl.arange(0, REP_P)
    head = kv * REP + r
    m2 = (r < REP)[:, None] & jm[None, :]
    m3 = m2[:, :, None]
    i2 = head[:, None] * HD + j[None, :]  # d_inner channels (REP_P, BLOCK_J)
    i3 = i2[:, :, None] * N + n[None, None, :]
    st_ptrs = state_ptr + row * s_st_p + i3
    hs = tl.load(st_ptrs, mask=m3, other=0.0).to(tl.float32)  # (REP_P, BLOCK_J, N)
    dtv = tl.load(dt_ptr + b64 * s_dt + i2, mask=m2, other=0.0).to(tl.float32)  # (REP_P, BLOCK_J)
    if HAS_BIAS:
        dtv += tl.load(bias_ptr + i2, mask=m2, other=0.0).to(tl.float32)
    A = -tl.exp(tl.load(alog_ptr + i3, mask=m3, other=0.0).to(tl.float32))  # (REP_P, BLOCK_J, N)
    c_off = head[:, None, None] * HD + grp_off[None, :, None] + n[None, None, :]
    Cv = tl.load(C_ptr + b64 * s_C + c_off, mask=m3, other=0.0).to(tl.float32)  # (REP_P, BLOCK_J, N)
    if HAS_D:
        Dv = tl.load(D_ptr + i2, mask=m2, other=0.0).to(tl.float32)  # (REP_P, BLOCK_J)
    if HAS_Z:
        zv = tl.load(z_ptr + b64 * s_z + i2, mask=m2, other=0.0).to(tl.float32)  # (REP_P, BLOCK_J)

    # ---- conv step + SiLU (the conv state is read once and written once, rolled by one step)
    acc = tl.sum(old.to(tl.float32) * w, axis=1) + xraw.to(tl.float32) * w_last  # (BLOCK_J,)
    if HAS_CB:
        acc += conv_b
    rolled = tl.where((k == K - 2)[None, :], xraw[:, None].to(conv_ptr.dtype.element_ty), nxt)
    tl.store(cs, rolled, mask=kmask)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    xc = acc.to(x_ptr.dtype.element_ty).to(tl.float32)  # the conv output is rounded to x's dtype

    # ---- state update, C contraction, D skip, z gate
    if SOFTPLUS:
        dtv = softplus(dtv)
    dt3 = dtv[:, :, None]
    hs = tl.exp(dt3 * A) * hs + (dt3 * xc[None, :, None]) * Bv[None, :, :]
    tl.store(st_ptrs, hs.to(state_ptr.dtype.element_ty), mask=m3)
    yv = tl.sum(hs * Cv, axis=2)  # (REP_P, BLOCK_J)
    if HAS_D:
        yv += Dv * xc[None, :]
    if HAS_Z:
        yv = yv * zv * tl.sigmoid(zv)
    tl.store(y_ptr + b64 * s_y + i2, yv.to(y_ptr.dtype.element_ty), mask=m2)


def fused_supported(x, B, C, state, A_log, conv_state, head_dim: int) -> bool:
    d_xb, d_inner = x.shape[-1], C.shape[-1]
    n = A_log.shape[-1]
    return (
        x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and state.dtype in (torch.float32, torch.bfloat16)
        and state.is_contiguous()
        and is_pow2(n)
        and head_dim % n == 0
        and d_xb % head_dim == 0
        and d_inner % d_xb == 0
        and B.shape[-1] == d_xb
        and conv_state.shape[-1] >= 1
    )


def _config(head_dim: int, rep: int, n: int) -> tuple[int, int]:
    """(BLOCK_J, num_warps): BLOCK_J = 16 channels of each of the REP (padded to a power of two)
    query heads, 2 warps.  H200, 2026-12-02, with every load ahead of the stores (A/B, 5 rounds
    round-robin): 3B shape 41.0 us at B=256 (64% of copy bandwidth counting the fused op's traffic;
    48.2 us with the loads after the conv store), 80.0 us at B=512 (65%; 89.2); Qwen-1.5B shape 25.5 /
    44.6 us; (32, 4) is within 3% everywhere and (32, 1) up to 3.6x slower at the Qwen shapes
    (docs/results/decode_profile_h200/fused_step_load_order_2026-12-02.md).
    THINKFAST_MAMBA1_FUSED_CONFIG="block_j,num_warps" overrides it (tuning runs)."""
    env = os.environ.get("THINKFAST_MAMBA1_FUSED_CONFIG")
    if env:
        bj, nw = (int(v) for v in env.split(","))
        return min(bj, triton.next_power_of_2(head_dim)), nw
    return min(16, triton.next_power_of_2(head_dim)), 2


def step_launches() -> int:
    """How the decode step runs: 1 = this file's fused kernel; 2 = the conv step kernel, then the state-update
    kernel reading x and B by index (`selective_state_update(rep=...)`), whose programs tile d_inner channels
    with no padding of the REP query heads (REP = 3 at the 3B shape fills 3/4 of the fused kernel's tiles).
    Default 2: in the engine's captured step (H200, 2026-12-02, `profile_decode`, context 2304) the two
    launches took 0.728 / 1.477 ms per step for the 22 layers of hybrid-3B at batch 256 / 512 against the
    fused kernel's 0.804 / 1.665, and were faster at the Qwen hybrids too (0.349 vs 0.424 ms, 1.5B batch 256;
    0.223 vs 0.254 ms, 0.5B batch 256) (docs/results/decode_profile_h200/mamba_two_launch_2026-12-02/).
    THINKFAST_MAMBA1_STEP_LAUNCHES=1|2 overrides it (A/B runs)."""
    env = os.environ.get("THINKFAST_MAMBA1_STEP_LAUNCHES")
    if env:
        if env not in ("1", "2"):
            raise ValueError(f"THINKFAST_MAMBA1_STEP_LAUNCHES={env!r}: use 1 (fused) or 2 (conv, then state update)")
        return int(env)
    return 2


def mamba1_fused_step(z, x, B, C, dt, conv_state, conv_weight, conv_bias, state, A_log, D, dt_bias,
                      head_dim: int, activation: str | None = "silu", softplus: bool = True,
                      state_indices=None, block_j: int | None = None, num_warps: int | None = None,
                      launches: int | None = None):
    """Triton decode step from the raw in_proj slices; arguments and result as `mamba1_fused_step_ref`.
    `launches` (default `step_launches()`): 1 fused launch, or 2 (conv step, then the indexed state update)."""
    bsz, d_xb = x.shape
    d_inner = C.shape[-1]
    n = A_log.shape[-1]
    K = conv_weight.shape[-1]
    n_kv = d_xb // head_dim
    rep = d_inner // d_xb
    if not state.is_contiguous():
        raise ValueError("the state pool must be contiguous (it is updated in place)")
    for t in (z, x, B, C, dt):
        if t is not None and t.stride(-1) != 1:
            raise ValueError("z, x, B, C, dt need a unit last-dim stride")
    if (launches or step_launches()) == 2:
        from thinkfast.ops.triton.conv import causal_conv1d_update
        from thinkfast.ops.triton.state_update import selective_state_update

        xc = causal_conv1d_update(x, conv_state, conv_weight, conv_bias, activation, state_indices)  # (b, d_xb)
        return selective_state_update(state, xc, dt, A_log, B.view(bsz, d_xb // n, n), C.view(bsz, d_inner // n, n),
                                      D, z, dt_bias, softplus, state_indices, head_dim=head_dim, rep=rep,
                                      a_is_log=True)
    y = torch.empty(bsz, d_inner, device=x.device, dtype=x.dtype)
    bj, nw = _config(head_dim, rep, n)
    block_j = block_j or bj
    num_warps = num_warps or nw
    A_log = A_log.contiguous()
    conv_weight = conv_weight.contiguous()
    idx = state_indices.contiguous() if state_indices is not None else None
    grid = (bsz, n_kv * triton.cdiv(head_dim, block_j))
    _mamba1_fused_step_kernel[grid](
        z if z is not None else x, x, B, C, dt,
        conv_state, conv_weight, conv_bias if conv_bias is not None else conv_weight,
        state, A_log, D if D is not None else A_log, dt_bias if dt_bias is not None else A_log,
        idx if idx is not None else x, y,
        z.stride(0) if z is not None else 0, x.stride(0), B.stride(0), C.stride(0), dt.stride(0), y.stride(0),
        conv_state.stride(0), conv_state.stride(1), conv_state.stride(2), conv_weight.stride(0),
        state.stride(0),
        HD=head_dim, REP=rep, REP_P=triton.next_power_of_2(rep), N=n, K=K,
        KP=max(2, triton.next_power_of_2(K - 1)), BLOCK_J=block_j,
        HAS_CB=conv_bias is not None, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(softplus), SILU=activation == "silu", HAS_IDX=idx is not None,
        num_warps=num_warps,
    )
    return y
