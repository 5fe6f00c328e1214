"""The GRPO loop. One step:

  1. rollout  — this process's shard of `batch_prompts` prompts, `group_size` samples each, from the
                engine on the current policy weights (rollouts.py);
  2. reward   — the grader scores every response; advantages are normalised within each group;
  3. old log-probs — one no-grad pass of the policy over the packed rollouts (the ratio's denominator);
  4. update   — `ppo_epochs` passes over the rollouts in shuffled mini-batches of
                `mini_batch_prompts x group_size` rollouts, one optimizer step each; a mini-batch is
                split into packed rows of `micro_batch_tokens` (gradient accumulation).
Gradients are all-reduced by DDP; loss weights use the mini-batch's GLOBAL token / sequence counts,
so k processes take the same step as one process with the whole batch.
Checkpoints (atomic) hold the model, optimizer, scheduler, prompt-sampler position, step and RNG;
rollout seeds derive from (seed, step, rank), so a resumed run repeats what the killed one would do.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from thinkfast.errors import ThinkfastError
from thinkfast.inference.engine import encode_prompts
from thinkfast.inference.params import SamplingParams, engine_max_len
from thinkfast.rl.batching import PolicyScorer, Rollout, dummy_micro_batch, pack, per_token
from thinkfast.rl.config import GRPOConfig
from thinkfast.rl.objective import aggregation_weights, clipped_objective, group_advantages
from thinkfast.rl.rollouts import RolloutEngine
from thinkfast.training import checkpoint as ckpt
from thinkfast.training.distributed import DistInfo, all_reduce_sum, setup_device, wrap
from thinkfast.training.loop import Chassis, Finished, autocast_for, folder_lock, no_sync, open_checkpoint
from thinkfast.training.schedule import build_optimizer, build_scheduler

STAT_NAMES = ("loss", "clip_frac", "approx_kl", "ratio", "entropy", "kl", "grad_norm")


@dataclass
class GRPOResult:
    metrics: list[dict] = field(default_factory=list)  # rows of the steps run here
    final_dir: Path | None = None


class PromptSampler:
    """Global step g takes prompts [g*B, (g+1)*B) of a per-epoch permutation drawn from (seed, epoch);
    rank r gets the r-th contiguous B/world of them. (epoch, offset) is the whole state."""

    def __init__(self, n: int, batch: int, seed: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True):
        if n < batch:
            raise ThinkfastError(f"{n} prompts are fewer than one batch (batch_prompts={batch}): add data or shrink it")
        self.n, self.batch, self.seed, self.rank, self.world, self.shuffle = n, batch, seed, rank, world, shuffle
        self.epoch, self.offset = 0, 0

    def order(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next(self) -> list[int]:
        if self.offset + self.batch > self.n:
            self.epoch, self.offset = self.epoch + 1, 0
        window = self.order(self.epoch)[self.offset : self.offset + self.batch]
        self.offset += self.batch
        per = self.batch // self.world
        return window[self.rank * per : (self.rank + 1) * per]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def _all_reduce_max(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 1009 + rank) % (1 << 62)


def build_prompts(cfg: GRPOConfig, tokenizer, questions: Sequence[str]) -> list[str]:
    from thinkfast.evaluation.prompts import load_template, render_prompt

    template = load_template(cfg.data.prompt_style)
    return [render_prompt(tokenizer, template, q, use_chat_template=cfg.data.chat_template) for q in questions]


@torch.no_grad()
def score_rollouts(scorer, rollouts: list[Rollout], row_tokens: int, pad_id: int, device, autocast, rows: int = 1) -> list[torch.Tensor]:
    """Per-rollout log-probs of the response tokens (fp32), one packed no-grad pass."""
    out: list[torch.Tensor | None] = [None] * len(rollouts)
    for mb in pack(rollouts, row_tokens, pad_id, rows):
        mb = mb.to(device)
        with autocast():
            logp, _ = scorer(mb.input_ids, mb.position_ids, mb.targets)
        for i, part in zip(mb.rollouts, logp.split([len(rollouts[i].response_ids) for i in mb.rollouts])):
            out[i] = part.float()
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------- the steps of one GRPO step
def _rollout(cfg: GRPOConfig, engine: RolloutEngine, prompt_ids, local: list[int], step: int, info: DistInfo, device):
    """1. Sample a group of responses for each of this process's prompts -> (completions, seconds)."""
    t0 = time.perf_counter()
    sp = SamplingParams(
        temperature=cfg.rollout.temperature, top_k=cfg.rollout.top_k, top_p=cfg.rollout.top_p,
        max_new_tokens=cfg.rollout.max_new_tokens, seed=_step_seed(cfg.seed, step, info.rank),
    )
    completions = engine.generate([prompt_ids[i] for i in local], sp, cfg.rollout.group_size)
    _sync(device)
    return completions, time.perf_counter() - t0


