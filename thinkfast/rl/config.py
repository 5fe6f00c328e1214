"""GRPO configuration (docs/design.md §3.4): one dataclass tree, loaded with `thinkfast.config.load_config`.

Batch sizes count PROMPTS over all processes; each prompt gets `rollout.group_size` samples, so a
step generates `batch_prompts x group_size` rollouts and takes
`ppo_epochs x batch_prompts / mini_batch_prompts` optimizer steps on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thinkfast.errors import ThinkfastError
from thinkfast.inference.params import SamplingParams
from thinkfast.training.config import OptimConfig

AGGREGATIONS = ("token_mean", "seq_mean")


@dataclass
class GRPOOptimConfig(OptimConfig):
    """AdamW as in training, with the RL defaults: lr 1e-6 (M1's round), constant, no warm-up."""

    lr: float = 1e-6
    schedule: str = "constant"
    warmup: float = 0
    weight_decay: float = 0.01


@dataclass
class PromptDataConfig:
    path: str = ""  # a problems JSONL (GSM8K/MATH layout: question|problem + answer) or a known name
    split: str = "train"  # for known names (gsm8k, math500, ...)
    data_dir: str | None = None  # where known names are looked up ($THINKFAST_DATA otherwise)
    limit: int | None = None  # keep the first N problems
    prompt_style: str = "m1"  # m1 | gsm8k | math | plain | a YAML template (evaluation/prompts.py)
    chat_template: bool = True  # render through the tokenizer's chat template
    shuffle: bool = True


@dataclass
class RolloutConfig:
    group_size: int = 8  # G: samples per prompt
    temperature: float = SamplingParams.temperature  # the sampling default; configs override it explicitly
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 1024
    dtype: str = "policy"  # policy: the engine runs the policy's own tensors | bf16: a bf16 copy refreshed in place before every rollout
    max_batch: int | None = None  # decode slots (None: rollouts per process, capped by the memory planner)
    cuda_graphs: bool = True
    sync_every: int = 16
    release_between_phases: bool = False  # free the engine's state pool after each rollout (rebuilt next step)

    def validate(self) -> None:
        if self.group_size < 2:
            raise ThinkfastError(f"rollout.group_size must be >= 2 (advantages are normalised within a group), got {self.group_size}")
        if self.max_new_tokens < 1:
            raise ThinkfastError("rollout.max_new_tokens must be >= 1")
        if self.dtype not in ("policy", "bf16"):
            raise ThinkfastError(f"rollout.dtype {self.dtype!r} must be 'policy' or 'bf16'")


@dataclass
class RewardConfig:
    correct: float = 1.0  # reward of a correct final answer
    format: float = 0.0  # added when the response holds a complete \boxed{...}
    response_prefix: str = ""  # text the prompt already opened (e.g. "\\boxed{"), prepended before grading
    timeout: float = 10.0  # seconds per symbolic check (grader worker processes)
    workers: int = 2
    cache: str | None = None  # SQLite verdict cache shared across runs


@dataclass
class GRPOLossConfig:
    clip_eps: float = 0.2  # ratio clipped to [1 - clip_eps, 1 + clip_eps_high]
    clip_eps_high: float | None = None  # None: clip_eps
    entropy_coef: float = 0.001  # eta: bonus eta * H(pi_theta) on response tokens
    kl_coef: float = 0.0  # beta: KL(pi_theta || pi_ref) penalty (k3 estimator); 0 = off, as in M1
    aggregation: str = "token_mean"  # token_mean: every response token of the mini-batch weighs the same | seq_mean
    adv_eps: float = 1e-6  # (r - mean) / (std + eps)
    chunk_tokens: int = 1024  # positions whose vocab logits exist at a time

    def validate(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ThinkfastError(f"loss.aggregation {self.aggregation!r} must be one of {list(AGGREGATIONS)}")
        if not 0 < self.clip_eps < 1:
            raise ThinkfastError(f"loss.clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.clip_eps_high is not None and self.clip_eps_high <= 0:
            raise ThinkfastError("loss.clip_eps_high must be > 0")
        if self.entropy_coef < 0 or self.kl_coef < 0:
            raise ThinkfastError("loss.entropy_coef and loss.kl_coef must be >= 0")

    @property
    def clip_high(self) -> float:
        return self.clip_eps if self.clip_eps_high is None else self.clip_eps_high


@dataclass
class GRPOConfig:
    policy: str = ""  # the model to train: a thinkfast student directory (or any teacher spec)
    reference: str | None = None  # KL reference (only with loss.kl_coef > 0); None: the initial policy
    tokenizer: str | None = None  # default: the policy's directory
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: GRPOLossConfig = field(default_factory=GRPOLossConfig)
    optim: GRPOOptimConfig = field(default_factory=GRPOOptimConfig)
    batch_prompts: int = 128  # prompts per step, all processes
    mini_batch_prompts: int = 64  # prompts per optimizer step (their group_size rollouts each)
    ppo_epochs: int = 1
    micro_batch_tokens: int = 16384  # packed tokens per row; a longer rollout gets a row of its own
    micro_batch_rows: int = 1  # rows per forward (padded to the longest); >1 helps the CPU reference scan
    max_steps: int = 100
    output_dir: str = "runs/grpo"
    seed: int = 0
    dtype: str = "auto"  # training forward: auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    device: str = "auto"
    activation_checkpointing: bool = False
    save_every: int = 50
    keep_checkpoint: bool = False  # keep checkpoint/ after final/ is saved (to extend the run later with --resume)
    log_every: int = 1
    distributed: str = "ddp"
    progress: bool = True

    def validate(self) -> None:
        for name in ("batch_prompts", "mini_batch_prompts", "ppo_epochs", "micro_batch_tokens", "micro_batch_rows", "max_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ThinkfastError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_prompts % self.mini_batch_prompts:
            raise ThinkfastError(
                f"batch_prompts={self.batch_prompts} must be a multiple of mini_batch_prompts={self.mini_batch_prompts}"
            )
        if self.distributed != "ddp":
            raise ThinkfastError("GRPO runs under DDP only (the engine needs whole weights on every rank): set distributed=ddp")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ThinkfastError("dtype must be auto, fp32 or bf16")

    def check_world(self, world_size: int) -> None:
        if self.batch_prompts % world_size or self.mini_batch_prompts % world_size:
            raise ThinkfastError(
                f"batch_prompts={self.batch_prompts} and mini_batch_prompts={self.mini_batch_prompts} must divide "
                f"evenly over {world_size} processes"
            )

    @property
    def updates_per_step(self) -> int:
        return self.ppo_epochs * (self.batch_prompts // self.mini_batch_prompts)
