"""Batched next-token sampling on the device, with no host synchronisation.

Order of the filters (as in HF's logits warpers): temperature, top-k, top-p, min-p.
Sampling is Gumbel-max: argmax(filtered_logits + G) with G ~ Gumbel(0, 1) drawn from a
counter-based hash of (sequence seed, token index, vocab id).  A sequence's tokens thus
depend only on its own seed and logits — not on which slot it sits in, what else is in
the batch, or how many steps ran between host checks — so runs are reproducible and the
N samples of one prompt are independent streams.

All per-sequence parameters are (b,) tensors; which filters run at all is a static
`SamplerMode`, so a CUDA graph captures exactly the work a request needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thinkfast.inference.params import SamplingParams
from thinkfast.ops import dispatch
from thinkfast.ops.reference.sampling import gumbel_noise, row_keys  # noqa: F401 (gumbel_noise re-exported)

_MASK63 = (1 << 63) - 1


@dataclass(frozen=True)
class SamplerMode:
    """Which parts of the sampler run (static: chosen per request batch, fixed inside a graph)."""

    all_greedy: bool = True
    top_k: bool = False
    top_p: bool = False
    min_p: bool = False

    @classmethod
    def from_params(cls, params: SamplingParams) -> "SamplerMode":
        if params.greedy:
            return cls(all_greedy=True)
        return cls(all_greedy=False, top_k=params.top_k > 0, top_p=params.top_p < 1.0, min_p=params.min_p > 0.0)


def sequence_seed(base_seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed per (request seed, prompt, sample): splitmix64 of the triple."""
    x = (base_seed * 0x9E3779B97F4A7C15 + prompt_index * 0xBF58476D1CE4E5B9 + sample_index * 0x94D049BB133111EB) & (
        (1 << 64) - 1
    )
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & ((1 << 64) - 1)
    x ^= x >> 31
    return x & _MASK63


# ------------------------------------------------------------------ filters
def filter_logits(
    logits: torch.Tensor,  # (b, V)
    temperature: torch.Tensor,  # (b,) 0 = greedy row (left unscaled)
    top_k: torch.Tensor | None = None,  # (b,) long, 0 disables
    top_p: torch.Tensor | None = None,  # (b,) float, 1 disables
    min_p: torch.Tensor | None = None,  # (b,) float, 0 disables
) -> torch.Tensor:
    """Temperature-scaled fp32 logits with filtered-out tokens set to -inf."""
    x = logits.float() / torch.where(temperature > 0, temperature, 1.0).float()[:, None]
    remove = None
    if top_k is not None or top_p is not None:
        sorted_x, order = x.sort(dim=-1, descending=True)
        vocab = x.shape[-1]
        remove_sorted = torch.zeros_like(sorted_x, dtype=torch.bool)
        if top_k is not None:
            k = torch.where(top_k > 0, top_k, vocab).clamp(max=vocab)
            ranks = torch.arange(vocab, device=x.device)
            remove_sorted = ranks[None, :] >= k[:, None]
            sorted_x = sorted_x.masked_fill(remove_sorted, float("-inf"))
        if top_p is not None:
            probs = sorted_x.softmax(dim=-1)
            before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above
            remove_sorted = remove_sorted | (before >= top_p.float()[:, None])
        remove = torch.zeros_like(remove_sorted).scatter_(1, order, remove_sorted)
    if min_p is not None:  # p_i < min_p * p_max  <=>  x_i < x_max + log(min_p)
        x_max = x.max(dim=-1, keepdim=True).values
        low = x < x_max + torch.log(min_p.float())[:, None]
        remove = low if remove is None else remove | low
    return x if remove is None else x.masked_fill(remove, float("-inf"))


def sample_next(
    logits: torch.Tensor,  # (b, V)
    mode: SamplerMode,
    temperature: torch.Tensor,  # (b,)
    top_k: torch.Tensor,  # (b,)
    top_p: torch.Tensor,  # (b,)
    min_p: torch.Tensor,  # (b,)
    seeds: torch.Tensor,  # (b,) int64
    counters: torch.Tensor,  # (b,) token index within the sequence
) -> torch.Tensor:
    """Next token per row, (b,) int64; no host synchronisation."""
    if mode.all_greedy:
        return logits.argmax(dim=-1)
    if not (mode.top_k or mode.top_p or mode.min_p):  # temperature only: one fused pass over the logits
        return dispatch.gumbel_argmax(logits, temperature, row_keys(seeds, counters))
    greedy_tokens = logits.argmax(dim=-1)
    filtered = filter_logits(
        logits,
        temperature,
        top_k if mode.top_k else None,
        top_p if mode.top_p else None,
        min_p if mode.min_p else None,
    )
    sampled = (filtered + gumbel_noise(seeds, counters, logits.shape[-1])).argmax(dim=-1)
    return torch.where(temperature > 0, sampled, greedy_tokens)
