"""References of the decode step's fused glue (see thinkfast/ops/triton/decode_fused.py):
exactly the eager PyTorch of RMSNorm, the residual add and the gated MLP's activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm_ref(h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float):
    if delta is not None:
        h = h + delta
    return h, rms_norm_ref(h, weight, eps)


def silu_mul_ref(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return F.silu(g) * u
