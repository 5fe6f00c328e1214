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


# Parameters that never take weight decay, by name, whatever their rank: SSM dynamics (A_log is
# (d_inner, 16) in Mamba-1), skips, every bias, norm weights, and per-channel tables.
NO_DECAY_PARAMS = ("A_log", "D", "dt_bias", "a_bias", "z_bias", "norm_weight", "bias")


def weight_decay_applies(name: str, param: torch.Tensor) -> bool:
    """True for the matrices of linear maps and embeddings only.

    Not decayed: the names in NO_DECAY_PARAMS, anything inside a norm module (`*norm*.weight`),
    the depthwise conv taps (`conv1d.*`: per-channel filters), and any other tensor of rank < 2.
    """
    parts = name.split(".")
    if parts[-1] in NO_DECAY_PARAMS:
        return False
    if any("norm" in part or part == "conv1d" for part in parts[:-1]):
        return False
    return param.ndim >= 2


def build_optimizer(params, cfg: OptimConfig, lr: float | None = None, no_decay=None, fused: bool = False,
                    lr_scale=None) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, decay only where `weight_decay_applies`.

    `params`: named_parameters() (name rules apply) or bare parameters (then only rank >= 2 decays).
    `no_decay(name) -> bool`: extra names to keep out of decay (MOHAWK stage 1: in_proj, whose x and z
    rows get no gradient there, so decoupled decay would be their only - unwanted - update).
    fused: PyTorch's single-kernel AdamW (same update rule; it also accepts the `found_inf` flag the
    trainer uses to skip a non-finite step without a host sync).
    `lr_scale(name) -> float`: a multiplier of lr per parameter (one group per distinct value; the schedule
    scales every group alike). None: one lr for all.
    """
    named = [(n, p) for n, p in map(_as_pair, params) if p.requires_grad]

    def decays(name, p):
        if name is None:
            return p.ndim >= 2
        if no_decay is not None and no_decay(name):
            return False
        return weight_decay_applies(_strip_wrappers(name), p)

    base = lr or cfg.lr

    def scale(name):
        return 1.0 if lr_scale is None or name is None else float(lr_scale(_strip_wrappers(name)))

    groups: dict[tuple[bool, float], list] = {(True, 1.0): [], (False, 1.0): []}
    for n, p in named:
        groups.setdefault((decays(n, p), scale(n)), []).append(p)
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decayed else 0.0, "lr": base * factor}
                    for (decayed, factor), ps in groups.items() if ps or factor == 1.0]
    return torch.optim.AdamW(param_groups, lr=base, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)


def _as_pair(item):
    return item if isinstance(item, tuple) else (None, item)


def _strip_wrappers(name: str) -> str:
    """DDP's `module.` and checkpoint wrappers' prefixes do not change what a parameter is."""
    return ".".join(p for p in name.split(".") if p not in ("module", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"))
