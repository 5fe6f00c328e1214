"""Counter-based Gumbel-max sampling: the noise and the temperature-only sampler, in plain PyTorch.

The noise of token v at step t of a sequence is a pure function of (sequence seed, t, v): murmur3's 32-bit
finaliser over a per-(sequence, step) key and a Weyl sequence over the vocabulary.  Sampling is
argmax(logits / T + G) with G = -log(-log(U)), U uniform in (0, 1), which draws from softmax(logits / T).
A sequence's tokens therefore depend only on its own seed and logits, not on its slot or its batch.

`gumbel_argmax_ref` is what `inference.sampling.sample_next` does when no top-k / top-p / min-p filter
is on; the fused kernel (`ops/triton/sampling.py`) computes the same thing in one pass over the logits.
The reference materialises ~20 (b, V) int64 tensors: at batch 512 and Qwen's 151,936-entry
vocabulary that is ~20 GB of memory traffic per decode step.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
WEYL = 0x9E3779B1  # golden-ratio increment over the vocabulary ids


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding values in [0, 2^32)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def row_keys(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """(b,) seeds, (b,) token indices -> (b,) 32-bit keys (int64), one per (sequence, token)."""
    seeds = seeds.to(torch.int64)
    a = _fmix32((seeds ^ (seeds >> 32)) & _MASK32)
    return _fmix32((a + counters.to(torch.int64) * 0x27D4EB2F + 0x165667B1) & _MASK32)


def uniform_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """(b,) keys -> (b, vocab) float32 uniforms in (0, 1), a pure function of (key, vocab id)."""
    ids = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    spread = (ids * WEYL) & _MASK32
    h = _fmix32(keys[:, None] ^ spread[None, :])
    h = _fmix32((h + keys[:, None]) & _MASK32)
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def key_gumbel_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """(b,) keys -> (b, vocab) float32 Gumbel(0, 1) noise."""
    return -torch.log(-torch.log(uniform_noise(keys, vocab)))


def gumbel_noise(seeds: torch.Tensor, counters: torch.Tensor, vocab: int) -> torch.Tensor:
    return key_gumbel_noise(row_keys(seeds, counters), vocab)


def gumbel_argmax_ref(
    logits: torch.Tensor,  # (b, V)
    temperature: torch.Tensor,  # (b,) 0 = greedy row
    keys: torch.Tensor,  # (b,) int64, row_keys(seeds, counters)
) -> torch.Tensor:
    """(b,) int64: argmax(logits / T + Gumbel noise) per row, argmax(logits) where T = 0."""
    x = logits.float() / torch.where(temperature > 0, temperature, 1.0).float()[:, None]
    g = key_gumbel_noise(keys, logits.shape[-1])  # (b, V)
    return torch.where(temperature > 0, (x + g).argmax(dim=-1), logits.argmax(dim=-1))
