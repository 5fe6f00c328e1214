"""Materialised sequence-mixing matrices (MOHAWK stage 1) and the stable segment sum."""

from __future__ import annotations

from thinkfast.ops.reference._precision import up

import torch


def segment_sum(g: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = sum_{k=j+1..i} g[..., k] for j <= i, -inf above the diagonal.

    Built by a masked cumulative sum rather than differences of a cumsum, so it is
    exact for -inf entries (a reset) and does not lose precision over long spans.
    """
    T = g.shape[-1]
    rep = g[..., :, None].expand(*g.shape, T)  # (..., k, j): g_k
    strictly_lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=g.device), diagonal=-1)
    rep = rep.masked_fill(~strictly_lower, 0.0)
    out = torch.cumsum(rep, dim=-2)  # (..., i, j): sum over j < k <= i
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=g.device))
    return out.masked_fill(~lower, float("-inf"))


def discrete_mamba2_mixer_matrix(
    g: torch.Tensor,  # (b, l, h) log decay
    B: torch.Tensor,  # (b, l, h, n)
    C: torch.Tensor,  # (b, l, h, n)
    D: torch.Tensor | None = None,  # (h,)
) -> torch.Tensor:
    """M[b, h, i, j] = (C_i . B_j) exp(sum_{k=j+1..i} g_k) for j <= i (+ D on the diagonal),
    so that y = M @ x reproduces the recurrence.  O(h * l^2) memory: short sequences only."""
    decay = torch.exp(segment_sum(up(g).transpose(1, 2)))  # (b, h, l, l)
    M = torch.einsum("bihn,bjhn->bhij", up(C), up(B)) * decay
    if D is not None:
        M = M + torch.diag_embed(up(D)[None, :, None].expand(M.shape[0], -1, M.shape[-1]))
    return M
