"""What a generation request asks for and what it returns.

Shared by the engine, the evaluation sampler and GRPO rollouts, so that every
caller speaks the same language whichever backend produces the tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from thinkfast.errors import ThinkfastError

# The recurrent (SSM) state of Mamba layers in an engine's slot pool: "fp32" or "bf16" (half the bytes read
# and written per decode step; each step still computes in fp32: load -> fp32, update, store rounded).
# fp32 by default: on an H200 bf16 bought 1.01-1.05x decode speed at Qwen-0.5B/1.5B shapes (docs/engine.md).
SSM_STATE_DTYPES = ("fp32", "bf16")
DEFAULT_SSM_STATE_DTYPE = "fp32"


def resolve_ssm_state_dtype(name):
    """"fp32" / "bf16" (or torch.float32 / torch.bfloat16 themselves) -> the torch dtype of the SSM state pool."""
    from thinkfast.device import DTYPES  # torch: imported when an engine is built, not with this module

    allowed = {DTYPES[n] for n in SSM_STATE_DTYPES}
    if name in SSM_STATE_DTYPES:
        return DTYPES[name]
    if name in allowed:
        return name
    raise ThinkfastError(f"ssm_state_dtype must be one of {list(SSM_STATE_DTYPES)}, got {name!r}")


# Stands in for the longest prompt when an engine is sized before its prompts are read.
PROMPT_HEADROOM = 1024


def engine_max_len(max_new_tokens: int, prompt_lengths: Iterable[int] | None = None) -> int:
    """The cache positions per slot (the Engine's `max_len`) a request needs: its longest prompt plus
    `max_new_tokens` (one spare: the last sampled token is never fed back).  Without the prompt lengths,
    `PROMPT_HEADROOM` tokens are reserved for the prompt.  Every caller sizes its engine with this."""
    longest = PROMPT_HEADROOM if prompt_lengths is None else max(prompt_lengths)
    return longest + max_new_tokens


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy; the one default (configs and the CLI take it from here)
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1 disables
    min_p: float = 0.0  # 0 disables
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=list)  # stop strings (checked on decoded text)
    ignore_eos: bool = False
    seed: int | None = None

    def validate(self) -> None:
        if self.temperature < 0:
            raise ThinkfastError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ThinkfastError(f"top_k must be >= 0 (0 disables), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ThinkfastError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p < 1.0:
            raise ThinkfastError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.max_new_tokens < 1:
            raise ThinkfastError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    prompt_index: int  # index into the request's prompt list
    sample_index: int  # 0..n-1 among the samples of that prompt
    token_ids: list[int]  # generated tokens only (no prompt), stop token included if one fired
    text: str  # decoded generated text, cut before a stop string if one fired
    finish_reason: str  # "eos" | "stop" | "length"


def timing_params(sampler, new_tokens: int):
    """What a timed generation samples with: `sampler`'s temperature and filters (greedy without one), a fixed
    seed, exactly `new_tokens` tokens (no stop)."""
    if sampler is None:
        return SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    return SamplingParams(temperature=sampler.temperature, top_k=sampler.top_k, top_p=sampler.top_p,
                          min_p=sampler.min_p, max_new_tokens=new_tokens, ignore_eos=True, seed=0)
