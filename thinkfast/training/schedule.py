"""Learning-rate schedules with linear warm-up: cosine, warmup-stable-decay (WSD), constant."""

from __future__ import annotations

import math

import torch

from thinkfast.training.config import OptimConfig


def _steps(value: float, total: int) -> int:
    """A fraction (< 1) of `total`, or an absolute step count (>= 1)."""
    return int(round(value * total)) if value < 1 else int(value)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Multiplier of cfg.lr for optimizer step `step` (0-based)."""
    warmup = _steps(cfg.warmup, total)
    floor = cfg.min_lr_ratio
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay = max(1, _steps(cfg.decay, total))  # wsd: stable, then linear decay over the last `decay` steps
    start = total - decay
    if step < start:
        return 1.0
    return floor + (1 - floor) * max(0.0, (total - step) / decay)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))


def build_optimizer(params, cfg: OptimConfig, lr: float | None = None, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; no weight decay on 1-d tensors (norm weights, biases, A_log, D) as is customary.

    fused: PyTorch's single-kernel AdamW (same update rule; it also accepts the `found_inf` flag the
    trainer uses to skip a non-finite step without a host sync)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr or cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)
