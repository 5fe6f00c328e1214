"""PROTOTYPE (forward only, not used by dispatch): a time-sequential Mamba-1 scan pass.

Measures what one pass costs when each program walks its chunk one time step at a time
with the (NG, CPG, N) state in registers (about 5 flops + 1 exp per state element and
step), instead of solving (T, CPG, N) tiles with `tl.associative_scan` (see
docs/kernels.md, "Why the target is still missed").  No initial state, no resets, no
chunk combine: the figure it gives is the cost of a pass, the building block of F1/F3/B1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from thinkfast.ops.triton._common import softplus


@triton.jit
def _seq_fwd_kernel(x_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, y_ptr, L, CL, d_inner, G,
                    NG: tl.constexpr, CPG: tl.constexpr, N: tl.constexpr):
    pid_g = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_g = pid_g * NG + tl.arange(0, NG)
    offs_c = tl.arange(0, CPG)
    offs_n = tl.arange(0, N)
    dch = offs_g[:, None] * CPG + offs_c[None, :]  # (NG, CPG) channels
    A2 = tl.load(A_ptr + dch[:, :, None] * N + offs_n[None, None, :]) * 1.4426950408889634
    bias = tl.load(bias_ptr + dch)
    Dv = tl.load(D_ptr + dch)
    gn = offs_g[:, None] * N + offs_n[None, :]  # (NG, N) in a (.., G, N) row
    h = tl.zeros([NG, CPG, N], dtype=tl.float32)
    t0 = pid_c * CL
    t_end = tl.minimum(t0 + CL, L)
    row = pid_b * L * d_inner
    rowg = pid_b * L * G * N
    for t in range(t0, t_end):
        xv = tl.load(x_ptr + row + t * d_inner + dch).to(tl.float32)
        dtv = tl.load(dt_ptr + row + t * d_inner + dch).to(tl.float32) + bias
        zv = tl.load(z_ptr + row + t * d_inner + dch).to(tl.float32)
        Bv = tl.load(B_ptr + rowg + t * G * N + gn).to(tl.float32)
        Cv = tl.load(C_ptr + rowg + t * G * N + gn).to(tl.float32)
        delta = softplus(dtv)
        h = tl.exp2(delta[:, :, None] * A2) * h + (delta * xv)[:, :, None] * Bv[:, None, :]
        yv = tl.sum(h * Cv[:, None, :], axis=2) + Dv * xv
        yv = yv * zv * tl.sigmoid(zv)
        tl.store(y_ptr + row + t * d_inner + dch, yv.to(y_ptr.dtype.element_ty))


def seq_forward_pass(x, dt, A, B, C, D, z, dt_bias, chunk_len=256, groups_per_program=1, num_warps=1):
    """y of a scan in which every chunk of `chunk_len` steps starts from a zero state (only
    equal to the real scan when chunk_len >= L); contiguous inputs."""
    b, L, d = x.shape
    G, n = B.shape[2], B.shape[3]
    y = torch.empty_like(x)
    grid = (G // groups_per_program, b, triton.cdiv(L, chunk_len))
    _seq_fwd_kernel[grid](x, dt, z, B, C, A.float().contiguous(), D.float(), dt_bias.float(), y, L, chunk_len, d, G,
                          NG=groups_per_program, CPG=d // G, N=n, num_warps=num_warps)
    return y
