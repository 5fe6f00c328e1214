"""The GRPO objective (docs/design.md §3.4), as plain functions over per-token tensors.

    A_i      = (r_i - mean_g r) / (std_g r + eps)             group-normalised advantage of rollout i
    ratio_t  = exp(logp_t - old_logp_t)
    obj_t    = min(ratio_t A, clip(ratio_t, 1 - eps_low, 1 + eps_high) A)
    loss     = -sum_t w_t (obj_t + eta H_t - beta KL_t)
with `w_t` the aggregation weights (token_mean: 1 / tokens of the mini-batch; seq_mean:
1 / (sequences x that sequence's tokens)), H_t the policy's entropy at position t and KL_t the k3
estimate exp(ref - logp) - (ref - logp) - 1 of KL(pi || pi_ref) (only when beta > 0).
`std` is the unbiased (n - 1) standard deviation of the G rewards; a group whose rewards are all
equal gets advantage 0 exactly (it carries no signal about which sample is better).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """rewards (groups, G) -> advantages (groups, G), fp32."""
    r = rewards.to(torch.float32)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, unbiased=True)
    adv = (r - mean) / (std + eps)
    same = (r == r[:, :1]).all(dim=1, keepdim=True)
    return torch.where(same, torch.zeros_like(adv), adv)


def aggregation_weights(lengths: list[int], mode: str, total_tokens: float, total_sequences: float,
                        device=None, dtype=torch.float32) -> torch.Tensor:
    """Per-token weights for sequences of `lengths` response tokens (concatenated in order).

    Totals are over the WHOLE mini-batch (all micro-batches, all processes), so summing the
    weighted per-token losses over every micro-batch and process gives the mean.
    """
    n = torch.tensor(lengths, dtype=dtype, device=device)
    if mode == "token_mean":
        per_seq = torch.full_like(n, 1.0 / max(total_tokens, 1.0))
    elif mode == "seq_mean":
        per_seq = 1.0 / (n.clamp(min=1) * max(total_sequences, 1.0))
    else:
        raise ValueError(f"unknown aggregation {mode!r}")
    return torch.repeat_interleave(per_seq, torch.tensor(lengths, device=device))


def clipped_objective(
    logp: torch.Tensor,  # (N,) current policy log-probs of the sampled tokens (differentiable)
    old_logp: torch.Tensor,  # (N,) rollout-time log-probs (constants)
    advantages: torch.Tensor,  # (N,) the rollout's advantage on each of its tokens
    weights: torch.Tensor,  # (N,) aggregation weights
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    entropy: torch.Tensor | None = None,  # (N,) differentiable
    entropy_coef: float = 0.0,
    ref_logp: torch.Tensor | None = None,  # (N,)
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-> (loss, weighted sums of diagnostics: clip_frac, entropy, approx_kl, ratio, kl)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    obj = torch.minimum(unclipped, clipped)
    per_token = -obj
    if entropy is not None and entropy_coef:
        per_token = per_token - entropy_coef * entropy
    kl = None
    if ref_logp is not None and kl_coef:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        per_token = per_token + kl_coef * kl
    loss = (per_token * weights).sum()
    with torch.no_grad():
        w = weights.detach()
        stats = {
            "clip_frac": ((clipped < unclipped).float() * w).sum(),  # the clipped branch is the active one
            "approx_kl": ((old_logp - logp.detach()) * w).sum(),
            "ratio": (ratio.detach() * w).sum(),
        }
        if entropy is not None:
            stats["entropy"] = (entropy.detach() * w).sum()
        if kl is not None:
            stats["kl"] = (kl.detach() * w).sum()
    return loss, stats


def _chunk_logprobs(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, temperature: float = 1.0):
    with torch.autocast(h.device.type, enabled=False):  # fp32 logits even inside bf16 autocast (fp64 stays fp64)
        up = torch.float64 if h.dtype == torch.float64 else torch.float32
        logits = h.to(up) @ weight.to(up).T
        if temperature != 1.0:
            logits = logits / temperature
        logz = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, y[:, None])[:, 0] - logz
        probs = torch.softmax(logits, dim=-1)
        entropy = logz - (probs * logits).sum(-1)
    return logp, entropy


def token_logprobs(hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 1024,
                   temperature: float = 1.0):
    """hidden (N, d), head (V, d), targets (N,) -> (log p(target) (N,), entropy (N,)), fp32, of the
    distribution softmax(logits / temperature) the engine sampled from.

    Chunked over positions; with grad, each chunk is recomputed in backward, so only one chunk's
    (chunk x vocab) logits are ever held.
    """
    logps, ents = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        sl = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled() and (hidden.requires_grad or head.requires_grad):
            lp, ent = checkpoint(_chunk_logprobs, hidden[sl], head, targets[sl], temperature, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(hidden[sl], head, targets[sl], temperature)
        logps.append(lp)
        ents.append(ent)
    if not logps:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(ents)