def _score(cfg: GRPOConfig, policy, scorer, ref_scorer, completions, prompt_ids, golds, local: list[int], reward_fn,
           pad_id: int, device, autocast):
    """2. Rewards, group advantages, and the old (and reference) log-probs of every rollout
    -> (rollouts, rewards [prompts, G], reward seconds, log-prob seconds)."""
    t0 = time.perf_counter()
    flat = [c for group in completions for c in group]
    scores = reward_fn([golds[local[c.prompt_index]] for c in flat], [c.text for c in flat])
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32).view(len(local), cfg.rollout.group_size)
    adv = group_advantages(rewards, cfg.loss.adv_eps).flatten().tolist()
    rollouts = [
        Rollout(prompt_ids[local[c.prompt_index]], list(c.token_ids), c.prompt_index, s.reward, s.correct,
                s.formatted, c.finish_reason, a)
        for c, s, a in zip(flat, scores, adv)
    ]
    reward_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    policy.train()
    for r, lp in zip(rollouts, score_rollouts(scorer, rollouts, cfg.micro_batch_tokens, pad_id, device, autocast, cfg.micro_batch_rows)):
        r.old_logp = lp
    if ref_scorer is not None:
        for r, lp in zip(rollouts, score_rollouts(ref_scorer, rollouts, cfg.micro_batch_tokens, pad_id, device, autocast,
                                               cfg.micro_batch_rows)):
            r.ref_logp = lp
    _sync(device)
    return rollouts, rewards, reward_s, time.perf_counter() - t0


def _update(cfg: GRPOConfig, model, optimizer, scheduler, params_list, rollouts: list[Rollout], step: int, pad_id: int,
            with_ref: bool, output_dir: Path, info: DistInfo, device, autocast):
    """3. PPO epochs over mini-batches of the rollouts -> (summed STAT_NAMES, optimizer updates, seconds)."""
    t0 = time.perf_counter()
    G = cfg.rollout.group_size
    stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=device)
    gen = torch.Generator().manual_seed(_step_seed(cfg.seed + 1, step, info.rank))
    per_mb = cfg.mini_batch_prompts * G // info.world_size
    updates = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(rollouts), generator=gen).tolist()
        for mb_start in range(0, len(rollouts), per_mb):
            chosen = [rollouts[i] for i in order[mb_start : mb_start + per_mb]]
            micro = pack(chosen, cfg.micro_batch_tokens, pad_id, cfg.micro_batch_rows)
            counts = all_reduce_sum(torch.tensor([float(sum(len(r.response_ids) for r in chosen)), float(len(chosen))],
                                                 device=device), info)
            n_micro = int(_all_reduce_max(torch.tensor([len(micro)], device=device), info).item())
            micro += [dummy_micro_batch(pad_id)] * (n_micro - len(micro))
            total_tokens, total_seqs = float(counts[0]), float(counts[1])
            for k, mb in enumerate(micro):
                mb = mb.to(device)
                if mb.rollouts:
                    lengths = [len(chosen[i].response_ids) for i in mb.rollouts]
                    weights = aggregation_weights(lengths, cfg.loss.aggregation, total_tokens, total_seqs, device)
                    advantages = torch.repeat_interleave(
                        torch.tensor([chosen[i].advantage for i in mb.rollouts], device=device),
                        torch.tensor(lengths, device=device))
                    old = per_token(chosen, mb, "old_logp").to(device)
                    ref = per_token(chosen, mb, "ref_logp").to(device) if with_ref else None
                else:  # a process with fewer rows than its peers: zero-weight row
                    weights = advantages = old = torch.zeros(1, device=device)
                    ref = torch.zeros(1, device=device) if with_ref else None
                with no_sync(model, k == len(micro) - 1), autocast():
                    logp, entropy = model(mb.input_ids, mb.position_ids, mb.targets)
                loss, parts = clipped_objective(
                    logp, old, advantages, weights, cfg.loss.clip_eps, cfg.loss.clip_high, entropy,
                    cfg.loss.entropy_coef, ref, cfg.loss.kl_coef,
                )
                (loss * info.world_size).backward()  # DDP averages over processes
                stats[0] += float(loss.detach())
                for j, name in enumerate(STAT_NAMES[1:-1], start=1):
                    if name in parts:
                        stats[j] += float(parts[name])
            if cfg.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params_list, cfg.optim.grad_clip)
            else:
                norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params_list if p.grad is not None))
            if not torch.isfinite(norm):
                raise ThinkfastError(
                    f"non-finite gradient at step {step + 1}: stopped before the update; the last checkpoint in "
                    f"{output_dir} is intact. Lower optim.lr or train with dtype=fp32"
                )
            stats[-1] += float(norm) / info.world_size  # every process holds the same all-reduced norm
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            updates += 1
    _sync(device)
    return stats, updates, time.perf_counter() - t0


