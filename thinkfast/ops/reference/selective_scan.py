"""Mamba-1 selective scan with grouped B/C (sequential reference) and its decode step.

Per channel d (in group g(d) = d // (d_inner / G)) and state index n:
    delta_t  = softplus(dt_t[d] + dt_bias[d])
    h_t[d,n] = exp(delta_t A[d,n]) h_{t-1}[d,n] + delta_t B_t[g,n] x_t[d]
    y_t[d]   = sum_n C_t[g,n] h_t[d,n] + D[d] x_t[d]
    out_t[d] = y_t[d] * silu(z_t[d])            (when z is given)
"""

from __future__ import annotations

from thinkfast.ops.reference._precision import state_dtype, up

import torch
import torch.nn.functional as F


def _expand_groups(bc: torch.Tensor, d_inner: int) -> torch.Tensor:
    """(..., G, n) -> (..., d_inner, n): every channel sees its group's vector."""
    groups = bc.shape[-2]
    if d_inner % groups:
        raise ValueError(f"d_inner={d_inner} is not a multiple of the number of B/C groups {groups}")
    return bc.repeat_interleave(d_inner // groups, dim=-2)


def _delta(dt: torch.Tensor, dt_bias: torch.Tensor | None, softplus: bool) -> torch.Tensor:
    dt = up(dt)
    if dt_bias is not None:
        dt = dt + up(dt_bias)
    return F.softplus(dt) if softplus else dt


def selective_scan_ref(
    x: torch.Tensor,  # (b, l, d)
    dt: torch.Tensor,  # (b, l, d), before bias and softplus
    A: torch.Tensor,  # (d, n), negative
    B: torch.Tensor,  # (b, l, G, n)
    C: torch.Tensor,  # (b, l, G, n)
    D: torch.Tensor | None = None,  # (d,)
    z: torch.Tensor | None = None,  # (b, l, d)
    dt_bias: torch.Tensor | None = None,  # (d,)
    softplus: bool = True,
    initial_state: torch.Tensor | None = None,  # (b, d, n) fp32
    reset: torch.Tensor | None = None,  # (b, l) bool, state cleared before a True token
    return_final_state: bool = False,
):
    b, l, d = x.shape
    n = A.shape[1]
    delta = _delta(dt, dt_bias, softplus)  # (b, l, d)
    Bx = _expand_groups(up(B), d)  # (b, l, d, n)
    Cx = _expand_groups(up(C), d)  # (b, l, d, n)
    xf = up(x)
    h = x.new_zeros(b, d, n, dtype=state_dtype(x)) if initial_state is None else up(initial_state).clone()
    # unbind once: indexing [:, t] inside the loop would make backward O(l^2) (a full-size zero
    # gradient per step); unbind's backward is one stack
    steps = zip(delta.unbind(1), xf.unbind(1), Bx.unbind(1), Cx.unbind(1))
    keep = (~reset).unbind(1) if reset is not None else [None] * l
    A_f = up(A)
    ys = []
    for (d_t, x_t, B_t, C_t), keep_t in zip(steps, keep):
        if keep_t is not None:
            h = h * keep_t.to(h.dtype)[:, None, None]
        h = torch.exp(d_t[:, :, None] * A_f) * h + (d_t * x_t)[:, :, None] * B_t  # (b, d, n)
        ys.append((h * C_t).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=1)  # (b, l, d)
    if D is not None:
        y = y + up(D) * xf
    if z is not None:
        y = y * F.silu(up(z))
    y = y.to(x.dtype)
    return (y, h) if return_final_state else y


def selective_state_update_ref(
    state: torch.Tensor,  # (pool, d, n) fp32 or bf16, updated in place (the step computes in fp32)
    x: torch.Tensor,  # (b, d)
    dt: torch.Tensor,  # (b, d)
    A: torch.Tensor,  # (d, n)
    B: torch.Tensor,  # (b, G, n)
    C: torch.Tensor,  # (b, G, n)
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,  # (b, d)
    dt_bias: torch.Tensor | None = None,
    softplus: bool = True,
    state_indices: torch.Tensor | None = None,  # (b,) rows of `state`; default 0..b-1
) -> torch.Tensor:
    """One decode step of the Mamba-1 recurrence; returns y (b, d) in x's dtype."""
    bsz, d = x.shape
    rows = torch.arange(bsz, device=x.device) if state_indices is None else state_indices
    delta = _delta(dt, dt_bias, softplus)  # (b, d)
    h = up(state[rows])  # (b, d, n)
    h = torch.exp(delta[:, :, None] * up(A)) * h + (delta * up(x))[:, :, None] * _expand_groups(up(B), d)
    state[rows] = h.to(state.dtype)
    y = (h * _expand_groups(up(C), d)).sum(-1)  # (b, d)
    if D is not None:
        y = y + up(D) * up(x)
    if z is not None:
        y = y * F.silu(up(z))
    return y.to(x.dtype)
