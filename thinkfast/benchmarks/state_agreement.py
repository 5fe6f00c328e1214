"""How much a bf16 recurrent state changes a student's greedy generations.

The engine can keep the Mamba layers' recurrent state in bf16 (`ssm_state_dtype`, docs/engine.md): every step
loads it into fp32, updates it and rounds what it writes back. Those roundings can add up over a long
generation. This measures their effect where it shows first, on greedy decoding: the same prompts are
decoded with each state dtype from the same weights, and the completions are compared token by token
against the first dtype's.

    python scripts/state_dtype_agreement.py STUDENT_DIR --problems 200 --max-new-tokens 512
"""

from __future__ import annotations

import statistics

from thinkfast.inference.params import SamplingParams


def common_prefix(a: list[int], b: list[int]) -> int:
    """Number of leading tokens two completions share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare(reference: list[list[int]], other: list[list[int]]) -> dict:
    """Agreement of `other`'s greedy completions with `reference`'s, prompt by prompt.

    identical: fraction of prompts whose completions are the same tokens;
    prefix_fraction: mean over prompts of (shared leading tokens / reference length), 1.0 when identical;
    first_divergence: mean index of the first differing token over the prompts that differ (None if none)."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference completions but {len(other)} to compare")
    prefixes = [common_prefix(a, b) for a, b in zip(reference, other)]
    identical = [a == b for a, b in zip(reference, other)]
    diverged = [p for p, same in zip(prefixes, identical) if not same]
    return {
        "prompts": len(reference),
        "identical": sum(identical) / len(reference),
        "prefix_fraction": statistics.fmean(p / max(1, len(a)) if a != b else 1.0
                                            for p, a, b in zip(prefixes, reference, other)),
        "first_divergence": statistics.fmean(diverged) if diverged else None,
        "mean_tokens": statistics.fmean(len(a) for a in reference),
    }


def greedy_agreement(model, tokenizer, prompts: list, state_dtypes: list[str], max_new_tokens: int,
                     max_batch: int = 256, control_batch: int | None = None) -> dict:
    """Greedy completions of `prompts` with each of `state_dtypes` (same weights, one engine each), compared
    with the first dtype's: {"versus": {dtype: compare(...)}} for every later dtype.

    `control_batch`: also decode with the first dtype at that many slots and compare it the same way
    ("versus"["<dtype>@batch<N>"]): in bf16 weights another batch size changes the matmuls' rounding, which is
    the noise floor that a state dtype's effect should be read against."""
    from thinkfast.inference.engine import Engine, encode_prompts

    ids = prompts if prompts and isinstance(prompts[0], list) else encode_prompts(tokenizer, prompts)
    capacity = max(len(p) for p in ids) + max_new_tokens
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)

    def decode(dtype: str, slots: int) -> list[list[int]]:
        engine = Engine(model, tokenizer, max_batch=min(slots, len(ids)), max_len=capacity, progress=False,
                        ssm_state_dtype=dtype)
        return [out[0].token_ids for out in engine.generate(ids, params)]

    first = state_dtypes[0]
    reference = decode(first, max_batch)
    versus = {dtype: compare(reference, decode(dtype, max_batch)) for dtype in state_dtypes[1:]}
    if control_batch:
        versus[f"{first}@batch{control_batch}"] = compare(reference, decode(first, control_batch))
    return {"reference": first, "max_batch": min(max_batch, len(ids)), "max_new_tokens": max_new_tokens,
            "versus": versus}