def _metrics(cfg: GRPOConfig, rollouts: list[Rollout], rewards: torch.Tensor, stats: torch.Tensor, updates: int,
             scheduler, info: DistInfo, device, with_ref: bool, step: int, t_step: float, rollout_s: float,
             reward_s: float, old_logprob_s: float, train_s: float) -> dict:
    """4. The step's metrics row, summed over processes."""
    lengths_t = [len(r.response_ids) for r in rollouts]
    groups = rewards.shape[0]
    zero_groups = int(sum(bool((rewards[g] == rewards[g, 0]).all()) for g in range(groups)))
    sums = all_reduce_sum(torch.tensor([
        float(rewards.sum()), float(sum(r.correct for r in rollouts)), float(sum(r.formatted for r in rollouts)),
        float(sum(lengths_t)), float(sum(r.finish_reason == "length" for r in rollouts)), float(len(rollouts)),
        float(zero_groups), float(groups),
    ], dtype=torch.float64, device=device), info)
    stats = all_reduce_sum(stats, info) / max(updates, 1)
    longest = int(_all_reduce_max(torch.tensor([max(lengths_t)], device=device), info).item())
    n = float(sums[5])
    update_s = old_logprob_s + train_s
    row = {
        "step": step + 1,
        "reward_mean": float(sums[0]) / n,
        "accuracy": float(sums[1]) / n,
        "format_rate": float(sums[2]) / n,
        "response_length": float(sums[3]) / n,
        "response_length_max": longest,
        "truncated_frac": float(sums[4]) / n,
        "zero_adv_groups": float(sums[6]) / float(sums[7]),
        **{name: float(stats[j]) for j, name in enumerate(STAT_NAMES)},
        "lr": scheduler.get_last_lr()[0],
        "updates": updates,
        "rollout_s": rollout_s,
        "reward_s": reward_s,
        "old_logprob_s": old_logprob_s,
        "train_s": train_s,
        "update_s": update_s,
        "rollout_frac": rollout_s / (rollout_s + update_s) if rollout_s + update_s > 0 else 0.0,
        "gen_tokens": int(sums[3]),
        "gen_tokens_per_s": float(sums[3]) / info.world_size / rollout_s if rollout_s > 0 else 0.0,
        "step_s": time.perf_counter() - t_step,
    }
    if not with_ref:
        row.pop("kl")
    if device.type == "cuda":
        row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def grpo_train(
    cfg: GRPOConfig,
    policy,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    golds: Sequence[str],
    reward_fn: Callable | None = None,
    resume: bool = False,
    on_step: Callable[[int, dict], None] | None = None,
    reference=None,
) -> GRPOResult:
    """Train `policy` (a ThinkfastForCausalLM) in place. `prompts` are rendered prompt strings (or
    token ids); `reward_fn(golds, responses) -> [Score]` defaults to `MathReward(cfg.reward)`."""
    if len(prompts) != len(golds):
        raise ThinkfastError(f"{len(prompts)} prompts but {len(golds)} gold answers")
    device, info = setup_device(cfg.device)
    cfg.check_world(info.world_size)
    output_dir = Path(cfg.output_dir)
    with folder_lock(output_dir, "GRPO folder", info):
        return _grpo_locked(cfg, policy, tokenizer, prompts, golds, reward_fn, resume, on_step, reference, device,
                            info, output_dir)


