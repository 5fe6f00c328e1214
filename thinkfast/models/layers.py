"""Blocks every student keeps from its teacher: RMSNorm and the gated MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thinkfast.ops import dispatch


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


Stacked = tuple[torch.Tensor, torch.Tensor | None]  # (weight (rows, d), bias (rows,) or None)


def stacked_bytes(linears) -> int:
    """Memory of `stack_linears(linears)`."""
    return sum(t.numel() * t.element_size() for lin in linears for t in (lin.weight, lin.bias) if t is not None)


def stack_linears(linears, out: Stacked | None = None) -> Stacked:
    """The layers' weights (and biases) stacked by rows, [l0; l1; ...], for one GEMM in place of several.

    `out`, an earlier result for the same layers, is refilled in place (CUDA graphs captured over it stay
    valid); a new pair is allocated when there is none or the weights' shape, dtype or device changed."""
    weight = linears[0].weight
    rows = sum(lin.weight.shape[0] for lin in linears)
    has_bias = linears[0].bias is not None
    same = out is not None and (out[0].shape, out[0].dtype, out[0].device) == ((rows, weight.shape[1]), weight.dtype,
                                                                             weight.device)
    if not same:
        out = (torch.empty(rows, weight.shape[1], dtype=weight.dtype, device=weight.device),
               torch.empty(rows, dtype=linears[0].bias.dtype, device=weight.device) if has_bias else None)
    with torch.no_grad():
        start = 0
        for lin in linears:
            n = lin.weight.shape[0]
            out[0][start:start + n].copy_(lin.weight)
            if has_bias:
                out[1][start:start + n].copy_(lin.bias)
            start += n
    return out


class GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    # decode's stacked [gate; up] weight (and bias): one GEMM instead of two; set by stack_decode_projections
    decode_stacked: Stacked | None = None

    def decode_projection_bytes(self) -> int:
        return stacked_bytes((self.gate_proj, self.up_proj))

    def stack_decode_projections(self, out: Stacked | None = None) -> Stacked:
        """Fill (in place where `out` is given) and use decode's stacked [gate; up] copy (`stack_linears`)."""
        self.decode_stacked = stack_linears((self.gate_proj, self.up_proj), out)
        return self.decode_stacked

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Decode rows (b, d): silu(gate) * up in one fused launch on GPU; with the stacked copy, gate and up are
        one GEMM whose output halves the fused launch reads in place."""
        if self.decode_stacked is not None:
            gate_up = F.linear(x, *self.decode_stacked)  # (b, 2 I)
            inter = gate_up.shape[1] // 2
            return self.down_proj(dispatch.silu_mul(gate_up[:, :inter], gate_up[:, inter:]))
        return self.down_proj(dispatch.silu_mul(self.gate_proj(x), self.up_proj(x)))
