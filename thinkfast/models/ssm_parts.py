"""Pieces shared by the Mamba mixers: depthwise causal conv, GQA head expansion, dt init."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from thinkfast.ops import dispatch


class DepthwiseCausalConv(nn.Module):
    """Depthwise causal conv1d (kernel k) with a rolling (k-1)-input decode state."""

    def __init__(self, channels: int, kernel_size: int, activation: str | None):
        super().__init__()
        conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=True)  # torch default init
        self.weight = nn.Parameter(conv.weight.detach()[:, 0].clone())  # (c, k)
        self.bias = nn.Parameter(conv.bias.detach().clone())  # (c,)
        self.activation = activation
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor, reset: torch.Tensor | None = None, return_final_state: bool = False):
        """x (b, l, c) -> (b, l, c) [, final state (b, c, k-1)]."""
        return dispatch.causal_conv1d(
            x, self.weight, self.bias, self.activation, reset=reset, return_final_state=return_final_state
        )

    def step(self, x: torch.Tensor, conv_state: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """x (b, c); conv_state (pool, c, k-1) is rolled in place at `slots`."""
        return dispatch.causal_conv1d_update(x, conv_state, self.weight, self.bias, self.activation, state_indices=slots)

    def set_identity(self) -> None:
        """Pass-through initialisation: output = current input."""
        with torch.no_grad():
            self.weight.zero_()
            self.weight[:, -1] = 1.0
            self.bias.zero_()


class HeadExpansion(nn.Module):
    """d_xb -> d_inner for GQA: query head h reads kv head h // (n_heads / n_kv).

    Fixed (a runtime repeat, weights stay d_xb wide) or, as in the M1 paper, a learnable
    linear map initialised to that same repeat.
    """

    def __init__(self, n_kv: int, n_heads: int, head_dim: int, learnable: bool):
        super().__init__()
        self.n_kv, self.rep, self.head_dim = n_kv, n_heads // n_kv, head_dim
        self.proj = None
        if learnable:
            self.proj = nn.Linear(n_kv * head_dim, n_heads * head_dim, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(repeat_matrix(n_kv, n_heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.rep == 1:
            return x
        lead = x.shape[:-1]
        x = x.view(*lead, self.n_kv, 1, self.head_dim).expand(*lead, self.n_kv, self.rep, self.head_dim)
        return x.reshape(*lead, self.n_kv * self.rep * self.head_dim)


def repeat_matrix(n_kv: int, n_heads: int, head_dim: int) -> torch.Tensor:
    """(n_heads*hd, n_kv*hd) 0/1 matrix M with M @ x == head-wise repeat of x."""
    rep = n_heads // n_kv
    eye = torch.eye(n_kv * head_dim).view(n_kv, head_dim, n_kv * head_dim)
    return eye[:, None].expand(n_kv, rep, head_dim, n_kv * head_dim).reshape(n_heads * head_dim, n_kv * head_dim)


def init_dt_bias(size: int, dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4) -> torch.Tensor:
    """softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], floored (Mamba's dt init)."""
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def gated_rms_norm(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Mamba-2's gated norm: RMSNorm(y * silu(z)) * weight, in fp32."""
    g = y.float() * F.silu(z.float())
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return (weight.float() * g).to(y.dtype)
