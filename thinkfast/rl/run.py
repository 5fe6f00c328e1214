"""Config -> policy, tokenizer, prompts, golds -> `grpo_train` (what `thinkfast grpo` runs)."""

from __future__ import annotations

import torch

from thinkfast.device import resolve_device
from thinkfast.errors import ThinkfastError
from thinkfast.rl.config import GRPOConfig
from thinkfast.rl.loop import GRPOResult, build_prompts, grpo_train


def load_policy(spec: str):
    """A thinkfast student directory, or any teacher spec (converted to our all-attention stack), in fp32 on the CPU."""
    from thinkfast.loading import load_model

    return load_model(spec, dtype=torch.float32, device="cpu", tokenizer=False)[0]


def load_problems_for(cfg: GRPOConfig):
    from thinkfast.evaluation.datasets import load_problems

    if not cfg.data.path:
        raise ThinkfastError("data.path is empty: give a problems JSONL (question/problem + answer) or a name like gsm8k")
    return load_problems(cfg.data.path, data_dir=cfg.data.data_dir, split=cfg.data.split, limit=cfg.data.limit).problems


def run_grpo(cfg: GRPOConfig, resume: bool = False, on_step=None) -> GRPOResult:
    if not cfg.policy:
        raise ThinkfastError("`policy:` is empty: set it to the student directory to train (policy=/path/to/student)")
    from thinkfast.teachers.loading import load_tokenizer

    problems = load_problems_for(cfg)  # data errors surface before any model loads
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy)
    prompts = build_prompts(cfg, tokenizer, [p.question for p in problems])
    if resolve_device(cfg.device).type == "cpu":
        torch.set_flush_denormal(True)  # the CPU reference Mamba scans otherwise slow down ~100x on denormals
    policy = load_policy(cfg.policy)
    reference = load_policy(cfg.reference) if cfg.reference and cfg.loss.kl_coef > 0 else None
    return grpo_train(cfg, policy, tokenizer, prompts, [p.gold for p in problems], resume=resume, on_step=on_step,
                      reference=reference)
