"""Rollouts from the generation engine on the CURRENT policy weights.

`rollout.dtype: policy` (default): the engine runs the policy module itself. The optimizer updates
the parameters in place (same storage), so the engine, and the CUDA graphs it captured over those
tensors, always read the latest weights: there is no copy to go stale.
`rollout.dtype: bf16` (GPU): the engine runs a bf16 mirror whose tensors are overwritten in place
(`copy_`, same storage, graphs stay valid) from the fp32 policy right before every rollout.

The engine's state pool (KV for attention layers, SSM/conv state for Mamba layers) is sized once
(slots = rollouts per process unless `rollout.max_batch`) and reused by every step; it sits idle
during the update. `rollout.release_between_phases: true` frees it (and the graphs) after each
rollout instead, trading a rebuild and graph capture per step for the memory.
"""

from __future__ import annotations

import copy

import torch

from thinkfast.inference.engine import Engine
from thinkfast.inference.params import Completion, SamplingParams
from thinkfast.rl.config import RolloutConfig


class RolloutEngine:
    def __init__(self, policy, tokenizer, cfg: RolloutConfig, max_len: int, max_batch: int):
        self.policy, self.tokenizer, self.cfg = policy, tokenizer, cfg
        self.max_len, self.max_batch = int(max_len), int(max_batch)
        self.mirror = None
        if cfg.dtype == "bf16":
            self.mirror = copy.deepcopy(policy).to(torch.bfloat16).cast_ssm_params_fp32().eval()
            for p in self.mirror.parameters():
                p.requires_grad_(False)
        self.engine: Engine | None = None
        self.builds = 0

    @property
    def model(self):
        return self.mirror if self.mirror is not None else self.policy

    @torch.no_grad()
    def refresh(self) -> None:
        """Bring the bf16 mirror up to the policy's current weights, in place."""
        if self.mirror is None:
            return
        for dst, src in zip(self.mirror.parameters(), self.policy.parameters()):
            dst.copy_(src)

    def get(self) -> Engine:
        if self.engine is None:
            self.engine = Engine(
                self.model, self.tokenizer, max_batch=self.max_batch, max_len=self.max_len,
                cuda_graphs=self.cfg.cuda_graphs, sync_every=self.cfg.sync_every, progress=False,
            )
            self.builds += 1
        return self.engine

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, n: int,
                 keys: list[int] | None = None) -> list[list[Completion]]:
        """`keys`: a stable identity per prompt (Engine.generate), so a prompt's samples do not depend on the batch."""
        self.refresh()
        was_training = self.policy.training
        self.policy.eval()
        try:
            return self.get().generate(prompt_ids, params, n=n, progress=False, keys=keys)
        finally:
            self.policy.train(was_training)
            if self.cfg.release_between_phases:
                self.release()

    def release(self) -> None:
        self.engine = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
