"""Each model's decode throughput for the time budgets, measured the papers' way.

M1 and "Thinking Slow, Fast" price k samples as k × tokens per sample ÷ the model's throughput at
its *best* batch size.  So for every model and every evaluation set we:

  1. take the evaluation's own lengths: prompt = the mean length of that set's prompts (rendered
     through the chat template and tokenized, as the sampler will see them), unless
     `speed.prompt_tokens` fixes it; generation = `sampling.max_new_tokens` (the length a sample
     may reach), unless `speed.new_tokens` fixes it;
  2. try each candidate batch of `speed.batches` that the engine's memory planner says fits at
     that context (prompt + generation);
  3. keep the batch with the highest decode throughput (prefill excluded, ignore_eos), sampling with the
     evaluation's temperature and filters when it gives them (`sampler`): the sampler is part of each
     decode step's cost (greedy otherwise).

Methods (`speed.method`):
  full     engine.generate end to end on random prompts of the mean length; decode windows timed
           by the engine (what a sampling run does);
  sampled  the engine's decode step timed at a few context lengths along the generation and
           integrated (the benchmark's cheap method; the step cost is linear in the context).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field

import torch

from thinkfast.errors import ThinkfastError
from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE

log = logging.getLogger("thinkfast.run")
METHODS = ("full", "sampled")


def prompt_lengths(tokenizer, dataset, prompt_style: str, use_chat_template: bool = True) -> list[int]:
    """Token counts of an eval set's prompts as the sampler will send them."""
    from thinkfast.evaluation.config import EvalConfig
    from thinkfast.evaluation.pipeline import load_problem_set
    from thinkfast.evaluation.prompts import load_template, render_prompt
    from thinkfast.inference.engine import encode_prompts

    problems = load_problem_set(EvalConfig(dataset=dataset, prompt=prompt_style, progress=False))
    if not problems.problems:
        raise ThinkfastError(f"eval set {dataset.name!r} has no problems")
    template = load_template(prompt_style)
    texts = [render_prompt(tokenizer, template, p.question, use_chat_template) for p in problems.problems]
    return [len(ids) for ids in encode_prompts(tokenizer, texts)]


@dataclass
class Session:
    """One engine (or sampled timer) sized for the largest candidate batch at one context."""

    model: object
    tokenizer: object
    prompt_tokens: int
    new_tokens: int
    method: str
    max_batch: int
    seed: int = 0
    checkpoints: int = 3
    steps: int = 4
    sampler: object = None  # SamplingParams whose temperature / top-k / top-p / min-p are timed; None: greedy
    ssm_state_dtype: str = DEFAULT_SSM_STATE_DTYPE  # Mamba layers' recurrent state in the engine: fp32 | bf16
    engine: object = field(init=False, default=None)
    timer: object = field(init=False, default=None)

    def __post_init__(self):
        capacity = self.prompt_tokens + self.new_tokens
        if self.method == "sampled":
            from thinkfast.benchmarks.speed import SampledTimer

            self.timer = SampledTimer(self.model, capacity, self.max_batch, self.prompt_tokens, seed=self.seed,
                                      ssm_state_dtype=self.ssm_state_dtype, sampler=self.sampler)
            self.engine = self.timer.engine
        else:
            from thinkfast.inference.engine import Engine
            from thinkfast.inference.params import timing_params

            self.engine = Engine(self.model, self.tokenizer, max_batch=self.max_batch, max_len=capacity, progress=False,
                                 prefill_tokens=max(8192, 8 * self.prompt_tokens),
                                 ssm_state_dtype=self.ssm_state_dtype)
            warm = self._prompts(2)
            self.engine.generate(warm, timing_params(self.sampler, 4))  # the timed mode's kernels, warmed

    @property
    def slots(self) -> int:
        return self.engine.num_slots

    @property
    def plan_reason(self) -> str:
        return self.engine.plan.reason

    def _prompts(self, n: int) -> list[list[int]]:
        vocab = self.model.config.vocab_size
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randint(0, vocab, (n, self.prompt_tokens), generator=gen).tolist()

    def measure(self, batch: int) -> float:
        """Decode tokens/s of `batch` sequences generating `new_tokens` after `prompt_tokens`."""
        if self.method == "sampled":
            return self.timer.tokens_per_s(batch, self.prompt_tokens, self.new_tokens, self.checkpoints,
                                           self.steps)["tokens_per_s"]
        from thinkfast.inference.params import timing_params

        # a few distinct prompts, each forked into batch/d slots (prefill once, as the eval samples n
        # per problem): every sequence is admitted at once, so the whole decode runs at `batch`
        distinct = math.gcd(batch, 8)
        params = timing_params(self.sampler, self.new_tokens)
        self.engine.generate(self._prompts(distinct), params, n=batch // distinct)
        return float(self.engine.last_stats["decode_tokens_per_s"])


def measure_batch(session: Session, batch: int) -> float:
    """The one measurement (a seam: tests replace it)."""
    return session.measure(batch)


def best_batch(model, tokenizer, batches: list[int], prompt_tokens: int, new_tokens: int, method: str = "full",
               seed: int = 0, checkpoints: int = 3, steps: int = 4, sampler=None,
               ssm_state_dtype: str = DEFAULT_SSM_STATE_DTYPE) -> dict:
    """Sweep the candidate batches that fit; the fastest one is the model's throughput."""
    if method not in METHODS:
        raise ThinkfastError(f"speed.method must be one of {METHODS}, got {method!r}")
    candidates = sorted({int(b) for b in batches})
    session = Session(model, tokenizer, prompt_tokens, new_tokens, method, max(candidates), seed, checkpoints, steps,
                      sampler, ssm_state_dtype)
    sweep = []
    for batch in candidates:
        if batch > session.slots:
            sweep.append({"batch": batch, "fits": False, "reason": f"memory planner: {session.plan_reason}"})
            continue
        tps = measure_batch(session, batch)
        sweep.append({"batch": batch, "fits": True, "tokens_per_s": tps})
        log.info("  batch %d: %.0f tok/s", batch, tps)
    del session
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    measured = [s for s in sweep if s["fits"]]
    if not measured:
        raise ThinkfastError(
            f"no candidate batch in {candidates} fits at {prompt_tokens}+{new_tokens} tokens: {sweep[0]['reason']}")
    best = max(measured, key=lambda s: s["tokens_per_s"])
    from thinkfast.inference.params import timing_params

    sampled = timing_params(sampler, new_tokens)
    return {"method": method, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "temperature": sampled.temperature, "batch_size": best["batch"], "decode_tokens_per_s": best["tokens_per_s"],
            "sweep": sweep}


def mean_length(lengths: list[int]) -> int:
    return max(1, round(statistics.fmean(lengths)))