def _grpo_locked(cfg, policy, tokenizer, prompts, golds, reward_fn, resume, on_step, reference, device, info,
                 output_dir: Path) -> GRPOResult:
    torch.manual_seed(cfg.seed)
    try:
        found = open_checkpoint(output_dir, resume, info, finished="policy")
    except Finished as done:
        return GRPOResult(final_dir=done.final)
    if found is not None and found.get("world_size", 1) != info.world_size:
        raise ThinkfastError(f"the checkpoint was written by {found['world_size']} processes; resume with as many")
    G = cfg.rollout.group_size
    prompt_ids = encode_prompts(tokenizer, list(prompts))
    pad_id = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0

    policy = policy.to(device)
    policy.cast_ssm_params_fp32()
    policy.activation_checkpointing = cfg.activation_checkpointing
    if cfg.loss.kl_coef > 0 and reference is None:  # the initial policy, taken before any checkpoint loads
        reference = copy.deepcopy(policy)
    if reference is not None:
        reference = reference.to(device).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    scorer = PolicyScorer(policy, cfg.loss.chunk_tokens, cfg.rollout.temperature)
    model = wrap(scorer, info, "ddp", device)
    ref_scorer = PolicyScorer(reference, cfg.loss.chunk_tokens, cfg.rollout.temperature) if reference is not None else None
    optimizer = build_optimizer(policy.named_parameters(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.max_steps * cfg.updates_per_step, cfg.optim)
    sampler = PromptSampler(len(prompt_ids), cfg.batch_prompts, cfg.seed, info.rank, info.world_size, cfg.data.shuffle)
    if found is not None:
        policy.load_state_dict(found["model"])  # copies into the existing tensors: storage unchanged
        optimizer.load_state_dict(found["optimizer"])
        scheduler.load_state_dict(found["scheduler"])
        sampler.load_state_dict(found["sampler"])
        ckpt.restore_rng(found, output_dir, info.rank)

    def state() -> dict:
        return {"model": policy.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "sampler": sampler.state_dict(), "world_size": info.world_size}

    chassis = Chassis(cfg, output_dir, info, found, cfg.max_steps, state, desc="grpo")
    try:
        start = chassis.start
        if reward_fn is None:
            from thinkfast.rl.reward import MathReward

            reward_fn = MathReward(cfg.reward)
        per_rank_prompts = cfg.batch_prompts // info.world_size
        max_len = engine_max_len(cfg.rollout.max_new_tokens, (len(ids) for ids in prompt_ids))
        rollouts_engine = RolloutEngine(policy, tokenizer, cfg.rollout, max_len, cfg.rollout.max_batch or per_rank_prompts * G)
        autocast = autocast_for(cfg.dtype, device)
        params_list = [p for p in policy.parameters() if p.requires_grad]
        result = GRPOResult()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for step in range(start, cfg.max_steps):
            t_step = time.perf_counter()
            local = sampler.next()
            completions, rollout_s = _rollout(cfg, rollouts_engine, prompt_ids, local, step, info, device)
            rollouts, rewards, reward_s, old_logprob_s = _score(
                cfg, policy, scorer, ref_scorer, completions, prompt_ids, golds, local, reward_fn, pad_id, device, autocast)
            stats, updates, train_s = _update(cfg, model, optimizer, scheduler, params_list, rollouts, step, pad_id,
                                              ref_scorer is not None, output_dir, info, device, autocast)
            row = _metrics(cfg, rollouts, rewards, stats, updates, scheduler, info, device, ref_scorer is not None,
                           step, t_step, rollout_s, reward_s, old_logprob_s, train_s)
            result.metrics.append(row)
            chassis.record(step + 1, row, reward=f"{row['reward_mean']:.3f}", acc=f"{row['accuracy']:.3f}",
                           rollout_s=f"{rollout_s:.1f}", update_s=f"{row['update_s']:.1f}")
            if chassis.due(step + 1):
                chassis.save(step + 1)
            if on_step is not None:
                on_step(step + 1, row)
        chassis.close()
    finally:
        chassis.stop.restore()  # also when a step raised

    def write_final(tmp: Path) -> None:
        policy.save_pretrained(str(tmp), safe_serialization=True)
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(tmp))

    final = chassis.write_final(write_final)
    if final is not None:
        result.final_dir = final
    close = getattr(reward_fn, "close", None)
    if callable(close):
        close()
    return result
