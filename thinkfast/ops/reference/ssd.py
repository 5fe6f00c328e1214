"""Discrete multi-head Mamba-2 (Llamba / MOHAWK) recurrence, a.k.a. simple gated linear attention.

Per head h, with key dim n (d_state) and value dim p:
    S_t = exp(g_t) S_{t-1} + B_t x_t^T            S: (n, p), g_t = log decay <= 0
    y_t = C_t^T S_t                                 (p,)
The D skip and the z gate live in the mixer, not here.
Two forms: sequential (the definition) and chunked (block-parallel, O(L * chunk)).
"""

from __future__ import annotations

from thinkfast.ops.reference._precision import state_dtype, up

import torch

from thinkfast.ops.reference.mixer_matrix import segment_sum


def _apply_reset_to_log_decay(g: torch.Tensor, reset: torch.Tensor | None) -> torch.Tensor:
    """A reset before token t is a decay of exp(-inf) = 0 applied to the old state."""
    if reset is None:
        return g
    return g.masked_fill(reset[:, :, None], float("-inf"))


def ssd_sequential_ref(
    x: torch.Tensor,  # (b, l, h, p)
    g: torch.Tensor,  # (b, l, h) log decay (<= 0)
    B: torch.Tensor,  # (b, l, h, n)
    C: torch.Tensor,  # (b, l, h, n)
    initial_state: torch.Tensor | None = None,  # (b, h, n, p) fp32
    reset: torch.Tensor | None = None,  # (b, l) bool
    return_final_state: bool = False,
):
    b, l, h, p = x.shape
    n = B.shape[-1]
    S = x.new_zeros(b, h, n, p, dtype=state_dtype(x)) if initial_state is None else up(initial_state).clone()
    gf = _apply_reset_to_log_decay(up(g), reset)
    ys = []  # unbind once: per-step indexing would make backward O(l^2)
    for g_t, x_t, B_t, C_t in zip(gf.unbind(1), up(x).unbind(1), up(B).unbind(1), up(C).unbind(1)):
        S = torch.exp(g_t)[:, :, None, None] * S + B_t[..., :, None] * x_t[..., None, :]
        ys.append(torch.einsum("bhn,bhnp->bhp", C_t, S))
    y = torch.stack(ys, dim=1).to(x.dtype)  # (b, l, h, p)
    return (y, S) if return_final_state else y


def ssd_chunked_ref(
    x: torch.Tensor,  # (b, l, h, p)
    g: torch.Tensor,  # (b, l, h)
    B: torch.Tensor,  # (b, l, h, n)
    C: torch.Tensor,  # (b, l, h, n)
    initial_state: torch.Tensor | None = None,  # (b, h, n, p)
    reset: torch.Tensor | None = None,  # (b, l)
    return_final_state: bool = False,
    chunk_size: int = 64,
):
    """Same function as `ssd_sequential_ref`, computed chunk by chunk: inside a chunk by the
    materialised decay matrix, across chunks by passing the (n, p) state."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    gf = _apply_reset_to_log_decay(up(g), reset)  # (b, l, h)
    S = x.new_zeros(b, h, n, p, dtype=state_dtype(x)) if initial_state is None else up(initial_state).clone()
    ys = []
    for start in range(0, l, chunk_size):
        sl = slice(start, min(start + chunk_size, l))
        xc, Bc, Cc = up(x[:, sl]), up(B[:, sl]), up(C[:, sl])
        gc = gf[:, sl].transpose(1, 2)  # (b, h, c)
        # one virtual step before the chunk (log decay 0) stands for the incoming state
        seg = segment_sum(torch.nn.functional.pad(gc, (1, 0)))  # (b, h, c+1, c+1)
        decay_in = torch.exp(seg[..., 1:, 1:])  # (b, h, c, c): decay over (j, i]
        decay_from_start = torch.exp(seg[..., 1:, 0])  # (b, h, c): decay over [chunk start, i]
        decay_to_end = torch.exp(seg[..., -1, 1:])  # (b, h, c): decay over (j, chunk end]
        scores = torch.einsum("bihn,bjhn->bhij", Cc, Bc) * decay_in
        y_intra = torch.einsum("bhij,bjhp->bihp", scores, xc)
        y_inter = torch.einsum("bihn,bhnp->bihp", Cc, S) * decay_from_start.transpose(1, 2)[..., None]
        ys.append(y_intra + y_inter)
        S = torch.exp(seg[..., -1, 0])[..., None, None] * S + torch.einsum("bhj,bjhn,bjhp->bhnp", decay_to_end, Bc, xc)
    y = torch.cat(ys, dim=1).to(x.dtype)
    return (y, S) if return_final_state else y


def ssd_step_ref(
    state: torch.Tensor,  # (pool, h, n, p) fp32 or bf16, updated in place (the step computes in fp32)
    x: torch.Tensor,  # (b, h, p)
    g: torch.Tensor,  # (b, h) log decay
    B: torch.Tensor,  # (b, h, n)
    C: torch.Tensor,  # (b, h, n)
    state_indices: torch.Tensor | None = None,  # (b,)
) -> torch.Tensor:
    """One decode step; returns y (b, h, p) in x's dtype."""
    rows = torch.arange(x.shape[0], device=x.device) if state_indices is None else state_indices
    S = torch.exp(up(g))[:, :, None, None] * up(state[rows]) + up(B)[..., :, None] * up(x)[..., None, :]
    state[rows] = S.to(state.dtype)
    return torch.einsum("bhn,bhnp->bhp", up(C), S).to(x.dtype)
