"""Reference of the fused Mamba-1 decode step: the unfused path the model used to run, as one function.

    xc = act(conv_step(x))                     # rolls conv_state at the slots
    x_h, B_h = head-wise repeat of xc, B       # kv head h // rep feeds query head h
    y = selective_state_update(state, x_h, dt, -exp(A_log), B_h, C, D, z, dt_bias)
"""

from __future__ import annotations

import torch

from thinkfast.ops.reference.conv import causal_conv1d_update_ref
from thinkfast.ops.reference.selective_scan import selective_state_update_ref


def repeat_heads(t: torch.Tensor, head_dim: int, rep: int) -> torch.Tensor:
    """(b, n_kv*hd) -> (b, n_kv*rep*hd): query head h reads kv head h // rep."""
    if rep == 1:
        return t
    b, width = t.shape
    n_kv = width // head_dim
    return t.view(b, n_kv, 1, head_dim).expand(b, n_kv, rep, head_dim).reshape(b, n_kv * rep * head_dim)


def mamba1_fused_step_ref(
    z: torch.Tensor | None,  # (b, d_inner)
    x: torch.Tensor,  # (b, d_xb) before the conv
    B: torch.Tensor,  # (b, d_xb)
    C: torch.Tensor,  # (b, d_inner)
    dt: torch.Tensor,  # (b, d_inner) dt_proj output (bias and softplus not applied)
    conv_state: torch.Tensor,  # (pool, d_xb, K-1), rolled in place
    conv_weight: torch.Tensor,  # (d_xb, K)
    conv_bias: torch.Tensor | None,
    state: torch.Tensor,  # (pool, d_inner, N) fp32 or bf16, updated in place
    A_log: torch.Tensor,  # (d_inner, N)
    D: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    head_dim: int,
    activation: str | None = "silu",
    softplus: bool = True,
    state_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    b = x.shape[0]
    d_inner, n = C.shape[-1], A_log.shape[-1]
    rep = d_inner // x.shape[-1]
    xc = causal_conv1d_update_ref(x, conv_state, conv_weight, conv_bias, activation, state_indices)
    return selective_state_update_ref(
        state, repeat_heads(xc, head_dim, rep), dt, -torch.exp(A_log.float()),
        repeat_heads(B, head_dim, rep).reshape(b, d_inner // n, n), C.reshape(b, d_inner // n, n),
        D, z, dt_bias, softplus, state_indices,
    )
